"""The forward core of one distillation step: teacher and student forwards, then the losses.

The objectives declare the tensors they read; from that the step derives the least work:
- the teacher runs under `no_grad` and stops as soon as its last tapped tensor is
  computed (a hook ends the forward, see `tadistill.taps`), so a MiniLMv2 step never runs
  the teacher's last FFN, nor the blocks above an upper-middle teacher layer;
- the student stops the same way: blocks past its last tapped tensor would get no gradient;
- LM heads run only for `od`, and only on the positions its loss reads (every real token by
  default; with `positions: masked` the masked 15%, which skips most of a 30k-vocabulary
  projection).
Mixed precision is the caller's (accelerate's autocast); the losses run in fp32.

`distill_losses` is the step as a function; `Distiller` holds what trains (student and
projections) as one module for accelerate/DDP and calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from tadistill.arch import adapter_for
from tadistill.errors import DataError, ModelError
from tadistill.losses import IGNORE_INDEX
from tadistill.objectives import Loss, Objectives, StepTensors
from tadistill.taps import Tap, forward_taps


def distill_losses(*, teacher: nn.Module, student: nn.Module, objectives: Objectives, batch: Mapping[str, Tensor]) -> Loss:
    """The total loss and every named loss (detached) of one micro-batch.

    `teacher` and `student` are *ForMaskedLM models (the teacher may be a base model when
    no objective reads logits); the teacher should be in eval mode and frozen. `batch` has
    input_ids and attention_mask, and labels (-100 on unmasked positions) when the
    objectives need MLM masking.
    """
    logit_mask = logit_positions(objectives.logit_positions, batch)  # (B, n) bool or None
    teacher_tensors, teacher_logits = teacher_forward(teacher, objectives.teacher_taps, batch, logit_mask)
    student_tensors = forward_taps(student, objectives.student_taps, batch)
    step = StepTensors(
        teacher=teacher_tensors,
        student=student_tensors,
        attention_mask=batch["attention_mask"],
        teacher_logits=teacher_logits,
        student_logits=selected_logits(student, student_tensors, logit_mask),
        logit_labels=batch["labels"][logit_mask] if logit_mask is not None and "labels" in batch else None,
    )
    return objectives(step)


class Distiller(nn.Module):
    """What trains, in one module: the student and the objectives' projections.

    accelerate prepares (and DDP wraps) this module, so the student's forward runs inside
    DDP's forward, which syncs gradients and finds the parameters an early stop left
    unused. The teacher is an argument, not a submodule: it is neither trained nor saved.
    """

    def __init__(self, student: nn.Module, objectives: Objectives):
        super().__init__()
        self.student = student
        self.objectives = objectives

    def forward(self, teacher: nn.Module, batch: Mapping[str, Tensor]) -> Loss:
        return distill_losses(teacher=teacher, student=self.student, objectives=self.objectives, batch=batch)


def teacher_forward(teacher: nn.Module, taps: Iterable[Tap], batch: Mapping[str, Tensor],
                    logit_mask: Tensor | None) -> tuple[dict[Tap, Tensor], Tensor | None]:
    """The teacher's `taps` and its logits at `logit_mask` ((N, V) or None), without grad.

    `no_grad` rather than `inference_mode`: inference tensors cannot be saved for backward, so
    the losses would need copies of them, and od's (N, V) teacher logits are the step's
    largest tensor (3,000 x 30,522 is 370 MB in fp32).
    """
    with torch.no_grad():
        tensors = forward_taps(teacher, taps, batch)
        return tensors, selected_logits(teacher, tensors, logit_mask)


def logit_positions(positions: str | None, batch: Mapping[str, Tensor]) -> Tensor | None:
    """(B, n) bool: where the logits are computed; None when no objective reads them."""
    if positions is None:
        return None
    if positions == "all":
        return batch["attention_mask"].bool()
    if "labels" not in batch:
        raise DataError(
            "objective 'od' reads the masked positions but the batch has no labels: "
            "MLM masking must be on when objectives.needs_mlm is true"
        )
    return batch["labels"] != IGNORE_INDEX


def selected_logits(model: nn.Module, tensors: dict[Tap, Tensor], logit_mask: Tensor | None) -> Tensor | None:
    """The LM head applied to the last hidden state at the selected positions only: (N, V)."""
    if logit_mask is None:
        return None
    adapter = adapter_for(model)
    head = adapter.lm_head_module(model)
    if head is None:
        raise ModelError(
            f"{type(model).__name__} has no masked-LM head but objective 'od' needs logits; "
            "load the model with AutoModelForMaskedLM or drop od"
        )
    last_hidden = tensors[Tap("hidden", adapter.shape(model.config).layers)]  # (B, n, d)
    return head(last_hidden[logit_mask])  # (N, V)

