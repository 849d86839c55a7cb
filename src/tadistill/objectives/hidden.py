"""Hidden-state (HS) transfer on a layer mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from tadistill.arch import ModelShape
from tadistill.errors import Problem
from tadistill.losses import hidden_cosine, hidden_mse
from tadistill.mapping import LayerMap, layer_map
from tadistill.objectives.base import (
    OBJECTIVES,
    Loss,
    Objective,
    ObjectiveOptions,
    ProjectionMode,
    ProjectionSharing,
    StepTensors,
    mapping_problems,
    projection,
    projection_problems,
)
from tadistill.taps import Tap

HIDDEN_LOSSES = {"mse": hidden_mse, "cosine": hidden_cosine}


class HiddenStates(Objective):
    """loss(W h_S^s, h_T^t) per mapped pair: averaged over each student layer's teacher
    layers (1-to-N maps), then averaged (`reduction` "mean") or summed ("sum") over student layers.

    `projection_sharing` "pair" gives every (s, t) pair its own W; "student-layer" shares one
    W_s among a student layer's teacher layers, which then regresses W_s h_S^s onto their
    mean: sum_j ||W h - a_j||^2 = N ||W h - mean_j a_j||^2 + a term without W; "shared" is
    one W for every pair (TinyBERT's single W_h).
    """

    def __init__(
        self,
        layer_pairs: LayerMap,
        loss: str,
        *,
        student_width: int,
        teacher_width: int,
        projection_mode: str,
        projection_sharing: str = "pair",
        reduction: str = "mean",
    ):
        super().__init__(
            {Tap("hidden", t) for _, teacher_layers in layer_pairs for t in teacher_layers},
            {Tap("hidden", s) for s, _ in layer_pairs},
        )
        self.layer_pairs = layer_pairs
        self.loss_name = loss
        self.projection_sharing = projection_sharing
        self.reduction = reduction
        # one map per pair, per student layer or in all; for one-to-one maps the first two agree
        counts = {"pair": sum(len(t) for _, t in layer_pairs), "student-layer": len(layer_pairs), "shared": 1}
        self.projections = nn.ModuleList(
            projection(student_width=student_width, teacher_width=teacher_width, mode=projection_mode)
            for _ in range(counts[projection_sharing])
        )

    def forward(self, step: StepTensors) -> Loss:
        loss_fn = HIDDEN_LOSSES[self.loss_name]
        projections = iter(self.projections)
        per_student_layer = []
        for student_layer, teacher_layers in self.layer_pairs:
            student = step.student[Tap("hidden", student_layer)]
            if self.projection_sharing == "pair":
                projected = [next(projections)(student) for _ in teacher_layers]
            elif self.projection_sharing == "student-layer":
                projected = [next(projections)(student)] * len(teacher_layers)
            else:
                projected = [self.projections[0](student)] * len(teacher_layers)
            losses = [
                loss_fn(student=s, teacher=step.teacher[Tap("hidden", t)], attention_mask=step.attention_mask)
                for s, t in zip(projected, teacher_layers)
            ]
            per_student_layer.append(torch.stack(losses).mean())
        stacked = torch.stack(per_student_layer)
        loss = stacked.sum() if self.reduction == "sum" else stacked.mean()
        return Loss(total=loss, parts={self.loss_name: loss})


@OBJECTIVES.register("hs")
@dataclass
class HiddenStatesOptions(ObjectiveOptions):
    """`hs`: hidden-state transfer.

    mapping: layer mapping strategy (see tadistill.mapping): last, uniform,
        uniform-consecutive, uniform+last, last-k, uniform+last-k, all, explicit.
    pairs: [[student_layer, teacher_layer], ...] for mapping "explicit".
    loss: "mse" (mean over tokens and features) or "cosine" (mean of 1 - cos over tokens).
    embeddings: also match the embedding outputs (layer 0 -> 0).
    projection: "auto" learns a linear map when the widths differ, "always" also when
        they are equal, "never" compares raw states (needs equal widths).
    projection_sharing: "pair" (one map per student/teacher layer pair, each pair its own
        loss term), "student-layer" (one map per student layer, shared by its teacher
        layers, which then amounts to regressing onto their mean) or "shared" (one map for
        every layer).
    """

    mapping: str = "last"
    pairs: list[list[int]] | None = None
    loss: Literal["mse", "cosine"] = "mse"
    embeddings: bool = False
    projection: ProjectionMode = "auto"
    projection_sharing: ProjectionSharing = "pair"

    def problems(self, *, teacher: ModelShape, student: ModelShape, teacher_has_lm_head: bool) -> list[Problem]:
        return mapping_problems(self.mapping, self.pairs, teacher=teacher, student=student) + projection_problems(
            self.projection, student=student, teacher=teacher
        )

    def build(self, *, teacher: ModelShape, student: ModelShape) -> HiddenStates:
        pairs = layer_map(self.mapping, student.layers, teacher.layers, self.pairs)
        if self.embeddings:
            pairs = [(0, (0,)), *pairs]
        return HiddenStates(
            pairs,
            self.loss,
            student_width=student.hidden,
            teacher_width=teacher.hidden,
            projection_mode=self.projection,
            projection_sharing=self.projection_sharing,
        )
