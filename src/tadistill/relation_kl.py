"""MiniLMv2's relation KL without its (B, A_r, n, n) tensors: a custom autograd function that
works on a few sequences at a time and recomputes in backward what it would otherwise store.

The plain loss (`losses.attention_relation_kl(kernel="reference")`) builds the student and
teacher scores, both softmaxes and both log-softmaxes for the whole batch and keeps them
for backward: six (B, A_r, n, n) fp32 tensors, 100 MB each at 32 x 48 heads x 128 tokens,
so the step is bound by memory traffic, not arithmetic. Here forward keeps only the loss
and backward recomputes each chunk's scores (two small matmuls) to form the gradient of
the student scores in closed form,

    dL/dS_student[b, h, q, k] = w[b, q] * (softmax(S_student) - softmax(S_teacher))[b, h, q, k],

with w[b, q] = 1 / (A_r * valid queries) on valid queries and 0 on padding, then maps it
to the student's X and Y (S = X Y^T / sqrt(d_r)). Each chunk's temporaries stay a few MB.
The teacher is frozen (no gradient flows to it); the function refuses teacher tensors that
require grad.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CHUNK_BYTES = 8 * 2**20  # one chunk's (b, A_r, n, n) fp32 tensor: a few MB, cache-friendly


def _heads(x: Tensor, heads: int) -> Tensor:
    batch, tokens, width = x.shape
    return x.view(batch, tokens, heads, width // heads).transpose(1, 2)  # (b, A, n, d_r)


def _merge(x: Tensor) -> Tensor:
    batch, heads, tokens, width = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * width)  # (b, n, A * d_r)


def _chunks(batch: int, heads: int, tokens: int):
    size = max(1, CHUNK_BYTES // (heads * tokens * tokens * 4))
    return [slice(start, min(start + size, batch)) for start in range(0, batch, size)]


def _scores(left: Tensor, right: Tensor, bias: Tensor) -> Tensor:
    """left right^T / sqrt(d_r) + padding bias: (b, A, n, d_r) x2 -> (b, A, n, n)."""
    return torch.baddbmm(
        bias.expand(left.shape[0], left.shape[1], left.shape[2], right.shape[2]).reshape(-1, left.shape[2], right.shape[2]),
        left.reshape(-1, *left.shape[2:]),  # (b * A, n, d_r)
        right.reshape(-1, *right.shape[2:]).transpose(1, 2),
        alpha=1 / math.sqrt(left.shape[-1]),
    ).view(left.shape[0], left.shape[1], left.shape[2], right.shape[2])


def _loss(student_left, student_right, teacher_left, teacher_right, query_weight, padding_bias, heads) -> Tensor:
    total = student_left.new_zeros(())
    batch, tokens, _ = student_left.shape
    for part in _chunks(batch, heads, tokens):
        s = _scores(_heads(student_left[part], heads), _heads(student_right[part], heads), padding_bias[part])
        t = _scores(_heads(teacher_left[part], heads), _heads(teacher_right[part], heads), padding_bias[part])
        log_t = torch.log_softmax(t, dim=-1)  # (b, A, n, n)
        kl = (log_t.exp() * (log_t - torch.log_softmax(s, dim=-1))).sum(-1)  # (b, A, n)
        total = total + (kl.sum(1) * query_weight[part]).sum()
    return total


def _grads(student_left, student_right, teacher_left, teacher_right, query_weight, padding_bias, heads, grad_output,
           self_relation: bool) -> tuple[Tensor, Tensor | None]:
    """Gradients of the loss for the student's X and Y (one, summed, for X X^T)."""
    grad_left = torch.zeros_like(student_left)
    grad_right = grad_left if self_relation else torch.zeros_like(student_right)
    batch, tokens, width = student_left.shape
    scale = 1 / math.sqrt(width // heads)
    for part in _chunks(batch, heads, tokens):
        left, right = _heads(student_left[part], heads), _heads(student_right[part], heads)  # (b, A, n, d_r)
        s = _scores(left, right, padding_bias[part])
        t = _scores(_heads(teacher_left[part], heads), _heads(teacher_right[part], heads), padding_bias[part])
        weight = (grad_output * query_weight[part])[:, None, :, None] * scale  # (b, 1, n, 1)
        grad_scores = (torch.softmax(s, dim=-1) - torch.softmax(t, dim=-1)).mul_(weight)  # (b, A, n, n)
        grad_left[part] += _merge(grad_scores @ right)  # (b, n, A * d_r)
        grad_right[part] += _merge(grad_scores.transpose(-1, -2) @ left)
    return grad_left, None if self_relation else grad_right


class _RelationKL(torch.autograd.Function):
    """Student X Y^T against teacher X' Y'^T (cross relations, e.g. Q-K)."""

    @staticmethod
    def forward(ctx, student_left, student_right, teacher_left, teacher_right, query_weight, padding_bias, heads):
        ctx.save_for_backward(student_left, student_right, teacher_left, teacher_right, query_weight, padding_bias)
        ctx.heads = heads
        return _loss(student_left, student_right, teacher_left, teacher_right, query_weight, padding_bias, heads)

    @staticmethod
    def backward(ctx, grad_output):
        sl, sr, tl, tr, weight, bias = ctx.saved_tensors
        grad_left, grad_right = _grads(sl, sr, tl, tr, weight, bias, ctx.heads, grad_output, self_relation=False)
        return grad_left, grad_right, None, None, None, None, None


class _SelfRelationKL(torch.autograd.Function):
    """Student X X^T (one input, so autograd hands back one gradient)."""

    @staticmethod
    def forward(ctx, student, teacher_left, teacher_right, query_weight, padding_bias, heads):
        ctx.save_for_backward(student, teacher_left, teacher_right, query_weight, padding_bias)
        ctx.heads = heads
        return _loss(student, student, teacher_left, teacher_right, query_weight, padding_bias, heads)

    @staticmethod
    def backward(ctx, grad_output):
        x, tl, tr, weight, bias = ctx.saved_tensors
        grad, _ = _grads(x, x, tl, tr, weight, bias, ctx.heads, grad_output, self_relation=True)
        return grad, None, None, None, None, None


def blocked_relation_kl(student: tuple[Tensor, Tensor], teacher: tuple[Tensor, Tensor], key_mask: Tensor,
                        padding_bias: Tensor, heads: int) -> Tensor:
    """The relation KL of `losses.attention_relation_kl`, summed over keys, averaged over heads
    and valid queries; fp32 inputs. `key_mask` (B, n) bool, `padding_bias` (B, 1, 1, n)."""
    if any(t.requires_grad for t in teacher):
        raise ValueError("the blocked relation KL takes a frozen teacher; use kernel='reference'")
    query_weight = key_mask.float() / (key_mask.sum().clamp(min=1) * heads)  # (B, n)
    (left, right), (teacher_left, teacher_right) = student, teacher
    if left is right:
        return _SelfRelationKL.apply(left, teacher_left, teacher_right, query_weight, padding_bias, heads)
    return _RelationKL.apply(left, right, teacher_left, teacher_right, query_weight, padding_bias, heads)
