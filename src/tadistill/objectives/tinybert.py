"""TinyBERT general distillation: attention-score MSE + hidden-state MSE + embedding MSE on a mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from tadistill.arch import ModelShape
from tadistill.errors import Problem
from tadistill.losses import attention_score_mse
from tadistill.mapping import LayerMap, layer_map
from tadistill.objectives.attention import common_heads_problems
from tadistill.objectives.base import (
    OBJECTIVES,
    Loss,
    Objective,
    ObjectiveOptions,
    ProjectionMode,
    ProjectionSharing,
    StepTensors,
    mapping_problems,
    projection_problems,
)
from tadistill.objectives.hidden import HiddenStates
from tadistill.taps import Tap


def _query_key_taps(layers) -> set[Tap]:
    return {Tap(kind, layer) for layer in layers for kind in ("query", "key")}


class TinyBERT(Objective):
    """Sum of: attention-score MSE and hidden MSE, each summed (`reduction` "sum", the paper)
    or averaged ("mean") over the mapped student layers, and the MSE of the (projected)
    embedding outputs when `embeddings` is set. A student layer mapped to several teacher
    layers contributes the mean over them, as in `hs`."""

    def __init__(
        self,
        layer_pairs: LayerMap,
        heads: int,
        embeddings: bool,
        reduction: str,
        *,
        student_width: int,
        teacher_width: int,
        projection_mode: str,
        projection_sharing: str,
        kernel: str = "fused",
    ):
        widths = {"student_width": student_width, "teacher_width": teacher_width, "projection_mode": projection_mode}
        hidden = HiddenStates(layer_pairs, "mse", reduction=reduction, projection_sharing=projection_sharing, **widths)
        teacher_taps = hidden.teacher_taps | _query_key_taps(t for _, ts in layer_pairs for t in ts)
        student_taps = hidden.student_taps | _query_key_taps(s for s, _ in layer_pairs)
        embedding = None
        if embeddings:
            embedding = HiddenStates([(0, (0,))], "mse", **widths)
            teacher_taps, student_taps = teacher_taps | embedding.teacher_taps, student_taps | embedding.student_taps
        super().__init__(teacher_taps, student_taps)
        self.layer_pairs = layer_pairs
        self.heads = heads
        self.reduction = reduction
        self.kernel = kernel
        self.hidden = hidden
        self.embedding = embedding

    def forward(self, step: StepTensors) -> Loss:
        parts = {"attention": self._attention_loss(step), "hidden": self.hidden(step).total}
        if self.embedding is not None:
            parts["embeddings"] = self.embedding(step).total
        return Loss(total=sum(parts.values()), parts=parts)

    def _attention_loss(self, step: StepTensors) -> Tensor:
        per_student_layer = []
        for student_layer, teacher_layers in self.layer_pairs:
            student_q, student_k = step.student[Tap("query", student_layer)], step.student[Tap("key", student_layer)]
            losses = [
                attention_score_mse(
                    student_query=student_q, student_key=student_k, teacher_query=step.teacher[Tap("query", t)],
                    teacher_key=step.teacher[Tap("key", t)], attention_mask=step.attention_mask, heads=self.heads,
                    kernel=self.kernel,
                )
                for t in teacher_layers
            ]
            per_student_layer.append(torch.stack(losses).mean())
        stacked = torch.stack(per_student_layer)
        return stacked.sum() if self.reduction == "sum" else stacked.mean()


@OBJECTIVES.register("tinybert")
@dataclass
class TinyBERTOptions(ObjectiveOptions):
    """`tinybert`: TinyBERT general distillation (transformer-layer and embedding losses).

    mapping: layer mapping strategy, as for `hs` (TinyBERT: uniform).
    pairs: [[student_layer, teacher_layer], ...] for mapping "explicit".
    heads: heads to split Q/K into; default the models' common head count (an error when
        the counts differ: then give a number dividing both widths).
    embeddings: add the embedding-output MSE.
    projection: as for `hs`; TinyBERT learns W_h when widths differ ("auto").
    projection_sharing: "shared" (one W_h for every hidden layer, TinyBERT), or "pair" /
        "student-layer" as for `hs`; the embeddings always have their own W_e.
    reduction: "sum" adds the attention and the hidden losses over the mapped layers
        (TinyBERT), "mean" averages them (tadistill's earlier default).
    kernel: how the attention-score MSE is computed, the same loss each way (tadistill.score_mse):
        "fused" the whole batch with a closed-form backward, its products in the taps' dtype
        (the fastest measured); "reference" plain autograd in fp32; "blocked" a sequence at a
        time on its real tokens in fp32, keeping no (B, A, n, n) tensor.
    """

    mapping: str = "uniform"
    pairs: list[list[int]] | None = None
    heads: int | None = None
    embeddings: bool = True
    projection: ProjectionMode = "auto"
    projection_sharing: ProjectionSharing = "shared"
    reduction: Literal["sum", "mean"] = "sum"
    kernel: Literal["fused", "reference", "blocked"] = "fused"

    def problems(self, *, teacher: ModelShape, student: ModelShape, teacher_has_lm_head: bool) -> list[Problem]:
        return (
            mapping_problems(self.mapping, self.pairs, teacher=teacher, student=student)
            + common_heads_problems(self.heads, "tinybert", teacher=teacher, student=student)
            + projection_problems(self.projection, student=student, teacher=teacher)
        )

    def build(self, *, teacher: ModelShape, student: ModelShape) -> TinyBERT:
        return TinyBERT(
            layer_map(self.mapping, student.layers, teacher.layers, self.pairs),
            self.heads or teacher.heads,
            self.embeddings,
            self.reduction,
            student_width=student.hidden,
            teacher_width=teacher.hidden,
            projection_mode=self.projection,
            projection_sharing=self.projection_sharing,
            kernel=self.kernel,
        )
