"""TinyBERT general distillation: attention-score MSE + hidden-state MSE + embedding MSE on a mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from tadistill.arch import ModelShape
from tadistill.errors import ModelError, Problem
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
from tadistill.score_mse import tapped_score_mse
from tadistill.taps import Tap


def _attention_taps(layers, kernel: str) -> set[Tap]:
    """The models' own scores for kernel "scores"; otherwise the Q/K the loss forms them from."""
    kinds = ("scores",) if kernel == "scores" else ("query", "key")
    return {Tap(kind, layer) for layer in layers for kind in kinds}


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
        teacher_taps = hidden.teacher_taps | _attention_taps((t for _, ts in layer_pairs for t in ts), kernel)
        student_taps = hidden.student_taps | _attention_taps((s for s, _ in layer_pairs), kernel)
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
        per_student_layer = [
            torch.stack([self._score_mse(step, student_layer, t) for t in teacher_layers]).mean()
            for student_layer, teacher_layers in self.layer_pairs
        ]
        stacked = torch.stack(per_student_layer)
        return stacked.sum() if self.reduction == "sum" else stacked.mean()

    def _score_mse(self, step: StepTensors, student_layer: int, teacher_layer: int) -> Tensor:
        if self.kernel == "scores":  # (B, A, n, n) each
            student, teacher = step.student[Tap("scores", student_layer)], step.teacher[Tap("scores", teacher_layer)]
            if not student.shape[1] == teacher.shape[1] == self.heads:
                raise ModelError(f"tinybert kernel 'scores' needs {self.heads} heads in both models, got "
                                 f"{student.shape[1]} (student) and {teacher.shape[1]} (teacher); use kernel fused")
            return tapped_score_mse(student, teacher, step.attention_mask)
        return attention_score_mse(
            student_query=step.student[Tap("query", student_layer)], student_key=step.student[Tap("key", student_layer)],
            teacher_query=step.teacher[Tap("query", teacher_layer)], teacher_key=step.teacher[Tap("key", teacher_layer)],
            attention_mask=step.attention_mask, heads=self.heads, kernel=self.kernel,
        )


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
        "scores" reads the models' own scores (`scores` taps: on the matmul attention kernel,
        `train.attention`, no product is formed a second time; on others they are formed from
        Q/K), which needs `heads` to be both models' head count; "fused" forms them from Q/K,
        the whole batch with a closed-form backward, its products in the taps' dtype;
        "reference" plain autograd in fp32; "blocked" a sequence at a time on its real tokens
        in fp32, keeping no (B, A, n, n) tensor. "auto" is "scores" where both models run the
        matmul kernel and `heads` is their head count, else "fused".
    """

    mapping: str = "uniform"
    pairs: list[list[int]] | None = None
    heads: int | None = None
    embeddings: bool = True
    projection: ProjectionMode = "auto"
    projection_sharing: ProjectionSharing = "shared"
    reduction: Literal["sum", "mean"] = "sum"
    kernel: Literal["auto", "scores", "fused", "reference", "blocked"] = "auto"

    def problems(self, *, teacher: ModelShape, student: ModelShape, teacher_has_lm_head: bool) -> list[Problem]:
        return (
            mapping_problems(self.mapping, self.pairs, teacher=teacher, student=student)
            + common_heads_problems(self.heads, "tinybert", teacher=teacher, student=student)
            + projection_problems(self.projection, student=student, teacher=teacher)
            + self._kernel_problems(teacher=teacher, student=student)
        )

    def _on_the_models_heads(self, *, teacher: ModelShape, student: ModelShape) -> bool:
        """Whether `heads` is both models' head count, as the models' own scores have it."""
        return (self.heads or teacher.heads) == teacher.heads == student.heads

    def _kernel_problems(self, *, teacher: ModelShape, student: ModelShape) -> list[Problem]:
        if self.kernel != "scores" or self._on_the_models_heads(teacher=teacher, student=student):
            return []
        return [Problem("kernel", "scores", f"reads the models' own attention scores, of {teacher.heads} teacher "
                        f"and {student.heads} student heads, not heads {self.heads or teacher.heads}; use kernel fused")]

    def _resolved_kernel(self, *, teacher: ModelShape, student: ModelShape) -> str:
        """auto: "scores" where both kernels hand their scores over (elsewhere the taps would form
        them from Q/K, a little slower than "fused" on a CPU), else "fused"."""
        if self.kernel != "auto":
            return self.kernel
        hand_over = teacher.kernel_scores and student.kernel_scores
        return "scores" if hand_over and self._on_the_models_heads(teacher=teacher, student=student) else "fused"

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
            kernel=self._resolved_kernel(teacher=teacher, student=student),
        )
