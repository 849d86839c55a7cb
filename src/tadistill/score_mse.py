"""TinyBERT's attention-score MSE on a CPU: one sequence at a time, cut to its real tokens, as a
custom autograd function with a closed-form backward.

The plain loss (`losses.attention_score_mse`) writes the (B, A, n, n) score difference D of
the whole batch and keeps it, its square and the pair mask for backward. Here each sequence's
D (A, L, L) for its L real tokens stays in cache, forward keeps nothing but the loss, and
backward recomputes D to form

    dL/dQ_S = c G K_S,   dL/dK_S = G^T (c Q_S),   G = 2 D / (A * valid pairs),  c = 1 / sqrt(d_S),

with D = [c Q_S, -Q_T / sqrt(d_T)] [K_S, K_T]^T, the difference of both scores as one
product. The teacher is frozen (no gradient flows to it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _heads(x: Tensor, heads: int) -> Tensor:
    batch, tokens, width = x.shape
    return x.view(batch, tokens, heads, width // heads).transpose(1, 2)  # (B, A, n, d_r)


def _merge(x: Tensor) -> Tensor:
    batch, heads, tokens, width = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * width)  # (B, n, A * d_r)


def _real_tokens(attention_mask: Tensor) -> list[Tensor | slice]:
    """Per sequence, its real tokens: a slice when they come first (right padding), else indices."""
    lengths = attention_mask.sum(1).tolist()
    leading = attention_mask.long().cumsum(1).eq(torch.arange(1, attention_mask.shape[1] + 1)).sum(1).tolist()
    return [slice(0, length) if leading[b] == length else attention_mask[b].nonzero().squeeze(1)
            for b, length in enumerate(lengths)]


class _ScoreMSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_query, student_key, teacher_query, teacher_key, heads, tokens, denominator):
        ctx.save_for_backward(student_query, student_key, teacher_query, teacher_key)
        ctx.heads, ctx.tokens, ctx.denominator = heads, tokens, denominator
        total = student_query.new_zeros(())
        for b, real in enumerate(tokens):
            difference = _difference(student_query, student_key, teacher_query, teacher_key, heads, b, real)
            total = total + torch.dot(difference.view(-1), difference.view(-1))
        return total / denominator

    @staticmethod
    def backward(ctx, grad_output):
        student_query, student_key, teacher_query, teacher_key = ctx.saved_tensors
        heads = ctx.heads
        grad_query, grad_key = torch.zeros_like(student_query), torch.zeros_like(student_key)
        query_heads, key_heads = _heads(student_query, heads), _heads(student_key, heads)  # (B, A, n, d_S)
        grad_query_heads, grad_key_heads = _heads(grad_query, heads), _heads(grad_key, heads)  # views
        scale = 1 / math.sqrt(query_heads.shape[-1])
        for b, real in enumerate(ctx.tokens):
            difference = _difference(student_query, student_key, teacher_query, teacher_key, heads, b, real)
            g = difference.mul_(2 * grad_output / ctx.denominator)  # (A, L, L), dL/dD
            grad_query_heads[b, :, real] = (g @ key_heads[b, :, real]).mul_(scale)  # (A, L, d_S)
            grad_key_heads[b, :, real] = g.transpose(-1, -2) @ (query_heads[b, :, real] * scale)
        return grad_query, grad_key, None, None, None, None, None


def _difference(student_query, student_key, teacher_query, teacher_key, heads, b, real) -> Tensor:
    """S_S - S_T of sequence b on its real tokens, (A, L, L), as one product."""
    queries = [_heads(x[b : b + 1], heads)[0][:, real] for x in (student_query, teacher_query)]  # (A, L, d_r)
    keys = [_heads(x[b : b + 1], heads)[0][:, real] for x in (student_key, teacher_key)]
    scales = (1 / math.sqrt(queries[0].shape[-1]), -1 / math.sqrt(queries[1].shape[-1]))
    left = torch.cat([q * scale for q, scale in zip(queries, scales)], -1)  # (A, L, d_S + d_T)
    return left @ torch.cat(keys, -1).transpose(-1, -2)


def blocked_score_mse(student_query: Tensor, student_key: Tensor, teacher_query: Tensor, teacher_key: Tensor,
                      attention_mask: Tensor, heads: int) -> Tensor:
    """The loss of `losses.attention_score_mse` (fp32 (B, n, d) inputs), a sequence at a time."""
    if teacher_query.requires_grad or teacher_key.requires_grad:
        raise ValueError("the blocked score MSE takes a frozen teacher")
    lengths = attention_mask.sum(1)
    denominator = heads * max(int(lengths.pow(2).sum()), 1)  # heads x valid (query, key) pairs
    tokens = _real_tokens(attention_mask.bool())
    return _ScoreMSE.apply(student_query, student_key, teacher_query, teacher_key, heads, tokens, denominator)
