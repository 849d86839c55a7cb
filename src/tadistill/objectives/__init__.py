"""Distillation objectives, built by name from the run config's `objectives` list.

Each entry `{name, weight, **options}` reaches this module as an `ObjectiveConfig`.
`objective_problems` reports every problem of the list without computing anything;
`build_objectives` turns a checked list into one `Objectives` module: the union of the
taps to hook, whether MLM masking and logits are needed, and the weighted total loss.

| name | what it matches | options (defaults) |
|---|---|---|
| od | tempered MLM output distributions | temperature=2.0, alpha_mlm=0, alpha_cos=0, positions=all, mask_input=true |
| hs | hidden states on a layer mapping | mapping=last, pairs, loss=mse, embeddings=false, projection=auto, projection_sharing=pair |
| minilmv2 | Q/K/V relations of one layer | relation_heads=48, teacher_layer, student_layer, relations=[qq, kk, vv], reduction=sum |
| minilm | attention distributions + value relation | teacher_layer, student_layer, heads, value_relation=true |
| tinybert | attention scores + hidden + embeddings | mapping=uniform, pairs, heads, embeddings=true, projection=auto, projection_sharing=shared, reduction=sum |
| direct-minilm | projected Q/K/V (MSE) | teacher_layer, student_layer, tensors=[q, k, v], projection=auto |
| sentence | pooled sentence embeddings (cosine + batch similarities) | pooling=mean, similarity_weight=1.0, teacher_layer, student_layer, projection=auto |
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import torch
from torch import nn

from tadistill.arch import ModelShape
from tadistill.config import ObjectiveConfig
from tadistill.errors import Problem
from tadistill.objectives import attention, hidden, output, sentence, tinybert  # noqa: F401  (registration)
from tadistill.objectives.base import OBJECTIVES, Loss, Objective, ObjectiveOptions, StepTensors, option_problems
from tadistill.taps import Tap

__all__ = [
    "OBJECTIVES",
    "Loss",
    "Objective",
    "ObjectiveOptions",
    "Objectives",
    "StepTensors",
    "build_objectives",
    "objective_problems",
]


class Objectives(nn.Module):
    """Every objective of a run with its weight; `forward(step) -> Loss(total, {loss_name: loss})`.

    Loss names are the objective's name (its index appended when a name repeats) for its
    own total, and `name/part` for each part when it has several (e.g. `minilmv2/qq`).
    """

    def __init__(self, configs: list[ObjectiveConfig], objectives: list[Objective]):
        super().__init__()
        counts = Counter(config.name for config in configs)
        self.names = [c.name if counts[c.name] == 1 else f"{c.name}.{i}" for i, c in enumerate(configs)]
        self.weights = [float(config.weight) for config in configs]
        self.objectives = nn.ModuleList(objectives)
        self.teacher_taps: frozenset[Tap] = frozenset().union(*(o.teacher_taps for o in objectives))
        self.student_taps: frozenset[Tap] = frozenset().union(*(o.student_taps for o in objectives))
        # objective_problems allows a single `od`, hence a single choice of positions
        self.logit_positions: str | None = next((o.logit_positions for o in objectives if o.logit_positions), None)
        self.needs_mlm = any(o.needs_mlm for o in objectives)

    @property
    def needs_logits(self) -> bool:
        return self.logit_positions is not None

    @property
    def deepest_teacher_layer(self) -> int:
        return max(tap.layer for tap in self.teacher_taps)

    def forward(self, step: StepTensors) -> Loss:
        total = step.attention_mask.new_zeros((), dtype=torch.float32)
        logged = {}
        for name, weight, objective in zip(self.names, self.weights, self.objectives):
            loss = objective(step)
            total = total + weight * loss.total
            logged[name] = loss.total.detach()
            if len(loss.parts) > 1:
                logged.update({f"{name}/{part}": value.detach() for part, value in loss.parts.items()})
        return Loss(total=total, parts=logged)


def objective_problems(
    configs: list[ObjectiveConfig],
    *,
    teacher: ModelShape | None,
    student: ModelShape | None,
    teacher_has_lm_head: bool,
) -> list[Problem]:
    """Every problem of the objective list at once, keyed `objectives.<i>.<option>`; computes nothing.

    Names, weights and option types are checked always; the options' values against the
    two shapes when both are known.
    """
    problems = []
    for i, config in enumerate(configs):
        found = _config_problems(config, teacher=teacher, student=student, teacher_has_lm_head=teacher_has_lm_head)
        problems += [dataclasses.replace(p, key=f"objectives.{i}.{p.key}") for p in found]
    od_indices = [i for i, config in enumerate(configs) if config.name == "od"]
    problems += [Problem(f"objectives.{i}.name", "od", "only one od objective per run") for i in od_indices[1:]]
    return problems


def _config_problems(
    config: ObjectiveConfig, *, teacher: ModelShape | None, student: ModelShape | None, teacher_has_lm_head: bool
) -> list[Problem]:
    name, weight, options = config.name, config.weight, config.options
    if not isinstance(name, str) or name not in OBJECTIVES:
        return [Problem("name", name, OBJECTIVES.unknown_message(str(name)))]
    problems = []
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        problems.append(Problem("weight", weight, "must be a number >= 0"))
    options_class = OBJECTIVES.get(name)
    option_errors = option_problems(name, options_class, options)
    if option_errors or teacher is None or student is None:  # value checks need well-typed options and both shapes
        return problems + option_errors
    return problems + options_class(**options).problems(teacher=teacher, student=student, teacher_has_lm_head=teacher_has_lm_head)


def build_objectives(configs: list[ObjectiveConfig], *, teacher: ModelShape, student: ModelShape) -> Objectives:
    """Every objective (and its training-only projections) for this teacher/student pair.

    The configs are trusted: `objective_problems` checks them (`tadistill validate`, and the
    distill recipe before it builds anything).
    """
    objectives = [OBJECTIVES.get(c.name)(**c.options).build(teacher=teacher, student=student) for c in configs]
    return Objectives(configs, objectives)
