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

import torch
from torch import Tensor

IGNORE_INDEX = -100
# one block's fp32 rows: on a CPU a few such blocks fit in its L3 cache; on a GPU a block is
# large enough to be a few big kernels rather than many small launches
BLOCK_BYTES = {"cpu": 2**22, "cuda": 2**28}


def _row_blocks(rows: int, vocab: int, device: torch.device):
    size = max(1, BLOCK_BYTES.get(device.type, BLOCK_BYTES["cuda"]) // (vocab * 4))
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def _log_softmax(x: Tensor) -> Tensor:
    return torch.log_softmax(x, dim=-1)


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
            s, t = student[block].to(dtype), teacher[block].to(dtype)  # (b, V)
            log_p = _log_softmax(t / temperature)
            log_q = _log_softmax(s / temperature)
            kl_sum += (log_p.exp() * (log_p - log_q)).sum()
            if labels is not None:
                picked = labels[block]  # (b,)
                valid = picked != IGNORE_INDEX
                log_q1 = log_q if temperature == 1 else _log_softmax(s)
                nll = -log_q1.gather(1, picked.clamp(min=0)[:, None]).squeeze(1)  # (b,)
                ce_sum += torch.where(valid, nll, 0.0).sum()
        ctx.counts = kl_rows, ce_rows = _counts(rows, labels)
        return temperature**2 * kl_sum / kl_rows, ce_sum / ce_rows

    @staticmethod
    def backward(ctx, grad_kl, grad_ce):
        student, teacher, labels = ctx.saved_tensors
        temperature, (kl_rows, ce_rows) = ctx.temperature, ctx.counts
        grad = torch.empty_like(student)
        kl_scale = grad_kl * temperature / kl_rows
        ce_scale = grad_ce / ce_rows
        for block in _row_blocks(*student.shape, student.device):
            s, t = student[block].to(ctx.dtype), teacher[block].to(ctx.dtype)  # (b, V)
            g = torch.softmax(s / temperature, dim=-1).sub_(torch.softmax(t / temperature, dim=-1)).mul_(kl_scale)
            if ctx.has_labels:
                picked = labels[block]
                valid = (picked != IGNORE_INDEX)[:, None]  # (b, 1)
                probs = torch.softmax(s, dim=-1)
                probs.scatter_add_(1, picked.clamp(min=0)[:, None], probs.new_full((len(picked), 1), -1.0))
                g.add_(probs.mul_(valid * ce_scale))
            grad[block] = g.to(grad.dtype)
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
