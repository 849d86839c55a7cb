"""`train.compile: true`: torch.compile on the parts of the models that no tap reads.

Taps are forward hooks registered for each forward (`tadistill.taps`), and the one that
fires last raises to end the forward early. Compiled code guards on a module's hooks, so a
compiled module that holds a tap would recompile at every step. What is compiled is
therefore every largest submodule of the encoder blocks that contains no tapped module:
a whole block where nothing is tapped (most of a MiniLMv2 teacher), and inside a tapped
block its attention output, intermediate and output parts (the FFN, residuals and
LayerNorms) around the tapped Q/K/V projections (a scores tap holds its whole self-attention
back). `nn.Module.compile` works in place, so parameter names, checkpoints and the exported
student are those of an uncompiled run.
Compiled dropout draws its own random numbers: a run with compile on is not bitwise the
run with compile off (each is reproducible on its own).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from tadistill.arch import adapter_for
from tadistill.taps import Tap, tapped_module


def compile_untapped(model: nn.Module, taps: Iterable[Tap]) -> list[str]:
    """Compile, in place, every largest submodule of `model`'s blocks holding no tapped module;
    returns their names (relative to the model)."""
    adapter = adapter_for(model)
    tapped = {tapped_module(model, adapter, tap) for tap in taps}
    names = {module: name for name, module in model.named_modules()}
    compiled = []

    def visit(module: nn.Module) -> None:
        if tapped.isdisjoint(module.modules()):
            # a single layer (one Linear, a dropout) has nothing to fuse with
            if any(True for _ in module.children()) and any(True for _ in module.parameters()):
                module.compile()
                compiled.append(names[module])
            return
        for child in module.children():  # a tapped module's hook stays in eager code, its children need not
            visit(child)

    for block in adapter.layer_list(model):
        visit(block)
    return compiled
