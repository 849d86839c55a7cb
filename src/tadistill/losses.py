"""Distillation losses: pure functions, tensors in, scalar out.

Every loss runs in fp32 with autocast off whatever the input dtype (softmaxes and KL
sums over a 30k vocabulary or 128 keys lose too much in bf16; the one exception, TinyBERT's
score MSE with kernel "fused", is explained there), ignores padding, and
returns 0 with a graph when every position is masked out, so that backward still runs
on a micro-batch with nothing to learn from.

Shapes: B batch, n tokens, d width, V vocabulary, A heads, d_r = d / A.
Masks are (B, n) with 1 (or True) on real tokens, as `attention_mask`.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from tadistill.relation_kl import blocked_relation_kl
from tadistill.score_mse import blocked_score_mse, fused_score_mse

IGNORE_INDEX = -100  # label of unmasked positions, as DataCollatorForLanguageModeling writes them

# A relation side is one tensor X (relation X X^T) or a pair (X, Y) (relation X Y^T).
RelationInput = Tensor | tuple[Tensor, Tensor]


def in_fp32(loss):
    """Run `loss` with autocast off and every floating tensor argument cast to fp32."""

    def to_fp32(value):
        if isinstance(value, tuple):
            return tuple(to_fp32(v) for v in value)
        if isinstance(value, Tensor) and value.is_floating_point():
            return value.float()
        return value

    @functools.wraps(loss)
    def wrapper(*args, **kwargs):
        args, kwargs = to_fp32(args), {k: to_fp32(v) for k, v in kwargs.items()}
        device = next(v for v in (*args, *kwargs.values()) if isinstance(v, Tensor)).device
        with torch.autocast(device.type, enabled=False):
            return loss(*args, **kwargs)

    return wrapper


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of `values` where `mask` is set (everywhere if None); 0, still attached to the graph,
    when nothing is selected (a micro-batch without a masked token has empty logits)."""
    if mask is None:
        return values.sum() / max(values.numel(), 1)
    mask = mask.bool()
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


@in_fp32
def output_kl(*, student: Tensor, teacher: Tensor, mask: Tensor | None, temperature: float) -> Tensor:
    """T^2 * mean over selected positions of KL(softmax(t/T) || softmax(s/T)), summed over the vocabulary.

    `student` and `teacher` are logits (..., V); `mask` (...) selects positions, None selects all.
    """
    student_log_probs = F.log_softmax(student / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)  # (...)
    return temperature**2 * _masked_mean(kl, mask)


@in_fp32
def masked_lm_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Hard MLM loss: mean cross-entropy over positions whose label is not -100. Logits (..., V)."""
    flat_logits, flat_labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)  # (N, V), (N,)
    total = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


@in_fp32
def hidden_mse(*, student: Tensor, teacher: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean squared error over valid tokens and features; both (B, n, d)."""
    return _masked_mean((student - teacher).pow(2).mean(-1), attention_mask)


