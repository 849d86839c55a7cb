"""TinyBERT's attention-score MSE without autograd's bookkeeping: custom autograd functions with
a closed-form backward, the same loss as `losses.attention_score_mse` (kernel "reference").

Both work on the score difference D = [c Q_S, -Q_T / sqrt(d_T)] [K_S, K_T]^T, the difference of
both scores as one product (c = 1 / sqrt(d_S)), and form

    dL/dQ_S = c G K_S,   dL/dK_S = G^T (c Q_S),   G = 2 D / (A * valid pairs),

where autograd would also multiply through the teacher's half of the product and keep D, its
square and the pair mask. The teacher is frozen (no gradient flows to it).

- "fused": the whole batch at once; D (B, A, n, n) is computed in the inputs' dtype (bf16 under
  autocast, as the models compute their own scores, fp32 otherwise), masked and kept for
  backward; its squares are summed in fp32. Backward multiplies through the student's half only
  (d_S wide, where autograd's products are d_S + d_T wide).
- "blocked": one sequence at a time on its L real tokens, D (A, L, L) staying in cache; forward
  keeps nothing but the loss and backward recomputes D. The least memory; on CPU its many small
  products are slower than one big one.

`tapped_score_mse` ("scores") takes the scores themselves, (B, A, n, n) `scores` taps
(`tadistill.taps`): on the `matmul` attention kernel the models hand over the scores they
compute anyway, so the loss forms no product at all, and its gradient joins the student's own
score gradient before the attention's Q K^T backward, which runs once for both. The price is
memory: each mapped layer's (B, A, n, n) scores stay alive until the loss has run (the Q/K
they replace are (B, n, 2 d), the same at 12 heads x 128 tokens x 768, smaller at longer n).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


def _heads(x: Tensor, heads: int) -> Tensor:
    batch, tokens, width = x.shape
    return x.view(batch, tokens, heads, width // heads).transpose(1, 2)  # (B, A, n, d_r)


def _merge(x: Tensor) -> Tensor:
    batch, heads, tokens, width = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * width)  # (B, n, A * d_r)


def _batch_difference(student_query, student_key, teacher_query, teacher_key, heads) -> Tensor:
    """S_S - S_T of the whole batch, (B, A, n, n), as one product."""
    queries = [_heads(x, heads) for x in (student_query, teacher_query)]  # (B, A, n, d_r)
    keys = [_heads(x, heads) for x in (student_key, teacher_key)]
    scales = (1 / math.sqrt(queries[0].shape[-1]), -1 / math.sqrt(queries[1].shape[-1]))
    left = torch.cat([q * scale for q, scale in zip(queries, scales)], -1)  # (B, A, n, d_S + d_T)
    return left @ torch.cat(keys, -1).transpose(-1, -2)


class _FusedScoreMSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_query, student_key, teacher_query, teacher_key, token_mask, heads, denominator):
        difference = _batch_difference(student_query, student_key, teacher_query, teacher_key, heads)
        real = token_mask.to(difference.dtype)
        difference.mul_(real[:, None, :, None]).mul_(real[:, None, None, :])  # padding pairs out
        ctx.save_for_backward(student_query, student_key, difference)
        ctx.heads, ctx.denominator = heads, denominator
        rows = difference.flatten(0, 1).flatten(1).float()  # (B * A, n * n), summed in fp32
        return torch.linalg.vecdot(rows, rows).sum() / denominator

    @staticmethod
    def backward(ctx, grad_output):
        student_query, student_key, difference = ctx.saved_tensors
        key_heads, query_heads = _heads(student_key, ctx.heads), _heads(student_query, ctx.heads)  # (B, A, n, d_S)
        # c dL/dD = c 2 D / denominator; the scalar goes on the (B, A, n, d_S) products, not on D
        # scaled in fp32, rounded once: in fp16 the scalar alone can underflow (~1e-7 at 32 x 128)
        scale = 2 * grad_output.float() / (ctx.denominator * math.sqrt(query_heads.shape[-1]))
        grad_query = _merge((difference @ key_heads).float().mul_(scale).to(difference.dtype))
        grad_key = _merge((difference.transpose(-1, -2) @ query_heads).float().mul_(scale).to(difference.dtype))
        return grad_query, grad_key, None, None, None, None, None


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
    """S_S - S_T of sequence b on its real tokens, (A, L, L)."""
    return _batch_difference(*(x[b : b + 1, real] for x in (student_query, student_key, teacher_query, teacher_key)),
                             heads)[0]


def _denominator(attention_mask: Tensor, heads: int) -> int:
    """Heads x valid (query, key) pairs, at least 1 (a fully masked batch gives 0)."""
    return heads * max(int(attention_mask.sum(1).pow(2).sum()), 1)


def fused_score_mse(student_query: Tensor, student_key: Tensor, teacher_query: Tensor, teacher_key: Tensor,
                    attention_mask: Tensor, heads: int) -> Tensor:
    """The loss of `losses.attention_score_mse`, the whole batch at once in the inputs' dtype."""
    if teacher_query.requires_grad or teacher_key.requires_grad:
        raise ValueError("the fused score MSE takes a frozen teacher")
    inputs = (student_query, student_key, teacher_query, teacher_key)
    dtype = functools.reduce(torch.promote_types, (x.dtype for x in inputs))
    with torch.autocast(student_query.device.type, enabled=False):  # the products keep the taps' dtype
        inputs = [x.to(dtype) for x in inputs]
        return _FusedScoreMSE.apply(*inputs, attention_mask.bool(), heads, _denominator(attention_mask, heads))


