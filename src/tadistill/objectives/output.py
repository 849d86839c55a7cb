"""Output distribution (OD) transfer: the student matches the teacher's masked-LM distribution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tadistill.arch import ModelShape
from tadistill.errors import Problem
from tadistill.losses import hidden_cosine, masked_lm_cross_entropy, output_kl
from tadistill.objectives.base import OBJECTIVES, Loss, Objective, ObjectiveOptions, StepTensors, projection
from tadistill.output_kl import output_losses
from tadistill.taps import Tap


class OutputDistribution(Objective):
    """KL of the tempered output distributions, plus optional hard MLM and last-layer cosine losses."""

    def __init__(
        self,
        temperature: float,
        alpha_mlm: float,
        alpha_cos: float,
        positions: str,
        mask_input: bool,
        kernel: str = "fused",
        *,
        teacher: ModelShape,
        student: ModelShape,
    ):
        teacher_last, student_last = Tap("hidden", teacher.layers), Tap("hidden", student.layers)
        super().__init__(
            {teacher_last},
            {student_last},
            logit_positions=positions,
            # DistilBERT masks the input whatever the positions; mask_input false (checked to
            # go with positions "all" and no hard MLM loss) learns from plain text
            needs_mlm=mask_input,
        )
        self.teacher_last, self.student_last = teacher_last, student_last
        self.temperature = temperature
        self.alpha_mlm = alpha_mlm
        self.alpha_cos = alpha_cos
        self.kernel = kernel
        self.projection = (
            projection(student_width=student.hidden, teacher_width=teacher.hidden, mode="auto") if alpha_cos > 0 else None
        )

    def forward(self, step: StepTensors) -> Loss:
        # the engine computed the logits at the selected positions only: no mask left to apply
        parts = self._output_losses(step)
        total = parts["kl"] + self.alpha_mlm * parts["mlm"] if "mlm" in parts else parts["kl"]
        if self.alpha_cos > 0:
            student_last = self.projection(step.student[self.student_last])
            parts["cos"] = hidden_cosine(
                student=student_last, teacher=step.teacher[self.teacher_last], attention_mask=step.attention_mask
            )
            total = total + self.alpha_cos * parts["cos"]
        return Loss(total=total, parts=parts)

    def _output_losses(self, step: StepTensors) -> dict:
        student, teacher, labels = step.student_logits, step.teacher_logits, step.logit_labels
        if self.kernel == "fused":
            kl, mlm = output_losses(student, teacher, labels if self.alpha_mlm > 0 else None, self.temperature)
            return {"kl": kl, "mlm": mlm} if self.alpha_mlm > 0 else {"kl": kl}
        parts = {"kl": output_kl(student=student, teacher=teacher, mask=None, temperature=self.temperature)}
        if self.alpha_mlm > 0:
            parts["mlm"] = masked_lm_cross_entropy(student, labels)
        return parts


@OBJECTIVES.register("od")
@dataclass
class OutputDistributionOptions(ObjectiveOptions):
    """`od`: T^2 KL(teacher || student) of softmax(logits / T), DistilBERT-style.

    temperature: softmax temperature T (DistilBERT: 2).
    alpha_mlm: weight of the hard MLM cross-entropy on the labels (DistilBERT: 2/5 of the KL's).
    alpha_cos: weight of 1 - cos between last hidden states; a learned projection maps the
        student width to the teacher's when they differ (DistilBERT: 1/5 of the KL's).
    positions: "all" averages the KL over every real token (DistilBERT), "masked" over the
        MLM-masked positions only.
    mask_input: MLM-mask the input (DistilBERT); false learns from plain text, which needs
        positions "all" and alpha_mlm 0.
    kernel: "fused" computes the KL and the hard MLM loss in one pass over blocks of rows, in
        fp32 blocks of the logits as they come, with a closed-form backward (tadistill.output_kl);
        "reference" is the plain fp32 version holding (N, V) softmaxes. The same loss either way.
    The objective's own weight scales the whole (DistilBERT's alpha_ce).
    """

    temperature: float = 2.0
    alpha_mlm: float = 0.0
    alpha_cos: float = 0.0
    positions: Literal["masked", "all"] = "all"
    mask_input: bool = True
    kernel: Literal["fused", "reference"] = "fused"

    def problems(self, *, teacher: ModelShape, student: ModelShape, teacher_has_lm_head: bool) -> list[Problem]:
        problems = []
        if self.temperature <= 0:
            problems.append(Problem("temperature", self.temperature, "must be > 0"))
        for key in ("alpha_mlm", "alpha_cos"):
            if getattr(self, key) < 0:
                problems.append(Problem(key, getattr(self, key), "must be >= 0"))
        if not self.mask_input and (self.positions == "masked" or self.alpha_mlm > 0):
            problems.append(
                Problem("mask_input", False, "positions 'masked' and alpha_mlm > 0 need masked input; "
                        "use positions 'all' and alpha_mlm 0 to learn from plain text")
            )
        if not teacher_has_lm_head:
            problems.append(
                Problem("name", "od", "needs the teacher's masked-LM head, and the teacher has none; "
                        "load a *ForMaskedLM checkpoint or use hs/minilmv2")
            )
        return problems

    def build(self, *, teacher: ModelShape, student: ModelShape) -> OutputDistribution:
        return OutputDistribution(
            self.temperature, self.alpha_mlm, self.alpha_cos, self.positions, self.mask_input, self.kernel,
            teacher=teacher, student=student,
        )