@in_fp32
def hidden_cosine(*, student: Tensor, teacher: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean over valid tokens of 1 - cos(student, teacher); both (B, n, d)."""
    return _masked_mean(1 - F.cosine_similarity(student, teacher, dim=-1), attention_mask)


def _split_heads(x: Tensor, heads: int) -> Tensor:
    batch, tokens, width = x.shape
    return x.view(batch, tokens, heads, width // heads).transpose(1, 2)  # (B, A, n, d_r)


def _relation_scores(side: RelationInput, heads: int) -> Tensor:
    """X Y^T / sqrt(d_r) per head, (B, A, n, n); X Y^T = X X^T when `side` is one tensor."""
    left, right = side if isinstance(side, tuple) else (side, side)
    left, right = _split_heads(left, heads), _split_heads(right, heads)  # (B, A, n, d_r)
    # scaling the (n, d_r) operand rather than the (n, n) product saves a pass over the scores
    return (left / math.sqrt(left.shape[-1])) @ right.transpose(-1, -2)  # (B, A, n, n)


def _padding_bias(key_mask: Tensor) -> Tensor:
    """(B, 1, 1, n) to add to scores: 0 on real keys, the fp32 minimum on padding keys.

    The minimum rather than -inf keeps an all-padding row finite instead of NaN, and an
    in-place add is several times cheaper than masked_fill on a (B, A, n, n) tensor.
    """
    return torch.where(key_mask, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]  # (B, 1, 1, n)


RELATION_KERNELS = ("blocked", "reference")


@in_fp32
def attention_relation_kl(
    *, student: RelationInput, teacher: RelationInput, attention_mask: Tensor, relation_heads: int,
    kernel: str = "blocked",
) -> Tensor:
    """MiniLMv2 relation loss between student (B, n, d_S) and teacher (B, n, d_T) tensors.

    Each side is split into `relation_heads` heads (d_r computed per side, so widths and
    head counts may differ), R = softmax(X Y^T / sqrt(d_r)) over valid keys, and the loss
    is KL(R_teacher || R_student) summed over keys, averaged over relation heads and over
    all valid query tokens of the batch. Pass (X, Y) pairs for cross relations (e.g. Q-K).

    kernel "blocked" (for a frozen teacher) computes the same loss a few sequences at a time
    with a closed-form backward and no (B, A, n, n) tensor kept (`tadistill.relation_kl`);
    "reference" is the plain version, also taken when the teacher side requires grad.
    """
    key_mask = attention_mask.bool()
    padding_bias = _padding_bias(key_mask)  # (B, 1, 1, n)
    pairs = [side if isinstance(side, tuple) else (side, side) for side in (student, teacher)]
    if kernel == "blocked" and not any(t.requires_grad for t in pairs[1]):
        return blocked_relation_kl(pairs[0], pairs[1], key_mask, padding_bias, relation_heads)
    student_scores = _relation_scores(student, relation_heads).add_(padding_bias)  # (B, A, n, n)
    teacher_scores = _relation_scores(teacher, relation_heads).add_(padding_bias)  # (B, A, n, n)
    teacher_probs = F.softmax(teacher_scores, dim=-1)
    # KL summed over keys, sum_k p_T (log p_T - log p_S), as two contractions over the keys:
    # unlike kl_div they leave no (B, A, n, n) temporaries, the bulk of this loss's cost
    teacher_term = torch.einsum("bhqk,bhqk->bhq", teacher_probs, F.log_softmax(teacher_scores, dim=-1))
    cross_term = torch.einsum("bhqk,bhqk->bhq", teacher_probs, F.log_softmax(student_scores, dim=-1))
    return _masked_mean((teacher_term - cross_term).mean(1), key_mask)  # mean over heads, then valid queries


def attention_kl(
    *,
    student_query: Tensor,
    student_key: Tensor,
    teacher_query: Tensor,
    teacher_key: Tensor,
    attention_mask: Tensor,
    heads: int,
) -> Tensor:
    """MiniLMv1 attention transfer: KL between the attention distributions softmax(Q K^T / sqrt(d_h)).

    Per head (`heads` splits both models, normally their common head count), summed over
    keys, averaged over heads and valid query tokens. It is the Q-K relation of MiniLMv2
    with one relation head per attention head.
    """
    return attention_relation_kl(
        student=(student_query, student_key),
        teacher=(teacher_query, teacher_key),
        attention_mask=attention_mask,
        relation_heads=heads,
    )


def attention_score_mse(
    *,
    student_query: Tensor,
    student_key: Tensor,
    teacher_query: Tensor,
    teacher_key: Tensor,
    attention_mask: Tensor,
    heads: int,
    kernel: str = "fused",
) -> Tensor:
    """TinyBERT attention transfer: MSE between pre-softmax scores Q K^T / sqrt(d_h), per head.

    Averaged over heads and over (query, key) pairs where both tokens are real: padding
    entries are excluded rather than zeroed, so padding does not dilute the loss.

    kernel "reference" is autograd over the whole batch in fp32. With a frozen teacher,
    "fused" is the same batch-wide product with a closed-form backward, in the taps' dtype
    (the one loss here whose products may run in bf16: the score difference comes out of one
    product, so nothing cancels after rounding, and its squares are summed in fp32); "blocked"
    takes one sequence at a time in fp32, cut to its real tokens, and keeps no (B, A, n, n)
    tensor (`tadistill.score_mse`).
    """
    inputs = (student_query, student_key, teacher_query, teacher_key, attention_mask, heads)
    if not (teacher_query.requires_grad or teacher_key.requires_grad):
        if kernel == "fused":
            return fused_score_mse(*inputs)
        if kernel == "blocked":
            return in_fp32(blocked_score_mse)(*inputs)
    return _reference_score_mse(*inputs)


@in_fp32
def _reference_score_mse(student_query, student_key, teacher_query, teacher_key, attention_mask, heads) -> Tensor:
    # S_S - S_T as one product, [Q_S / sqrt(d_S), -Q_T / sqrt(d_T)] [K_S, K_T]^T: one (B, A, n, n)
    # tensor written instead of three (both scores and their difference)
    queries = [_split_heads(q, heads) for q in (student_query, teacher_query)]  # (B, A, n, d_r) each
    keys = [_split_heads(k, heads) for k in (student_key, teacher_key)]
    scales = [1 / math.sqrt(queries[0].shape[-1]), -1 / math.sqrt(queries[1].shape[-1])]
    scaled = torch.cat([q * scale for q, scale in zip(queries, scales)], -1)  # (B, A, n, d_S + d_T)
    difference = scaled @ torch.cat(keys, -1).transpose(-1, -2)  # (B, A, n, n)
    token_mask = attention_mask.bool()
    pair_mask = token_mask[:, :, None] & token_mask[:, None, :]  # (B, n, n)
    return _masked_mean(difference.pow(2).mean(1), pair_mask)