def blocked_score_mse(student_query: Tensor, student_key: Tensor, teacher_query: Tensor, teacher_key: Tensor,
                      attention_mask: Tensor, heads: int) -> Tensor:
    """The loss of `losses.attention_score_mse` (fp32 (B, n, d) inputs), a sequence at a time."""
    if teacher_query.requires_grad or teacher_key.requires_grad:
        raise ValueError("the blocked score MSE takes a frozen teacher")
    tokens = _real_tokens(attention_mask.bool())
    denominator = _denominator(attention_mask, heads)
    return _ScoreMSE.apply(student_query, student_key, teacher_query, teacher_key, heads, tokens, denominator)


class _TappedScoreMSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_scores, teacher_scores, token_mask, denominator):
        difference = student_scores.to(torch.float32, copy=True).sub_(teacher_scores)  # (B, A, n, n), fp32
        real = token_mask.to(difference.dtype)
        difference.mul_(real[:, None, :, None]).mul_(real[:, None, None, :])  # padding pairs out
        flat = difference.view(-1)
        loss = torch.dot(flat, flat) / denominator
        ctx.denominator = denominator
        # D in the scores' dtype; dL/dS_S = 2 D / denominator is scaled in backward, in fp32: in
        # fp16 2 / denominator (~3e-7 at 32 x 128) underflows, and a GradScaler's 2^16 overflows
        ctx.save_for_backward(difference.to(student_scores.dtype))
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (difference,) = ctx.saved_tensors
        scale = 2 * grad_output.float() / ctx.denominator
        return difference.float().mul_(scale).to(difference.dtype), None, None, None


def tapped_score_mse(student_scores: Tensor, teacher_scores: Tensor, attention_mask: Tensor) -> Tensor:
    """The loss of `losses.attention_score_mse` from the scores, (B, A, n, n) each, of the models'
    own heads: the mean over heads and real (query, key) pairs of (S_S - S_T)^2, in fp32."""
    if teacher_scores.requires_grad:
        raise ValueError("the tapped score MSE takes a frozen teacher")
    heads = student_scores.shape[1]
    with torch.autocast(student_scores.device.type, enabled=False):
        return _TappedScoreMSE.apply(student_scores, teacher_scores, attention_mask.bool(),
                                     _denominator(attention_mask, heads))
