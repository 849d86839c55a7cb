"""`train.attention`: the attention kernel teacher and student run while distilling.

On CPU in bf16, PyTorch's SDPA takes its flash kernel, and at BERT's shapes its backward is
slow: forward and backward of one layer (batch 32, 12 heads, 128 tokens, head size 32) take
76 ms against 27 ms for two bf16 matmuls and a softmax, 2.9-4.4x across head sizes 32/64 and
64/128 tokens; the forward alone 10.6 ms against 8.9 ms (`benchmarks/attention.py`, 2 cores).
In fp32 SDPA is as fast or faster, and on CUDA it has real flash kernels. So `auto` picks
`matmul` on CPU under bf16 and leaves the models' own kernel (SDPA) everywhere else.

`matmul` is registered under transformers' `AttentionInterface`, the library's extension
point for attention functions, with SDPA's boolean padding masks; no model code is patched.
It is eager attention as autocast runs it (scores rounded to bf16, softmax over them
accumulated in fp32 by the kernel), except that the padding mask is filled into the bf16
scores instead of added in fp32. transformers never writes the implementation into a saved
config, so a distilled model never depends on tadistill to load; `restore_attention` also gives
the in-memory model its own kernel back before it is saved and handed on.

`matmul` also hands its scores to whoever listens on the module (`listen_to_scores`): a
`scores` tap (`tadistill.taps`) reads them there instead of computing Q K^T a second time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tadistill.errors import ModelError

MATMUL = "tadistill_matmul"
CHOICES = ("auto", "sdpa", "eager", "matmul")
# attention module -> the callback `matmul_attention` hands that module's scores to
_score_listeners: weakref.WeakKeyDictionary[nn.Module, Callable[[Tensor], None]] = weakref.WeakKeyDictionary()


def matmul_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_kwargs,
) -> tuple[Tensor, Tensor]:
    """Softmax(Q K^T * scaling) V over (B, H, n, d) inputs; returns (B, n, H, d) and the probabilities."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))  # (B, H, n_q, n_k)
    # compiled blocks hold no tap (tadistill.compiling): no lookup, so no guard on the registry
    listener = None if torch.compiler.is_compiling() else _score_listeners.get(module)
    if listener is not None:
        listener(scores)  # the mask below makes a new tensor: the listener's stays as it is
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # SDPA's mask: True = attend, (B, 1, n_q, n_k)
            # finfo.min, not -inf: a row with no key left gives uniform weights, never NaN
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:  # an additive mask a caller built
            scores = scores + attention_mask.to(scores.dtype)
    probs = torch.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value)  # (B, H, n_q, d)
    return out.transpose(1, 2).contiguous(), probs


AttentionInterface.register(MATMUL, matmul_attention)
AttentionMaskInterface.register(MATMUL, sdpa_mask)


def reports_scores(config) -> bool:
    """Whether a model of `config` runs the `matmul` kernel, which hands its scores to `listen_to_scores`."""
    return getattr(config, "_attn_implementation", None) == MATMUL


def listen_to_scores(module: nn.Module, callback: Callable[[Tensor], None]) -> Callable[[], None]:
    """Have `matmul_attention` call `callback` with the scores it computes for the attention
    `module`, scaled and before the padding mask, (B, H, n, n); returns what stops it."""
    if module in _score_listeners:
        raise ModelError(f"the scores of {type(module).__name__} are already being captured")
    _score_listeners[module] = callback
    return lambda: _score_listeners.pop(module, None)


def resolve_attention(choice: str, device: torch.device, mixed_precision: str) -> str | None:
    """The transformers `attn_implementation` for `train.attention`, or None to keep the models' own."""
    if choice == "auto":
        return MATMUL if device.type == "cpu" and mixed_precision == "bf16" else None
    return MATMUL if choice == "matmul" else choice


def set_attention(model: nn.Module, implementation: str | None, strict: bool = True) -> str:
    """Switch `model` to `implementation` (None: leave it); returns the one it had, for `restore_attention`.

    A model whose attention does not go through transformers' `AttentionInterface` (MPNet,
    DeBERTa-v2, remote code) cannot switch: `strict` (a kernel the user named) raises, otherwise
    (`auto`) the model keeps its own kernel.
    """
    previous = model.config._attn_implementation
    if implementation is not None and implementation != previous:
        model.set_attn_implementation(implementation)
        if strict and model.config._attn_implementation != implementation:
            raise ModelError(
                f"train.attention: {type(model).__name__} cannot switch its attention to {implementation!r} "
                "(it does not use transformers' AttentionInterface); use train.attention: auto or sdpa"
            )
    return previous


def use_attention(model: nn.Module, choice: str, device: torch.device, mixed_precision: str) -> str:
    """Switch `model` to what `train.attention: choice` resolves to; returns its own kernel, for
    `restore_attention`. Only a kernel the user named (not `auto`) raises if the model cannot switch."""
    return set_attention(model, resolve_attention(choice, device, mixed_precision), strict=choice != "auto")


def restore_attention(model: nn.Module, implementation: str) -> None:
    """Give `model` back the attention implementation `set_attention` returned."""
    if model.config._attn_implementation != implementation:
        model.set_attn_implementation(implementation)
