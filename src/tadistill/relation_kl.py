"""MiniLMv2's relation KL without its (B, A_r, n, n) tensors: a custom autograd function that
works on blocks of sequences or queries (sized per device, `CHUNK_BYTES`) and recomputes in
backward what it would otherwise store.

The plain loss (`losses.attention_relation_kl(kernel="reference")`) builds the student and
teacher scores, both softmaxes and both log-softmaxes for the whole batch and keeps them
for backward: six (B, A_r, n, n) fp32 tensors, 100 MB each at 32 x 48 heads x 128 tokens,
so the step is bound by memory traffic, not arithmetic. Here forward keeps only the loss
and backward recomputes each chunk's scores (two small matmuls) to form the gradient of
the student scores in closed form,

    dL/dS_student[b, h, q, k] = w[b, q] * (softmax(S_student) - softmax(S_teacher))[b, h, q, k],

with w[b, q] = 1 / (A_r * valid queries) on valid queries and 0 on padding, then maps it
to the student's X and Y (S = X Y^T / sqrt(d_r)). Each block's temporaries stay near
`CHUNK_BYTES`.
The teacher is frozen (no gradient flows to it); the function refuses teacher tensors that
require grad.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# one block's (b, A_r, q, n) fp32 scores: on a CPU about one sequence (3 MB at 48 heads x 128
# tokens), which stays in its L3 cache while few enough ops run per block; on a GPU large enough
# that a block is a few big kernels rather than thousands of small launches
CHUNK_BYTES = {"cpu": 2**22, "cuda": 2**28}


def _heads(x: Tensor, heads: int) -> Tensor:
    batch, tokens, width = x.shape
    return x.view(batch, tokens, heads, width // heads).transpose(1, 2).contiguous()  # (B, A, n, d_r)


def _merge(x: Tensor) -> Tensor:
    batch, heads, tokens, width = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * width)  # (B, n, A * d_r)


def _blocks(key_mask: Tensor, heads: int) -> list[tuple[slice, slice, slice, bool]]:
    """(sequences, queries, keys, biased) covering every valid query, each block's scores about
    CHUNK_BYTES. On a GPU, blocks of whole padded sequences, padding keys masked by the bias. On
    a CPU, one sequence at a time cut to its real tokens when they come first (right padding,
    the usual case): padding is then neither computed nor masked; other masks keep the bias."""
    batch, tokens = key_mask.shape
    chunk = CHUNK_BYTES.get(key_mask.device.type, CHUNK_BYTES["cuda"])
    if key_mask.device.type != "cpu":
        per_sequence = heads * tokens * tokens * 4
        if per_sequence <= chunk:
            size = chunk // per_sequence
            return [(slice(b, min(b + size, batch)), slice(0, tokens), slice(0, tokens), True)
                    for b in range(0, batch, size)]
        spans = [(b, tokens, True) for b in range(batch)]
    else:
        lengths = key_mask.sum(1).tolist()
        first_real = key_mask.long().cumsum(1).eq(torch.arange(1, tokens + 1)).sum(1).tolist()  # leading real tokens
        spans = [(b, length, False) if first_real[b] == length else (b, tokens, True)
                 for b, length in enumerate(lengths) if length]
    blocks = []
    for b, length, biased in spans:
        queries = max(1, chunk // (heads * length * 4))
        blocks += [(slice(b, b + 1), slice(q, min(q + queries, length)), slice(0, length), biased)
                   for q in range(0, length, queries)]
    return blocks


def _pair_heads(left: Tensor, right: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """Both sides split into heads; one split when they are the same tensor (an X X^T relation)."""
    split = _heads(left, heads)
    same = left.data_ptr() == right.data_ptr() and left.shape == right.shape and left.stride() == right.stride()
    return split, split if same else _heads(right, heads)


def _scores(left: Tensor, right: Tensor, bias: Tensor | None) -> Tensor:
    """left right^T / sqrt(d_r) (+ padding bias): (b, A, q, d_r), (b, A, k, d_r) -> (b, A, q, k)."""
    # scaling the (q, d_r) operand rather than the (q, k) product saves a pass over the scores
    scores = (left * (1 / math.sqrt(left.shape[-1]))).matmul(right.transpose(-1, -2))
    return scores if bias is None else scores.add_(bias)


def _block_scores(student_left, student_right, teacher_left, teacher_right, padding_bias, block):
    """The student's and the teacher's scores of one block, (b, A, q, k) each."""
    part, queries, keys, biased = block
    bias = padding_bias[part, ..., keys] if biased else None
    return (
        _scores(student_left[part, :, queries], student_right[part, :, keys], bias),
        _scores(teacher_left[part, :, queries], teacher_right[part, :, keys], bias),
    )


def _loss(student_left, student_right, teacher_left, teacher_right, query_weight, padding_bias, blocks) -> Tensor:
    """Inputs split into heads, (B, A, n, d_r) each."""
    total = student_left.new_zeros(())
    for block in blocks:
        s, t = _block_scores(student_left, student_right, teacher_left, teacher_right, padding_bias, block)
        # p_T from softmax, not exp(log p_T): exp of the padding keys' -3.4e38 takes a slow path
        # on CPUs (several times the whole softmax), the softmax kernel does not
        difference = torch.log_softmax(t, dim=-1).sub_(torch.log_softmax(s, dim=-1))  # log p_T - log p_S
        kl = torch.einsum("bhqk,bhqk->bhq", torch.softmax(t, dim=-1), difference)  # sum over keys
        part, queries, _, _ = block
        total = total + (kl.sum(1) * query_weight[part, queries]).sum()
    return total


def _grads(student_left, student_right, teacher_left, teacher_right, query_weight, padding_bias, blocks, grad_output,
           self_relation: bool) -> tuple[Tensor, Tensor | None]:
    """Gradients of the loss for the student's X and Y, split into heads (one, summed, for X X^T)."""
    grad_left = torch.zeros_like(student_left)
    grad_right = grad_left if self_relation else torch.zeros_like(student_right)
    scale = 1 / math.sqrt(student_left.shape[-1])
    for block in blocks:
        part, queries, keys, _ = block
        s, t = _block_scores(student_left, student_right, teacher_left, teacher_right, padding_bias, block)
        weight = (grad_output * scale * query_weight[part, queries])[:, None, :, None]  # (b, 1, q, 1)
        grad_scores = torch.softmax(s, dim=-1).sub_(torch.softmax(t, dim=-1)).mul_(weight)  # (b, A, q, k)
        if self_relation and queries == keys:  # S = X X^T: dX = (G + G^T) X, one product instead of two
            grad_left[part, :, queries] += (grad_scores + grad_scores.transpose(-1, -2)) @ student_left[part, :, keys]
            continue
        grad_left[part, :, queries] += grad_scores @ student_right[part, :, keys]  # (b, A, q, d_r)
        grad_right[part, :, keys] += grad_scores.transpose(-1, -2) @ student_left[part, :, queries]  # (b, A, k, d_r)
    return grad_left, None if self_relation else grad_right


