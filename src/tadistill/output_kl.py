"""The OD losses over a 30k vocabulary in one pass of row blocks: the tempered KL and the hard
MLM cross-entropy, as a custom autograd function that forms its gradient while it computes
the loss.

The plain losses (`losses.output_kl` / `losses.masked_lm_cross_entropy`) cast the (N, V)
logits to fp32 and keep fp32 softmaxes and log-softmaxes for backward: with positions "all"
at 32 x 128 tokens that is N ~ 3,000 rows of V = 30,522, 370 MB per fp32 tensor, several of
them, so the loss is bound by memory traffic. Here each block of rows is cast to fp32 while it
is in cache, and both softmaxes of a block are computed once: the loss and the gradient are
closed forms of them,

    T^2 KL(p || q) = T^2 (sum_v p_v (t_v - s_v) / T - lse(t / T) + lse(s / T)),  p, q = softmax(t/T), softmax(s/T)
    d/ds [T^2 KL]  = T (q - p)
    d/ds [CE(softmax(s), y)] = softmax(s) - onehot(y)

with lse(x) = max(x) - log max(softmax(x)) read off the softmax itself. The KL's gradient is
kept in the logits' dtype (for bf16 logits it is rounded once more when backward scales it,
a relative 2^-8 at most), the cross-entropy's in fp32, instead of the student's and the
teacher's logits, and backward only scales and adds them: recomputing the softmaxes would
cost as much again (their exponentials are most of the loss's time on a CPU). The
cross-entropy is computed on the labelled rows only (15% of the rows under MLM masking);
finding them synchronises a GPU once. Both losses are means over
their rows (the KL over every row, the cross-entropy over rows whose label is not -100); the
teacher is frozen. Without grad mode no gradient is formed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

IGNORE_INDEX = -100
# one block's fp32 rows: on a CPU a few such blocks fit in its L3 cache; on a GPU a block is
# large enough to be a few big kernels rather than many small launches
BLOCK_BYTES = {"cpu": 2**22, "cuda": 2**28}


def _row_blocks(rows: int, vocab: int, device: torch.device):
    size = max(1, BLOCK_BYTES.get(device.type, BLOCK_BYTES["cuda"]) // (vocab * 4))
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def _tempered_copy(x: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    """A fresh `dtype` copy of x / T (the caller changes it in place)."""
    x = x.to(dtype, copy=True)
    if temperature == 1:
        return x
    # dividing by a power of two is exact; multiplying by its inverse is the faster kernel
    return x.mul_(1 / temperature) if math.frexp(temperature)[0] == 0.5 else x.div_(temperature)


def _softmax_and_lse(x: Tensor) -> tuple[Tensor, Tensor]:
    """softmax(x) over the last dim and log-sum-exp(x), (b, V) -> (b, V), (b,): the softmax's
    largest value is exp(max x - lse) (at least 1 / V), so lse = max x - log of it."""
    probs = torch.softmax(x, -1)
    return probs, x.amax(-1) - probs.amax(-1).log()


class _OutputLosses(torch.autograd.Function):
    """(student logits (N, V), teacher logits (N, V), labels (N,) or None, T, with_grad) -> (T^2 KL, CE)."""

    @staticmethod
    def forward(ctx, student, teacher, labels, temperature, with_grad):
        rows, vocab = student.shape
        dtype = torch.promote_types(student.dtype, torch.float32)  # bf16 blocks computed in fp32
        kl_rows = max(rows, 1)
        kl_grad = torch.empty_like(student) if with_grad else student.new_empty(0)
        kl_sum = student.new_zeros((), dtype=dtype)
        for block in _row_blocks(rows, vocab, student.device):
            t = _tempered_copy(teacher[block], temperature, dtype)  # (b, V)
            s = _tempered_copy(student[block], temperature, dtype)  # (b, V)
            p, lse_t = _softmax_and_lse(t)
            q, lse_s = _softmax_and_lse(s)
            cross = t.sub_(s).mul_(p).sum(-1)  # (b,): sum_v p_v (t_v - s_v) / T
            kl_sum += (cross - lse_t + lse_s).sum()
            if with_grad:
                kl_grad[block] = q.sub_(p).mul_(temperature / kl_rows)  # cast to the logits' dtype

        no_labels = torch.zeros(0, dtype=torch.long, device=student.device)
        labelled = (labels != IGNORE_INDEX).nonzero().squeeze(1) if labels is not None else no_labels  # (M,)
        ce_rows = max(len(labelled), 1)
        # fp32 (M x V is 15% of the rows): backward adds it to the KL's in fp32 and rounds once
        ce_grad = student.new_empty((len(labelled), vocab) if with_grad else (0, vocab), dtype=dtype)
        ce_sum = student.new_zeros((), dtype=dtype)
        for block in _row_blocks(len(labelled), vocab, student.device):
            picked = labelled[block]  # (b,) row indices
            targets = labels[picked][:, None]  # (b, 1)
            log_q = torch.log_softmax(student[picked].to(dtype), -1)  # (b, V)
            ce_sum -= log_q.gather(1, targets).sum()
            if with_grad:
                probs = log_q.exp_()
                probs.scatter_add_(1, targets, probs.new_full(targets.shape, -1.0))  # softmax(s) - onehot(y)
                ce_grad[block] = probs.mul_(1 / ce_rows)
        ctx.save_for_backward(kl_grad, ce_grad, labelled)
        return temperature**2 * kl_sum / kl_rows, ce_sum / ce_rows

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_kl, grad_ce):
        kl_grad, ce_grad, labelled = ctx.saved_tensors
        grad = kl_grad * grad_kl  # (N, V), in the logits' dtype
        if len(labelled):
            both = torch.addcmul(kl_grad[labelled].to(ce_grad.dtype) * grad_kl, ce_grad, grad_ce)  # (M, V)
            grad[labelled] = both.to(grad.dtype)
        return grad, None, None, None, None


def output_losses(student: Tensor, teacher: Tensor, labels: Tensor | None, temperature: float) -> tuple[Tensor, Tensor]:
    """T^2 * mean KL(softmax(teacher/T) || softmax(student/T)) over rows, and the mean cross-entropy
    of `student` on `labels` over rows labelled (not -100); 0 where `labels` is None."""
    if teacher.requires_grad:
        raise ValueError("the fused output losses take a frozen teacher")
    with_grad = torch.is_grad_enabled() and student.requires_grad
    with torch.autocast(student.device.type, enabled=False):  # the blocks choose their precision
        return _OutputLosses.apply(student, teacher, labels, temperature, with_grad)
