"""Sentence-embedding transfer: the student's pooled last hidden state matches the teacher's.

For teachers whose product is a sentence embedding (sentence-transformers models such as
all-MiniLM-L6-v2), token-level HS leaves the pooled vector, which is what users compare,
matched only indirectly. This objective matches it directly, by direction (1 - cos per
text) and by the similarity structure of the batch (MSE between the two B x B cosine
matrices), which is what neighbour search and similarity ranking read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from tadistill.arch import ModelShape
from tadistill.errors import Problem
from tadistill.losses import in_fp32
from tadistill.objectives.base import (
    OBJECTIVES,
    Loss,
    Objective,
    ObjectiveOptions,
    ProjectionMode,
    StepTensors,
    layer_problems,
    projection,
    projection_problems,
)
from tadistill.taps import Tap


def pooled(hidden: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """(B, n, d) -> (B, d): the mean over real tokens, or the first token's state."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype)[:, :, None]  # (B, n, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


@in_fp32
def sentence_losses(*, student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Mean 1 - cos of paired (B, d) embeddings, and the MSE between their B x B cosine
    matrices off the diagonal (0 for a batch of one)."""
    unit_student, unit_teacher = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    cosine = 1 - (unit_student * unit_teacher).sum(-1).mean()
    batch = student.shape[0]
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=student.device)  # (B, B)
    difference = unit_student @ unit_student.T - unit_teacher @ unit_teacher.T  # (B, B)
    similarity = difference[off_diagonal].pow(2).sum() / max(batch * (batch - 1), 1)
    return cosine, similarity


class SentenceEmbedding(Objective):
    def __init__(self, teacher_layer: int, student_layer: int, pooling: str, similarity_weight: float,
                 *, student_width: int, teacher_width: int, projection_mode: str):
        super().__init__({Tap("hidden", teacher_layer)}, {Tap("hidden", student_layer)})
        self.teacher_tap, self.student_tap = Tap("hidden", teacher_layer), Tap("hidden", student_layer)
        self.pooling = pooling
        self.similarity_weight = similarity_weight
        self.projection = projection(student_width=student_width, teacher_width=teacher_width, mode=projection_mode)

    def forward(self, step: StepTensors) -> Loss:
        mask = step.attention_mask
        student = pooled(self.projection(step.student[self.student_tap]), mask, self.pooling)  # (B, d_T)
        teacher = pooled(step.teacher[self.teacher_tap], mask, self.pooling)  # (B, d_T)
        cosine, similarity = sentence_losses(student=student, teacher=teacher)
        return Loss(total=cosine + self.similarity_weight * similarity, parts={"cosine": cosine, "similarity": similarity})


@OBJECTIVES.register("sentence")
@dataclass
class SentenceEmbeddingOptions(ObjectiveOptions):
    """`sentence`: the pooled sentence embedding, by direction and by the batch's similarities.

    pooling: "mean" over real tokens (sentence-transformers' default) or "cls" (first token).
    similarity_weight: weight of the MSE between the student's and the teacher's B x B cosine
        matrices (0 matches directions only).
    teacher_layer: the teacher block pooled (default: the last).
    student_layer: the student block pooled (default: the last).
    projection: "auto" (a linear map when widths differ), "always" or "never".
    """

    pooling: Literal["mean", "cls"] = "mean"
    similarity_weight: float = 1.0
    teacher_layer: int | None = None
    student_layer: int | None = None
    projection: ProjectionMode = "auto"

    def problems(self, *, teacher: ModelShape, student: ModelShape, teacher_has_lm_head: bool) -> list[Problem]:
        problems = [
            *layer_problems("teacher_layer", self.teacher_layer, teacher, "teacher"),
            *layer_problems("student_layer", self.student_layer, student, "student"),
            *projection_problems(self.projection, student=student, teacher=teacher),
        ]
        if self.similarity_weight < 0:
            problems.append(Problem("similarity_weight", self.similarity_weight, "must be >= 0"))
        return problems

    def build(self, *, teacher: ModelShape, student: ModelShape) -> SentenceEmbedding:
        return SentenceEmbedding(
            self.teacher_layer or teacher.layers,
            self.student_layer or student.layers,
            self.pooling,
            self.similarity_weight,
            student_width=student.hidden,
            teacher_width=teacher.hidden,
            projection_mode=self.projection,
        )