class _RelationKL(torch.autograd.Function):
    """Student X Y^T against teacher X' Y'^T (cross relations, e.g. Q-K)."""

    @staticmethod
    def forward(ctx, student_left, student_right, teacher_left, teacher_right, query_weight, padding_bias, heads, blocks):
        ctx.save_for_backward(student_left, student_right, teacher_left, teacher_right, query_weight, padding_bias)
        ctx.heads = heads
        split = [_heads(x, heads) for x in (student_left, student_right, teacher_left, teacher_right)]
        ctx.blocks = blocks
        return _loss(*split, query_weight, padding_bias, ctx.blocks)

    @staticmethod
    def backward(ctx, grad_output):
        *inputs, weight, bias = ctx.saved_tensors
        split = [_heads(x, ctx.heads) for x in inputs]
        grad_left, grad_right = _grads(*split, weight, bias, ctx.blocks, grad_output, self_relation=False)
        return _merge(grad_left), _merge(grad_right), None, None, None, None, None, None


class _SelfRelationKL(torch.autograd.Function):
    """Student X X^T (one input, so autograd hands back one gradient)."""

    @staticmethod
    def forward(ctx, student, teacher_left, teacher_right, query_weight, padding_bias, heads, blocks):
        ctx.save_for_backward(student, teacher_left, teacher_right, query_weight, padding_bias)
        ctx.heads = heads
        x = _heads(student, heads)
        ctx.blocks = blocks
        return _loss(x, x, *_pair_heads(teacher_left, teacher_right, heads), query_weight, padding_bias, ctx.blocks)

    @staticmethod
    def backward(ctx, grad_output):
        student, teacher_left, teacher_right, weight, bias = ctx.saved_tensors
        x = _heads(student, ctx.heads)
        tl, tr = _pair_heads(teacher_left, teacher_right, ctx.heads)
        grad, _ = _grads(x, x, tl, tr, weight, bias, ctx.blocks, grad_output, self_relation=True)
        return _merge(grad), None, None, None, None, None, None


def blocked_relation_kl(student: tuple[Tensor, Tensor], teacher: tuple[Tensor, Tensor], key_mask: Tensor,
                        padding_bias: Tensor, heads: int) -> Tensor:
    """The relation KL of `losses.attention_relation_kl`, summed over keys, averaged over heads
    and valid queries; fp32 inputs. `key_mask` (B, n) bool, `padding_bias` (B, 1, 1, n)."""
    if any(t.requires_grad for t in teacher):
        raise ValueError("the blocked relation KL takes a frozen teacher; use kernel='reference'")
    query_weight = key_mask.float() / (key_mask.sum().clamp(min=1) * heads)  # (B, n)
    blocks = _blocks(key_mask, heads)
    (left, right), (teacher_left, teacher_right) = student, teacher
    if left is right:
        return _SelfRelationKL.apply(left, teacher_left, teacher_right, query_weight, padding_bias, heads, blocks)
    return _RelationKL.apply(left, right, teacher_left, teacher_right, query_weight, padding_bias, heads, blocks)
