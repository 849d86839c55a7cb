"""Taps: forward hooks that hand the objectives exactly the tensors they declared.

A `Tap` names one tensor of a model: the hidden state after block i (0 = the embedding
output), the query/key/value projection output of block i, all heads concatenated,
(B, n, d), as the Linear layers return it (before any rotary embedding or head split), or the
attention scores of block i, Q K^T / sqrt(d_head) per head of the model, (B, A, n, n), before
the padding mask. On the `matmul` kernel (`train.attention`, `tadistill.attention`) the scores
are the kernel's own, handed over as it computes them; on any other kernel (SDPA never forms
them) they are computed from the query and key projections' outputs when both have fired.

`capture` registers one hook per tap and ends the forward as soon as the last tap has
fired: that hook raises a private exception which the context manager swallows. So a
teacher runs only up to the deepest tensor the objectives need, without re-implementing
or patching any transformers forward (masks, position ids and attention stay theirs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from torch import Tensor, nn

from tadistill.arch import ArchAdapter, adapter_for
from tadistill.attention import listen_to_scores, reports_scores
from tadistill.errors import ModelError

KINDS = ("hidden", "query", "key", "value", "scores")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True, order=True)
class Tap:
    kind: str  # one of KINDS
    layer: int  # hidden: 0 (embeddings) .. L; query/key/value/scores: 1 .. L

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"tap kind {self.kind!r} is not one of {', '.join(KINDS)}")


class _AllCaptured(Exception):
    """Raised by the hook that captures the last requested tensor, to stop the forward there."""


def tapped_module(model: nn.Module, adapter: ArchAdapter, tap: Tap) -> nn.Module:
    """The module whose output is `tap`; for scores, the self-attention that computes them."""
    if tap.kind == "scores":
        return adapter.attention_module(model, tap.layer)
    if tap.kind == "hidden":
        return adapter.embedding_output_module(model) if tap.layer == 0 else adapter.layer(model, tap.layer)
    return getattr(adapter.qkv(model, tap.layer), tap.kind)


def projection_scores(query: Tensor, key: Tensor, heads: int) -> Tensor:
    """Q K^T / sqrt(d_head) per head from (B, n, d) projection outputs, as the kernels scale it."""
    batch, tokens, width = query.shape
    query, key = (x.view(batch, tokens, heads, width // heads).transpose(1, 2) for x in (query, key))  # (B, A, n, d_r)
    return (query * (1 / math.sqrt(width // heads))) @ key.transpose(-1, -2)  # (B, A, n, n)


def _hook_scores(model: nn.Module, adapter: ArchAdapter, tap: Tap, record: Callable, hooks: ExitStack) -> None:
    if reports_scores(model.config):  # the kernel hands over the scores it computes anyway
        hooks.callback(listen_to_scores(tapped_module(model, adapter, tap), lambda scores: record(tap, scores)))
        return
    heads = adapter.shape(model.config).heads
    projections = adapter.qkv(model, tap.layer)
    outputs: dict[str, Tensor] = {}

    def hook_for(kind: str):
        def hook(module, inputs, output):
            outputs[kind] = output
            if len(outputs) == 2:
                record(tap, projection_scores(outputs.pop("query"), outputs.pop("key"), heads))

        return hook

    for kind in ("query", "key"):
        hooks.callback(getattr(projections, kind).register_forward_hook(hook_for(kind)).remove)


@contextmanager
def capture(model: nn.Module, taps: Iterable[Tap], stop_early: bool = True) -> Iterator[dict[Tap, Tensor]]:
    """Hook `taps` on `model`; the yielded dict fills up while the with-block runs a forward.

    With `stop_early`, the forward is cut right after the last requested tensor is
    computed and the with-block ends there. Hooks are removed on every exit path.
    """
    adapter = adapter_for(model)
    wanted = set(taps)
    captured: dict[Tap, Tensor] = {}

    def record(tap: Tap, tensor: Tensor) -> None:
        captured[tap] = tensor
        if stop_early and len(captured) == len(wanted):
            raise _AllCaptured

    def hook_for(tap: Tap):
        def hook(module, inputs, output):
            if not isinstance(output, Tensor):  # blocks return their hidden states alone since transformers 5
                raise ModelError(
                    f"{type(module).__name__} (tap {tap}) returned {type(output).__name__}, not a tensor; "
                    "tadistill needs transformers >= 5"
                )
            record(tap, output)

        return hook

    with ExitStack() as hooks:
        for tap in sorted(wanted):
            if tap.kind == "scores":
                _hook_scores(model, adapter, tap, record, hooks)
            else:
                hooks.callback(tapped_module(model, adapter, tap).register_forward_hook(hook_for(tap)).remove)
        try:
            yield captured
        except _AllCaptured:
            pass


def forward_taps(model: nn.Module, taps: Iterable[Tap], batch: Mapping[str, Tensor]) -> dict[Tap, Tensor]:
    """Run the encoder of `model` on `batch` until every tap has fired; return the tapped tensors.

    Only the base model runs (`model.base_model`): an LM head is never computed here.
    """
    wanted = set(taps)
    inputs = {name: batch[name] for name in MODEL_INPUTS if name in batch}
    with capture(model, wanted) as captured:
        model.base_model(**inputs)
    missing = wanted - captured.keys()
    if missing:
        raise ModelError(f"the forward of {type(model).__name__} never produced {sorted(missing)}")
    return captured
