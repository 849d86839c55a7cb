"""What every objective shares: the registry, the options contract, the step tensors.

An objective comes in two halves. Its *options* (a dataclass registered by name, the
fields being exactly the YAML keys, with their defaults) validate themselves against
the two model shapes and build the *objective*: an `nn.Module` holding resolved plain
values (layer numbers, weights) and any training-only projections, which declares the
taps it reads and turns them into named losses.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from tadistill.arch import ModelShape
from tadistill.errors import Problem
from tadistill.mapping import MAPPINGS, MappingError, layer_map
from tadistill.registry import Registry, did_you_mean
from tadistill.taps import Tap


@dataclass
class StepTensors:
    """Everything one micro-batch hands the objectives."""

    teacher: dict[Tap, Tensor]
    student: dict[Tap, Tensor]
    attention_mask: Tensor  # (B, n)
    teacher_logits: Tensor | None = None  # (N, V) at the N positions the logit loss reads
    student_logits: Tensor | None = None  # (N, V)
    logit_labels: Tensor | None = None  # (N,) MLM labels there, -100 where a token was not masked


@dataclass(frozen=True)
class Loss:
    """An objective's loss: the `total` that trains, and its named `parts` (for logging)."""

    total: Tensor
    parts: dict[str, Tensor]


class Objective(nn.Module):
    """A built objective: the taps it reads and `forward(step) -> Loss`."""

    def __init__(
        self,
        teacher_taps: set[Tap],
        student_taps: set[Tap],
        logit_positions: str | None = None,
        needs_mlm: bool = False,
    ):
        super().__init__()
        self.teacher_taps = frozenset(teacher_taps)
        self.student_taps = frozenset(student_taps)
        self.logit_positions = logit_positions  # "masked" | "all" when the objective reads logits
        self.needs_mlm = needs_mlm

    def forward(self, step: StepTensors) -> Loss:
        raise NotImplementedError


@dataclass
class ObjectiveOptions:
    """The YAML options of one objective. Subclasses add fields and implement `build`.

    Every field is documented in the class docstring as a line `name: what it does`.
    """

    def problems(self, *, teacher: ModelShape, student: ModelShape, teacher_has_lm_head: bool) -> list[Problem]:
        """Everything wrong with these options for this teacher/student pair; keys are field names."""
        return []

    def build(self, *, teacher: ModelShape, student: ModelShape) -> Objective:
        raise NotImplementedError


OBJECTIVES: Registry[type[ObjectiveOptions]] = Registry("objective")


def projection(*, student_width: int, teacher_width: int, mode: str) -> nn.Module:
    """The training-only map student width -> teacher width: a Linear, or Identity.

    mode "auto": Linear only when the widths differ; "always": Linear; "never": Identity.
    """
    if mode == "always" or (mode == "auto" and student_width != teacher_width):
        return nn.Linear(student_width, teacher_width)
    return nn.Identity()


ProjectionMode = Literal["auto", "always", "never"]
ProjectionSharing = Literal["pair", "student-layer", "shared"]


def projection_problems(mode: str, *, student: ModelShape, teacher: ModelShape) -> list[Problem]:
    if mode == "never" and student.hidden != teacher.hidden:
        return [
            Problem(
                "projection",
                mode,
                f"the student width {student.hidden} differs from the teacher width {teacher.hidden}; "
                "use projection 'auto' (a learned linear map)",
            )
        ]
    return []


def layer_problems(key: str, layer: int | None, shape: ModelShape, model: str) -> list[Problem]:
    """A problem when `layer` is not a block of `model` (None, meaning the last block, is fine)."""
    if layer is not None and not 1 <= layer <= shape.layers:
        return [Problem(key, layer, f"the {model} has layers 1..{shape.layers}")]
    return []


def heads_problems(key: str, heads: int, *, teacher: ModelShape, student: ModelShape) -> list[Problem]:
    """Heads must split both widths evenly, since Q/K/V are (B, n, hidden) on both sides."""
    if heads < 1:
        return [Problem(key, heads, "must be >= 1")]
    widths = {"teacher": teacher.hidden, "student": student.hidden}
    uneven = [f"the {model} width {width}" for model, width in widths.items() if width % heads]
    if not uneven:
        return []
    common = math.gcd(teacher.hidden, student.hidden)
    divisors = [str(h) for h in range(1, common + 1) if common % h == 0]
    return [Problem(key, heads, f"does not divide {' and '.join(uneven)}; values dividing both: {', '.join(divisors)}")]


def option_problems(name: str, options_class: type[ObjectiveOptions], options: dict) -> list[Problem]:
    """Unknown option names and values of the wrong type, keyed by option name."""
    hints = typing.get_type_hints(options_class)
    known = [field.name for field in dataclasses.fields(options_class)]
    problems = []
    for key, value in options.items():
        if key not in known:
            hint = did_you_mean(key, known)
            problems.append(Problem(key, value, f"unknown option of {name!r}.{hint} Options: {', '.join(known)}"))
        elif not _matches(value, hints[key]):
            problems.append(Problem(key, value, f"expected {_describe(hints[key])}"))
    return problems


def _matches(value, hint) -> bool:
    """Whether a YAML value fits a type hint (bool is not a number; a list fits a tuple hint)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_matches(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items()
        )
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return " or ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    return str(hint).replace("typing.", "") if origin else getattr(hint, "__name__", str(hint))


def mapping_problems(mapping: str, pairs, *, teacher: ModelShape, student: ModelShape) -> list[Problem]:
    """Problems of a layer mapping (unknown strategy, impossible for these depths), keyed mapping/pairs."""
    if mapping not in MAPPINGS:
        return [Problem("mapping", mapping, MAPPINGS.unknown_message(mapping))]
    try:
        layer_map(mapping, student.layers, teacher.layers, pairs)
    except MappingError as error:
        key, value = ("mapping", mapping) if pairs is None else ("pairs", pairs)
        return [Problem(key, value, str(error))]
    return []
