"""The fused OD losses (tempered KL + hard MLM cross-entropy in one pass over row blocks)
against plain references written here: values and gradients to 1e-6 in fp32, with ignored
labels, temperatures 1 and 2, blocks smaller than the batch, no rows at all, bf16 logits."""

from __future__ import annotations

import pytest
import torch

from tadistill import output_kl


def plain(student, teacher, labels, temperature):
    """T^2 mean_rows sum_v p_t (log p_t - log p_s) and mean over labelled rows of -log p_s[y]."""
    log_p = torch.log_softmax(teacher / temperature, -1)
    log_q = torch.log_softmax(student / temperature, -1)
    kl = temperature**2 * (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    rows = [i for i in range(len(labels)) if labels[i] != -100]
    ce = torch.stack([-torch.log_softmax(student[i], -1)[labels[i]] for i in rows]).mean()
    return kl, ce


def logits(seed, rows=9, vocab=37):
    g = torch.Generator().manual_seed(seed)
    student = (3 * torch.randn(rows, vocab, generator=g)).requires_grad_()
    teacher = 3 * torch.randn(rows, vocab, generator=g)
    labels = torch.randint(0, vocab, (rows,), generator=g)
    labels[::3] = -100
    return student, teacher, labels


@pytest.mark.parametrize("temperature", [1.0, 2.0, 1.5])  # 1.5: not a power of two, scaled in fp32
@pytest.mark.parametrize("block_bytes", [2**20, 37 * 4 * 2])  # one block; two rows a block
def test_fused_output_losses_equal_the_plain_ones(temperature, block_bytes, monkeypatch):
    monkeypatch.setitem(output_kl.BLOCK_BYTES, "cpu", block_bytes)
    student, teacher, labels = logits(0)
    kl, ce = output_kl.output_losses(student, teacher, labels, temperature)
    ref_kl, ref_ce = plain(student, teacher, labels, temperature)
    assert torch.allclose(kl, ref_kl, atol=1e-6, rtol=1e-6) and torch.allclose(ce, ref_ce, atol=1e-6, rtol=1e-6)
    for weights in ((1.0, 0.0), (0.0, 1.0), (0.7, 0.4)):
        (got,) = torch.autograd.grad(weights[0] * kl + weights[1] * ce, student, retain_graph=True)
        (expected,) = torch.autograd.grad(weights[0] * ref_kl + weights[1] * ref_ce, student, retain_graph=True)
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)


def test_without_labels_the_cross_entropy_is_zero_and_the_kl_unchanged():
    student, teacher, labels = logits(1)
    kl, ce = output_kl.output_losses(student, teacher, None, 2.0)
    assert ce.item() == 0.0
    assert torch.allclose(kl, plain(student, teacher, labels, 2.0)[0], atol=1e-6)


def test_no_rows_and_no_labelled_rows_give_zero_with_a_graph():
    student = torch.zeros(0, 11, requires_grad=True)
    kl, ce = output_kl.output_losses(student, torch.zeros(0, 11), torch.zeros(0, dtype=torch.long), 2.0)
    assert kl.item() == 0.0 and ce.item() == 0.0 and kl.requires_grad
    student, teacher, _ = logits(2)
    kl, ce = output_kl.output_losses(student, teacher, torch.full((9,), -100), 1.0)
    (grad,) = torch.autograd.grad(ce, student)
    assert ce.item() == 0.0 and grad.abs().max() == 0


def test_bf16_logits_are_computed_in_fp32_blocks_and_get_a_bf16_gradient():
    student, teacher, labels = logits(3)
    student_bf16 = student.detach().bfloat16().requires_grad_()
    kl, ce = output_kl.output_losses(student_bf16, teacher.bfloat16(), labels, 2.0)
    ref_kl, ref_ce = plain(student_bf16.detach().float(), teacher.bfloat16().float(), labels, 2.0)
    assert kl.dtype == torch.float32 and torch.allclose(kl, ref_kl, atol=1e-5) and torch.allclose(ce, ref_ce, atol=1e-5)
    (kl + ce).backward()
    assert student_bf16.grad.dtype == torch.bfloat16 and student_bf16.grad.abs().sum() > 0


def test_a_teacher_that_requires_grad_is_refused():
    student, teacher, labels = logits(4)
    with pytest.raises(ValueError, match="frozen teacher"):
        output_kl.output_losses(student, teacher.requires_grad_(), labels, 1.0)


def test_the_od_objective_gives_the_same_losses_with_either_kernel():
    from tadistill.arch import ModelShape
    from tadistill.config import ObjectiveConfig
    from tadistill.objectives import build_objectives
    from tadistill.objectives.base import StepTensors
    from tadistill.taps import Tap

    shape = ModelShape(2, 8, 2, 16, 37)
    student, teacher, labels = logits(5)
    hidden = torch.randn(1, 9, 8)
    results = {}
    for kernel in ("fused", "reference"):
        options = {"alpha_mlm": 0.4, "temperature": 2.0, "kernel": kernel}
        (objective,) = build_objectives([ObjectiveConfig("od", 1.0, options)], teacher=shape, student=shape).objectives
        step = StepTensors(student={Tap("hidden", 2): hidden}, teacher={Tap("hidden", 2): hidden},
                           attention_mask=torch.ones(1, 9), student_logits=student, teacher_logits=teacher,
                           logit_labels=labels)
        loss = objective(step)
        results[kernel] = (loss.parts, torch.autograd.grad(loss.total, student)[0])
    for name in ("kl", "mlm"):
        assert torch.allclose(results["fused"][0][name], results["reference"][0][name], atol=1e-6)
    assert torch.allclose(results["fused"][1], results["reference"][1], atol=1e-6, rtol=1e-5)


def test_without_grad_mode_the_losses_are_the_same_and_no_gradient_is_kept():
    student, teacher, labels = logits(6)
    with torch.no_grad():
        kl, ce = output_kl.output_losses(student, teacher, labels, 2.0)
    ref_kl, ref_ce = plain(student.detach(), teacher, labels, 2.0)
    assert not kl.requires_grad and torch.allclose(kl, ref_kl, atol=1e-6) and torch.allclose(ce, ref_ce, atol=1e-6)


def test_bf16_gradient_is_the_fp32_gradient_to_bf16_rounding():
    """The KL's gradient is formed in forward and kept in bf16, then scaled and added to the
    cross-entropy's in fp32: a rounding of the KL's part and one of the sum, each a relative
    2^-8 at most, against the fp32 reference of the same bf16 values."""
    student, teacher, labels = logits(7, rows=40, vocab=300)
    student_bf16 = student.detach().bfloat16().requires_grad_()
    kl, ce = output_kl.output_losses(student_bf16, teacher.bfloat16(), labels, 2.0)
    (0.7 * kl + 0.4 * ce).backward()
    reference = student_bf16.detach().float().requires_grad_()
    ref_kl, ref_ce = plain(reference, teacher.bfloat16().float(), labels, 2.0)
    (kl_part,) = torch.autograd.grad(0.7 * ref_kl, reference, retain_graph=True)
    (0.7 * ref_kl + 0.4 * ref_ce).backward()
    error = (student_bf16.grad.float() - reference.grad).abs()
    assert torch.all(error <= 2**-8 * (reference.grad.abs() + kl_part.abs()) + 1e-9)
