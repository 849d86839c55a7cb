"""Multi-head attention (MHA) transfer from one teacher layer to one student layer:
MiniLMv2 relations, MiniLMv1 attention distributions, DirectMiniLM projected Q/K/V."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from tadistill.arch import ModelShape
from tadistill.errors import Problem
from tadistill.losses import attention_kl, attention_relation_kl, hidden_mse
from tadistill.objectives.base import (
    OBJECTIVES,
    Loss,
    Objective,
    ObjectiveOptions,
    ProjectionMode,
    StepTensors,
    heads_problems,
    layer_problems,
    projection,
    projection_problems,
)
from tadistill.taps import Tap

TENSOR_KINDS = {"q": "query", "k": "key", "v": "value"}


def _layer_pair_problems(options, *, teacher: ModelShape, student: ModelShape) -> list[Problem]:
    return [
        *layer_problems("teacher_layer", options.teacher_layer, teacher, "teacher"),
        *layer_problems("student_layer", options.student_layer, student, "student"),
    ]


def _taps(letters, layer: int) -> set[Tap]:
    return {Tap(TENSOR_KINDS[letter], layer) for letter in letters}


class MiniLMv2(Objective):
    """Weighted sum over relations XY of KL(R_XY teacher || R_XY student), R = softmax(X Y^T / sqrt(d_r)).

    The weights already hold the reduction: 1 each for the paper's sum, 1/len for a mean.
    """

    def __init__(self, teacher_layer: int, student_layer: int, relations: dict[str, float], relation_heads: int,
                 kernel: str = "blocked"):
        letters = set("".join(relations))
        super().__init__(_taps(letters, teacher_layer), _taps(letters, student_layer))
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.relations = relations
        self.relation_heads = relation_heads
        self.kernel = kernel

    def forward(self, step: StepTensors) -> Loss:
        parts = {
            relation: attention_relation_kl(
                student=self._pair(step.student, self.student_layer, relation),
                teacher=self._pair(step.teacher, self.teacher_layer, relation),
                attention_mask=step.attention_mask,
                relation_heads=self.relation_heads,
                kernel=self.kernel,
            )
            for relation in self.relations
        }
        total = sum(weight * parts[relation] for relation, weight in self.relations.items())
        return Loss(total=total, parts=parts)

    @staticmethod
    def _pair(tensors: dict[Tap, Tensor], layer: int, relation: str) -> tuple[Tensor, Tensor]:
        left, right = relation
        return tensors[Tap(TENSOR_KINDS[left], layer)], tensors[Tap(TENSOR_KINDS[right], layer)]


@OBJECTIVES.register("minilmv2")
@dataclass
class MiniLMv2Options(ObjectiveOptions):
    """`minilmv2`: multi-head self-attention relation transfer (MiniLMv2).

    relation_heads: A_r, the number of relation heads Q/K/V are split into; must divide
        both widths (48 for base-size teachers, 64 for large ones).
    teacher_layer: teacher block to learn from (default: the last; an upper-middle one,
        e.g. 19 of 24, for large teachers).
    student_layer: student block that learns (default: the last).
    relations: two letters of q, k, v each: a list (weight 1 each, e.g. [qq, kk, vv]) or a
        mapping relation -> weight (e.g. {qk: 1, vv: 1}).
    reduction: "sum" adds the weighted relation losses (MiniLMv2: weight 1 each), "mean"
        divides that sum by the number of relations (tadistill's earlier default).
    kernel: how the relation KL is computed, the same loss either way: "blocked" works on
        blocks of sequences (on a CPU one sequence, cut to its real tokens) and recomputes
        them in backward (tadistill.relation_kl): no (B, A_r, n, n) tensor is kept, and it is
        the faster on CPUs and GPUs as measured; "reference" is the plain version, which holds
        six such tensors per relation for backward.
    """

    relation_heads: int = 48
    teacher_layer: int | None = None
    student_layer: int | None = None
    relations: list[str] | dict[str, float] = field(default_factory=lambda: ["qq", "kk", "vv"])
    reduction: Literal["sum", "mean"] = "sum"
    kernel: Literal["blocked", "reference"] = "blocked"

    def relation_weights(self) -> dict[str, float]:
        weights = dict(self.relations) if isinstance(self.relations, dict) else dict.fromkeys(self.relations, 1.0)
        if self.reduction == "mean":
            return {relation: weight / len(weights) for relation, weight in weights.items()}
        return weights

    def problems(self, *, teacher: ModelShape, student: ModelShape, teacher_has_lm_head: bool) -> list[Problem]:
        problems = heads_problems("relation_heads", self.relation_heads, teacher=teacher, student=student)
        problems += _layer_pair_problems(self, teacher=teacher, student=student)
        weights = self.relation_weights()
        bad = [r for r in weights if len(r) != 2 or not set(r) <= set(TENSOR_KINDS)]
        if not weights or bad or len(weights) != len(self.relations):
            message = "give distinct pairs of q, k, v such as [qq, kk, vv] or {qk: 1.0, vv: 0.5}"
            problems.append(Problem("relations", self.relations, message))
        if any(weight < 0 for weight in weights.values()):
            problems.append(Problem("relations", self.relations, "relation weights must be >= 0"))
        return problems

    def build(self, *, teacher: ModelShape, student: ModelShape) -> MiniLMv2:
        return MiniLMv2(
            self.teacher_layer or teacher.layers,
            self.student_layer or student.layers,
            self.relation_weights(),
            self.relation_heads,
            self.kernel,
        )


class MiniLM(Objective):
    """MiniLMv1: KL of the attention distributions per head, plus the value relation KL."""

    def __init__(self, teacher_layer: int, student_layer: int, heads: int, value_relation: bool):
        letters = "qkv" if value_relation else "qk"
        super().__init__(_taps(letters, teacher_layer), _taps(letters, student_layer))
        self.letters = letters
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.heads = heads

    def forward(self, step: StepTensors) -> Loss:
        student = self._by_letter(step.student, self.student_layer)
        teacher = self._by_letter(step.teacher, self.teacher_layer)
        mask = step.attention_mask
        parts = {
            "attention": attention_kl(
                student_query=student["q"], student_key=student["k"], teacher_query=teacher["q"],
                teacher_key=teacher["k"], attention_mask=mask, heads=self.heads,
            )
        }
        if "v" in self.letters:
            parts["value"] = attention_relation_kl(
                student=student["v"], teacher=teacher["v"], attention_mask=mask, relation_heads=self.heads
            )
        return Loss(total=sum(parts.values()), parts=parts)

    def _by_letter(self, tensors: dict[Tap, Tensor], layer: int) -> dict[str, Tensor]:
        return {letter: tensors[Tap(TENSOR_KINDS[letter], layer)] for letter in self.letters}


def common_heads_problems(
    heads: int | None, objective: str, *, teacher: ModelShape, student: ModelShape
) -> list[Problem]:
    """Per-head attention losses need one head count for both models."""
    if heads is not None:
        return heads_problems("heads", heads, teacher=teacher, student=student)
    if teacher.heads != student.heads:
        return [
            Problem(
                "heads",
                None,
                f"{objective} compares attention heads one to one, but the teacher has {teacher.heads} heads and "
                f"the student {student.heads}; set heads to a number dividing both widths "
                f"({teacher.hidden}, {student.hidden}) or use minilmv2",
            )
        ]
    return []


@OBJECTIVES.register("minilm")
@dataclass
class MiniLMOptions(ObjectiveOptions):
    """`minilm`: MiniLMv1 deep self-attention distillation.

    teacher_layer: the teacher block compared (default: the last).
    student_layer: the student block compared (default: the last).
    heads: heads to split Q/K/V into; default the models' common head count (an error
        when the counts differ: then give a number dividing both widths).
    value_relation: add the value-relation KL, softmax(V V^T / sqrt(d_h)).
    """

    teacher_layer: int | None = None
    student_layer: int | None = None
    heads: int | None = None
    value_relation: bool = True

    def problems(self, *, teacher: ModelShape, student: ModelShape, teacher_has_lm_head: bool) -> list[Problem]:
        heads = common_heads_problems(self.heads, "minilm", teacher=teacher, student=student)
        return heads + _layer_pair_problems(self, teacher=teacher, student=student)

    def build(self, *, teacher: ModelShape, student: ModelShape) -> MiniLM:
        return MiniLM(
            self.teacher_layer or teacher.layers,
            self.student_layer or student.layers,
            self.heads or teacher.heads,
            self.value_relation,
        )


class DirectMiniLM(Objective):
    """Mean over X in `tensors` of MSE(W_X X_S, X_T), X a Q/K/V projection output."""

    def __init__(
        self,
        teacher_layer: int,
        student_layer: int,
        tensors: list[str],
        *,
        student_width: int,
        teacher_width: int,
        projection_mode: str,
    ):
        super().__init__(_taps(tensors, teacher_layer), _taps(tensors, student_layer))
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.projections = nn.ModuleDict(
            {
                letter: projection(student_width=student_width, teacher_width=teacher_width, mode=projection_mode)
                for letter in tensors
            }
        )

    def forward(self, step: StepTensors) -> Loss:
        parts = {
            letter: hidden_mse(
                student=project(step.student[Tap(TENSOR_KINDS[letter], self.student_layer)]),
                teacher=step.teacher[Tap(TENSOR_KINDS[letter], self.teacher_layer)],
                attention_mask=step.attention_mask,
            )
            for letter, project in self.projections.items()
        }
        return Loss(total=torch.stack(list(parts.values())).mean(), parts=parts)


@OBJECTIVES.register("direct-minilm")
@dataclass
class DirectMiniLMOptions(ObjectiveOptions):
    """`direct-minilm`: MSE between learned projections of the student's Q/K/V and the teacher's.

    teacher_layer: the teacher block compared (default: the last).
    student_layer: the student block compared (default: the last).
    tensors: which projections, among q, k, v.
    projection: "auto" (a linear map when widths differ), "always" or "never".
    """

    teacher_layer: int | None = None
    student_layer: int | None = None
    tensors: list[str] = field(default_factory=lambda: ["q", "k", "v"])
    projection: ProjectionMode = "auto"

    def problems(self, *, teacher: ModelShape, student: ModelShape, teacher_has_lm_head: bool) -> list[Problem]:
        problems = _layer_pair_problems(self, teacher=teacher, student=student)
        problems += projection_problems(self.projection, student=student, teacher=teacher)
        distinct = set(self.tensors)
        if not distinct or not distinct <= set(TENSOR_KINDS) or len(distinct) != len(self.tensors):
            problems.append(Problem("tensors", self.tensors, "give distinct letters among q, k, v, e.g. [q, k, v]"))
        return problems

    def build(self, *, teacher: ModelShape, student: ModelShape) -> DirectMiniLM:
        return DirectMiniLM(
            self.teacher_layer or teacher.layers,
            self.student_layer or student.layers,
            list(self.tensors),
            student_width=student.hidden,
            teacher_width=teacher.hidden,
            projection_mode=self.projection,
        )
