"""Taps: forward hooks that hand the objectives exactly the tensors they declared.

A `Tap` names one tensor of a model: the hidden state after block i (0 = the embedding
output) or the query/key/value projection output of block i, all heads concatenated,
(B, n, d), as the Linear layers return it (before any rotary embedding or head split).
Attention scores are never tapped: the models keep their attention kernels (SDPA, or the one
`train.attention` picks, `tadistill.attention`) and objectives recompute scores from the
captured Q/K with the padding mask.

`capture` registers one hook per tap and ends the forward as soon as the last tap has
fired: that hook raises a private exception which the context manager swallows. So a
teacher runs only up to the deepest tensor the objectives need, without re-implementing
or patching any transformers forward (masks, position ids and attention stay theirs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn

from tadistill.arch import ArchAdapter, adapter_for
from tadistill.errors import ModelError

KINDS = ("hidden", "query", "key", "value")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True, order=True)
class Tap:
    kind: str  # one of KINDS
    layer: int  # hidden: 0 (embeddings) .. L; query/key/value: 1 .. L

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"tap kind {self.kind!r} is not one of {', '.join(KINDS)}")


class _AllCaptured(Exception):
    """Raised by the hook that captures the last requested tensor, to stop the forward there."""


def tapped_module(model: nn.Module, adapter: ArchAdapter, tap: Tap) -> nn.Module:
    if tap.kind == "hidden":
        return adapter.embedding_output_module(model) if tap.layer == 0 else adapter.layer(model, tap.layer)
    return getattr(adapter.qkv(model, tap.layer), tap.kind)


@contextmanager
def capture(model: nn.Module, taps: Iterable[Tap], stop_early: bool = True) -> Iterator[dict[Tap, Tensor]]:
    """Hook `taps` on `model`; the yielded dict fills up while the with-block runs a forward.

    With `stop_early`, the forward is cut right after the last requested tensor is
    computed and the with-block ends there. Hooks are removed on every exit path.
    """
    adapter = adapter_for(model)
    wanted = set(taps)
    captured: dict[Tap, Tensor] = {}

    def hook_for(tap: Tap):
        def hook(module, inputs, output):
            if not isinstance(output, Tensor):  # blocks return their hidden states alone since transformers 5
                raise ModelError(
                    f"{type(module).__name__} (tap {tap}) returned {type(output).__name__}, not a tensor; "
                    "tadistill needs transformers >= 5"
                )
            captured[tap] = output
            if stop_early and len(captured) == len(wanted):
                raise _AllCaptured

        return hook

    handles = []
    try:
        for tap in sorted(wanted):
            handles.append(tapped_module(model, adapter, tap).register_forward_hook(hook_for(tap)))
        yield captured
    except _AllCaptured:
        pass
    finally:
        for handle in handles:
            handle.remove()


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
