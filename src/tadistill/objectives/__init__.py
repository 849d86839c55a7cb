"""Distillation objectives, built by name from the run config's `objectives` list.

Each entry `{name, weight, **options}` reaches this module as `(name, weight, options)`.
`check_objectives` reports every problem of the list without computing anything;
`build_objectives` turns it into one `Objectives` module: the union of the taps to
hook, whether MLM masking and logits are needed, and the weighted total loss.

| name | what it matches | options (defaults) |
|---|---|---|
| od | tempered MLM output distributions | temperature=2.0, alpha_mlm=0, alpha_cos=0, positions=masked |
| hs | hidden states on a layer mapping | mapping=last, pairs, loss=mse, embeddings=false, projection=auto |
| minilmv2 | Q/K/V relations of one layer | relation_heads=48, teacher_layer, student_layer, relations=[qq, kk, vv] |
| minilm | attention distributions + value relation | teacher_layer, student_layer, heads, value_relation=true |
| tinybert | attention scores + hidden + embeddings | mapping=uniform, pairs, heads, embeddings=true, projection=auto |
| direct-minilm | projected Q/K/V (MSE) | teacher_layer, student_layer, tensors=[q, k, v], projection=auto |
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import torch
from torch import Tensor, nn

from tadistill.arch import ModelShape
from tadistill.errors import ConfigError, Problem
from tadistill.objectives import attention, hidden, output, tinybert  # noqa: F401  (registration)
from tadistill.objectives.base import OBJECTIVES, Objective, ObjectiveOptions, StepTensors, option_problems
from tadistill.taps import Tap

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveOptions",
    "Objectives",
    "StepTensors",
    "build_objectives",
    "check_objectives",
]

ObjectiveSpec = tuple[str, float, dict]


class Objectives(nn.Module):
    """Every objective of a run with its weight; `forward(step) -> (total, {loss_name: loss})`.

    Loss names are the objective's name (its index appended when a name repeats) for its
    own total, and `name/part` for each part when it has several (e.g. `minilmv2/qq`).
    """

    def __init__(self, names: list[str], weights: list[float], objectives: list[Objective]):
        super().__init__()
        counts = Counter(names)
        self.names = [name if counts[name] == 1 else f"{name}.{i}" for i, name in enumerate(names)]
        self.weights = weights
        self.objectives = nn.ModuleList(objectives)
        self.teacher_taps: frozenset[Tap] = frozenset().union(*(o.teacher_taps for o in objectives))
        self.student_taps: frozenset[Tap] = frozenset().union(*(o.student_taps for o in objectives))
        # check_objectives allows a single `od`, hence a single choice of positions
        self.logit_positions: str | None = next((o.logit_positions for o in objectives if o.logit_positions), None)
        self.needs_mlm = any(o.needs_mlm for o in objectives)

    @property
    def needs_logits(self) -> bool:
        return self.logit_positions is not None

    @property
    def deepest_teacher_layer(self) -> int:
        return max(tap.layer for tap in self.teacher_taps)

    def forward(self, step: StepTensors) -> tuple[Tensor, dict[str, Tensor]]:
        total = step.attention_mask.new_zeros((), dtype=torch.float32)
        logged = {}
        for name, weight, objective in zip(self.names, self.weights, self.objectives):
            loss, parts = objective(step)
            total = total + weight * loss
            logged[name] = loss.detach()
            if len(parts) > 1:
                logged.update({f"{name}/{part}": value.detach() for part, value in parts.items()})
        return total, logged


def check_objectives(
    specs: list[ObjectiveSpec], teacher_shape: ModelShape, student_shape: ModelShape, teacher_has_lm_head: bool
) -> list[Problem]:
    """Every problem of the objective list at once, keyed `objectives.<i>.<option>`; computes nothing."""
    if not specs:
        return [Problem("objectives", [], f"give at least one objective; known: {', '.join(OBJECTIVES.names())}")]
    problems = []
    for i, (name, weight, options) in enumerate(specs):
        found = _spec_problems(name, weight, options, teacher_shape, student_shape, teacher_has_lm_head)
        problems += [dataclasses.replace(p, key=f"objectives.{i}.{p.key}") for p in found]
    od_indices = [i for i, (name, _, _) in enumerate(specs) if name == "od"]
    problems += [Problem(f"objectives.{i}.name", "od", "only one od objective per run") for i in od_indices[1:]]
    return problems


def _spec_problems(
    name, weight, options, teacher: ModelShape, student: ModelShape, teacher_has_lm_head: bool
) -> list[Problem]:
    if not isinstance(name, str) or name not in OBJECTIVES:
        return [Problem("name", name, OBJECTIVES.unknown_message(str(name)))]
    problems = []
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        problems.append(Problem("weight", weight, "must be a number >= 0"))
    options_class = OBJECTIVES.get(name)
    option_errors = option_problems(name, options_class, options)
    if option_errors:  # semantic checks need well-typed options
        return problems + option_errors
    return problems + options_class(**options).problems(teacher, student, teacher_has_lm_head)


def build_objectives(specs: list[ObjectiveSpec], teacher_shape: ModelShape, student_shape: ModelShape) -> Objectives:
    """Build every objective (and its training-only projections) for this teacher/student pair.

    Raises ConfigError with every problem found. A teacher without an LM head is caught
    by `check_objectives` (validate) or by the engine's first step.
    """
    problems = check_objectives(specs, teacher_shape, student_shape, teacher_has_lm_head=True)
    if problems:
        raise ConfigError(problems)
    objectives = [OBJECTIVES.get(name)(**options).build(teacher_shape, student_shape) for name, _, options in specs]
    return Objectives([name for name, _, _ in specs], [float(weight) for _, weight, _ in specs], objectives)
