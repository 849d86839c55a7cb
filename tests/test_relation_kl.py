"""The blocked relation KL (MiniLMv2's loss without its (B, A_r, n, n) tensors) against the
plain loss written out here: value and gradients to 1e-6 in fp32, with padding, an
all-padding sequence, a fully masked batch, cross relations, unequal widths and chunks
smaller than the batch."""

from __future__ import annotations

import math

import pytest
import torch

from tadistill import losses, relation_kl


def plain_relation_kl(student, teacher, mask, heads):
    """KL(softmax(T_x T_y^T / sqrt(d_r)) || softmax(S_x S_y^T / sqrt(d_r))) over valid keys,
    summed over keys, averaged over heads and valid queries, by loops over the batch."""
    total, count = 0.0, 0
    for b in range(mask.shape[0]):
        keys = mask[b].bool()
        for q in torch.nonzero(keys).flatten().tolist():
            per_head = []
            for side_student, side_teacher in [(student, teacher)]:
                for h in range(heads):
                    def relation(side):
                        left, right = side
                        d = left.shape[-1] // heads
                        x, y = left[b, q, h * d:(h + 1) * d], right[b][:, h * d:(h + 1) * d][keys]
                        return torch.softmax(y @ x / math.sqrt(d), dim=-1)
                    p_t, p_s = relation(side_teacher), relation(side_student)
                    per_head.append((p_t * (p_t.log() - p_s.log())).sum())
            total = total + torch.stack(per_head).mean()
            count += 1
    return total / max(count, 1) if count else (student[0].sum() * 0.0)


def tensors(seed, batch, tokens, width, teacher_width):
    g = torch.Generator().manual_seed(seed)
    make = lambda w, grad: torch.randn(batch, tokens, w, generator=g, dtype=torch.float32).requires_grad_(grad)  # noqa: E731
    return make(width, True), make(width, True), make(teacher_width, False), make(teacher_width, False)


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("chunk_bytes", [2**20, 200, 1])  # whole sequences; query blocks; one query a block
def test_blocked_equals_the_plain_loss_and_its_gradients(cross, chunk_bytes, monkeypatch):
    monkeypatch.setitem(relation_kl.CHUNK_BYTES, "cpu", chunk_bytes)
    x, y, tx, ty = tensors(0, batch=3, tokens=7, width=12, teacher_width=24)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0  # padding
    mask[2, :] = 0  # an all-padding sequence
    student, teacher = ((x, y), (tx, ty)) if cross else (x, tx)
    blocked = losses.attention_relation_kl(student=student, teacher=teacher, attention_mask=mask, relation_heads=3,
                                           kernel="blocked")
    reference = losses.attention_relation_kl(student=student, teacher=teacher, attention_mask=mask, relation_heads=3,
                                             kernel="reference")
    plain = plain_relation_kl((x, y) if cross else (x, x), (tx, ty) if cross else (tx, tx), mask, 3)
    assert torch.allclose(blocked, plain, atol=1e-6, rtol=1e-6) and torch.allclose(reference, plain, atol=1e-6, rtol=1e-6)
    inputs = (x, y) if cross else (x,)
    blocked_grads = torch.autograd.grad(blocked, inputs)
    plain_grads = torch.autograd.grad(plain, inputs)
    for got, expected in zip(blocked_grads, plain_grads):
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
        assert got[2].abs().max() == 0  # nothing flows from an all-padding sequence


def test_a_fully_masked_batch_gives_zero_with_a_graph():
    x, _, tx, _ = tensors(1, batch=2, tokens=5, width=8, teacher_width=8)
    loss = losses.attention_relation_kl(student=x, teacher=tx, attention_mask=torch.zeros(2, 5), relation_heads=2,
                                        kernel="blocked")
    assert loss.item() == 0.0 and loss.requires_grad
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.abs().max() == 0


def test_bf16_inputs_are_computed_in_fp32():
    x, _, tx, _ = tensors(2, batch=2, tokens=6, width=8, teacher_width=16)
    mask = torch.ones(2, 6)
    xb = x.detach().bfloat16().requires_grad_()
    got = losses.attention_relation_kl(student=xb, teacher=tx.bfloat16(), attention_mask=mask, relation_heads=2,
                                       kernel="blocked")
    expected = plain_relation_kl((xb.float(), xb.float()), (tx.bfloat16().float(),) * 2, mask, 2)
    assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-6)
    got.backward()
    assert xb.grad.dtype == torch.bfloat16 and xb.grad.abs().sum() > 0


def test_a_teacher_that_requires_grad_takes_the_plain_path():
    x, _, tx, _ = tensors(3, batch=2, tokens=4, width=8, teacher_width=8)
    tx.requires_grad_(True)
    mask = torch.ones(2, 4)
    loss = losses.attention_relation_kl(student=x, teacher=tx, attention_mask=mask, relation_heads=2, kernel="blocked")
    (grad,) = torch.autograd.grad(loss, tx)  # the teacher gets its gradient, as the plain loss gives it
    assert grad.abs().sum() > 0


def test_the_objective_gives_the_same_loss_with_either_kernel():
    from tadistill.arch import ModelShape
    from tadistill.config import ObjectiveConfig
    from tadistill.objectives import build_objectives
    from tadistill.objectives.base import StepTensors
    from tadistill.taps import Tap

    shape = ModelShape(2, 12, 3, 24, 50)
    x, y, z, _ = tensors(4, batch=2, tokens=6, width=12, teacher_width=12)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, 4:] = 0
    values = {}
    for kernel in ("reference", "blocked"):
        objectives = build_objectives([ObjectiveConfig("minilmv2", 1.0, {"relation_heads": 3, "kernel": kernel})],
                                      teacher=shape, student=shape)
        (objective,) = objectives.objectives
        side = {Tap("query", 2): x, Tap("key", 2): y, Tap("value", 2): z}
        teacher = {tap: t.detach() * 2 for tap, t in side.items()}
        values[kernel] = objective(StepTensors(student=side, teacher=teacher, attention_mask=mask)).total
    assert torch.allclose(values["blocked"], values["reference"], atol=1e-6)


def test_left_padding_and_a_cut_sequence_give_the_plain_loss(monkeypatch):
    """CPU blocks cut a right-padded sequence to its real tokens and keep the padding bias for
    any other mask (here left padding and a hole); both give the plain loss and gradients."""
    monkeypatch.setitem(relation_kl.CHUNK_BYTES, "cpu", 2**20)
    x, y, tx, ty = tensors(5, batch=3, tokens=6, width=12, teacher_width=24)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1]])
    blocks = relation_kl._blocks(mask.bool(), 3)
    assert [(b.start, k.stop, biased) for b, _, k, biased in blocks] == [(0, 4, False), (1, 6, True), (2, 6, True)]
    for student, teacher in (((x, y), (tx, ty)), (x, tx)):
        got = losses.attention_relation_kl(student=student, teacher=teacher, attention_mask=mask, relation_heads=3)
        pairs = [side if isinstance(side, tuple) else (side, side) for side in (student, teacher)]
        expected = plain_relation_kl(*pairs, mask, 3)
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-6)
        inputs = tuple(dict.fromkeys(pairs[0]))
        for a, b in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(expected, inputs)):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
