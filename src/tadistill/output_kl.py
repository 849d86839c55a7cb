"""The OD losses over a 30k vocabulary in one pass of row blocks: the tempered KL and the hard
MLM cross-entropy, as a custom autograd function with a closed-form backward.

The plain losses (`losses.output_kl` / `losses.masked_lm_cross_entropy`) cast the (N, V)
logits to fp32 and keep fp32 softmaxes and log-softmaxes for backward: with positions "all"
at 32 x 128 tokens that is N ~ 3,000 rows of V = 30,522, 370 MB per fp32 tensor, several of
them, so the loss is bound by memory traffic. Here the logits stay as they come (bf16 under
autocast), each block of rows is cast to fp32 while it is in cache, and backward recomputes
the block's softmaxes to form the gradient in closed form:

    d/ds [T^2 KL(softmax(t/T) || softmax(s/T))] = T (softmax(s/T) - softmax(t/T))
    d/ds [CE(softmax(s), y)]                    = softmax(s) - onehot(y)

Both losses are means over their rows (the KL over every row, the cross-entropy over rows
whose label is not -100); the teacher is frozen (no gradient flows to it).
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


def _tempered(x: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    """x / T, for a softmax that casts to `dtype` itself: dividing by a power of two is exact in
    any float format, so then the block is scaled as it comes (one pass, no fp32 copy)."""
    if temperature == 1:
        return x
    if math.frexp(temperature)[0] == 0.5:
        return x * (1 / temperature)
    return x.to(dtype) / temperature


class _OutputLosses(torch.autograd.Function):
    """(student logits (N, V), teacher logits (N, V), labels (N,) or None) -> (T^2 KL, CE)."""

    @staticmethod
    def forward(ctx, student, teacher, labels, temperature):
        ctx.save_for_backward(student, teacher, labels if labels is not None else student.new_empty(0))
        ctx.temperature, ctx.has_labels = temperature, labels is not None
        rows, vocab = student.shape
        ctx.dtype = dtype = torch.promote_types(student.dtype, torch.float32)  # bf16 blocks computed in fp32
        kl_sum = student.new_zeros((), dtype=dtype)
        ce_sum = student.new_zeros((), dtype=dtype)
        for block in _row_blocks(rows, vocab, student.device):
            s, t = student[block], teacher[block]  # (b, V)
            log_p = torch.log_softmax(_tempered(t, temperature, dtype), -1, dtype=dtype)
            log_q = torch.log_softmax(_tempered(s, temperature, dtype), -1, dtype=dtype)
            p = log_p.exp()
            kl_sum += torch.dot(p.view(-1), log_p.sub_(log_q).view(-1))  # sum of p (log p - log q)
            if labels is not None:
                picked = labels[block]  # (b,)
                log_q1 = log_q if temperature == 1 else torch.log_softmax(s, -1, dtype=dtype)
                nll = -log_q1.gather(1, picked.clamp(min=0)[:, None]).squeeze(1)  # (b,)
                ce_sum += torch.where(picked != IGNORE_INDEX, nll, 0.0).sum()
        ctx.counts = kl_rows, ce_rows = _counts(rows, labels)
        return temperature**2 * kl_sum / kl_rows, ce_sum / ce_rows

    @staticmethod
    def backward(ctx, grad_kl, grad_ce):
        student, teacher, labels = ctx.saved_tensors
        temperature, dtype, (kl_rows, ce_rows) = ctx.temperature, ctx.dtype, ctx.counts
        grad = torch.empty_like(student)
        kl_scale = grad_kl * temperature / kl_rows
        ce_scale = grad_ce / ce_rows
        for block in _row_blocks(*student.shape, student.device):
            s, t = student[block], teacher[block]  # (b, V)
            g = torch.softmax(_tempered(s, temperature, dtype), -1, dtype=dtype)
            g.sub_(torch.softmax(_tempered(t, temperature, dtype), -1, dtype=dtype)).mul_(kl_scale)
            if ctx.has_labels:
                picked = labels[block]
                probs = torch.softmax(s, -1, dtype=dtype)  # softmax(s) - onehot(y)
                probs.scatter_add_(1, picked.clamp(min=0)[:, None], probs.new_full((len(picked), 1), -1.0))
                g.addcmul_(probs, (picked != IGNORE_INDEX)[:, None] * ce_scale)
            grad[block] = g  # cast to the logits' dtype
        return grad, None, None, None


def _counts(rows: int, labels: Tensor | None) -> tuple[int, Tensor | int]:
    """Rows averaged over by the KL and by the cross-entropy, at least 1 (an empty batch gives 0);
    the labelled count stays a tensor, so that a GPU is not synchronised for it."""
    labelled = (labels != IGNORE_INDEX).sum().clamp(min=1) if labels is not None else 1
    return max(rows, 1), labelled


def output_losses(student: Tensor, teacher: Tensor, labels: Tensor | None, temperature: float) -> tuple[Tensor, Tensor]:
    """T^2 * mean KL(softmax(teacher/T) || softmax(student/T)) over rows, and the mean cross-entropy
    of `student` on `labels` over rows labelled (not -100); 0 where `labels` is None."""
    if teacher.requires_grad:
        raise ValueError("the fused output losses take a frozen teacher")
    with torch.autocast(student.device.type, enabled=False):  # the blocks choose their precision
        return _OutputLosses.apply(student, teacher, labels, temperature)
