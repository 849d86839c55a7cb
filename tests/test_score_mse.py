"""TinyBERT's attention-score MSE kernels (`tadistill.score_mse`: fused, blocked, tapped scores) against the plain
loss written out here: value and gradients to 1e-6 in fp32, with right and left padding, a hole,
an all-padding sequence, a fully masked batch and unequal widths; the fused kernel in bf16 within
bf16's precision."""

from __future__ import annotations

import math

import pytest
import torch

from tadistill import losses
from tadistill.score_mse import tapped_score_mse
from tadistill.taps import projection_scores


def plain_score_mse(sq, sk, tq, tk, mask, heads):
    """Mean over heads and real (query, key) pairs of (q_S k_S / sqrt(d_S) - q_T k_T / sqrt(d_T))^2."""
    terms = []
    for b in range(mask.shape[0]):
        real = torch.nonzero(mask[b]).flatten()
        for h in range(heads):
            def scores(q, k):
                d = q.shape[-1] // heads
                return q[b, real, h * d:(h + 1) * d] @ k[b, real, h * d:(h + 1) * d].T / math.sqrt(d)
            terms.append((scores(sq, sk) - scores(tq, tk)).pow(2).flatten())
    values = torch.cat(terms)
    return values.mean() if values.numel() else sq.sum() * 0.0


def tensors(seed, batch=4, tokens=6, width=8, teacher_width=12):
    g = torch.Generator().manual_seed(seed)
    student = [torch.randn(batch, tokens, width, generator=g).requires_grad_() for _ in range(2)]
    teacher = [torch.randn(batch, tokens, teacher_width, generator=g) for _ in range(2)]
    return student, teacher


MASKS = {
    "mixed": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]),
    "hole": torch.tensor([[1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]]),
}


KERNELS = ["fused", "blocked", "reference"]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mask_name", list(MASKS))
def test_each_kernel_equals_the_plain_loss_and_its_gradients(mask_name, kernel):
    mask = MASKS[mask_name]
    (sq, sk), (tq, tk) = tensors(0)
    kwargs = dict(student_query=sq, student_key=sk, teacher_query=tq, teacher_key=tk, attention_mask=mask, heads=2)
    loss = losses.attention_score_mse(**kwargs, kernel=kernel)
    plain = plain_score_mse(sq, sk, tq, tk, mask, 2)
    assert torch.allclose(loss, plain, atol=1e-6, rtol=1e-6)
    for got, expected in zip(torch.autograd.grad(loss, (sq, sk)), torch.autograd.grad(plain, (sq, sk))):
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
        assert got[mask == 0].abs().max() == 0  # padding tokens get no gradient


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_fully_masked_batch_gives_zero_with_a_graph(kernel):
    (sq, sk), (tq, tk) = tensors(1)
    loss = losses.attention_score_mse(student_query=sq, student_key=sk, teacher_query=tq, teacher_key=tk,
                                      attention_mask=torch.zeros(4, 6), heads=2, kernel=kernel)
    assert loss.item() == 0.0 and loss.requires_grad
    assert torch.autograd.grad(loss, sq)[0].abs().max() == 0


@pytest.mark.parametrize("kernel, backward", [("fused", "_FusedScoreMSEBackward"), ("blocked", "_ScoreMSEBackward")])
def test_a_trainable_teacher_takes_the_plain_path(kernel, backward):
    (sq, sk), (tq, tk) = tensors(2)
    kwargs = dict(student_query=sq, student_key=sk, teacher_key=tk, attention_mask=MASKS["mixed"], heads=2)
    assert losses.attention_score_mse(**kwargs, teacher_query=tq, kernel=kernel).grad_fn.name() == backward
    trainable = tq.clone().requires_grad_()
    loss = losses.attention_score_mse(**kwargs, teacher_query=trainable, kernel=kernel)
    assert torch.autograd.grad(loss, trainable)[0].abs().sum() > 0  # the plain path, which gives the teacher a gradient


def test_fused_in_bf16_keeps_bf16_precision_and_dtype_under_autocast():
    """bf16 taps (as autocast makes them): the products run in bf16, so the loss and gradients
    match the fp32 loss of the same bf16 values to bf16's relative precision, not to 1e-6; the
    gradients come back in the taps' dtype."""
    (sq, sk), (tq, tk) = tensors(3, batch=4, tokens=16, width=32, teacher_width=64)
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[1, 10:] = 0
    low = [x.detach().bfloat16().requires_grad_(x.requires_grad) for x in (sq, sk, tq, tk)]
    exact = [x.detach().float().requires_grad_(x.requires_grad) for x in low]  # the same values in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = losses.attention_score_mse(student_query=low[0], student_key=low[1], teacher_query=low[2],
                                          teacher_key=low[3], attention_mask=mask, heads=4, kernel="fused")
    plain = plain_score_mse(*exact, mask, 4)
    assert loss.dtype == torch.float32 and abs(loss.item() - plain.item()) < 1e-2 * plain.item()
    for got, expected in zip(torch.autograd.grad(loss, low[:2]), torch.autograd.grad(plain, exact[:2])):
        assert got.dtype == torch.bfloat16
        assert (got.float() - expected).norm() < 2e-2 * expected.norm()
        assert got[mask == 0].abs().max() == 0


def scores_of(q, k, heads):
    return projection_scores(q, k, heads)  # (B, A, n, n), as the taps form them


@pytest.mark.parametrize("mask_name", list(MASKS))
def test_the_tapped_scores_kernel_equals_the_plain_loss_and_its_gradients(mask_name):
    mask = MASKS[mask_name]
    (sq, sk), (tq, tk) = tensors(0)
    loss = tapped_score_mse(scores_of(sq, sk, 2), scores_of(tq, tk, 2), mask)
    plain = plain_score_mse(sq, sk, tq, tk, mask, 2)
    assert torch.allclose(loss, plain, atol=1e-6, rtol=1e-6)
    for got, expected in zip(torch.autograd.grad(loss, (sq, sk)), torch.autograd.grad(plain, (sq, sk))):
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
        assert got[mask == 0].abs().max() == 0


def test_the_tapped_scores_kernel_on_a_fully_masked_batch_and_a_trainable_teacher():
    (sq, sk), (tq, tk) = tensors(1)
    loss = tapped_score_mse(scores_of(sq, sk, 2), scores_of(tq, tk, 2), torch.zeros(4, 6))
    assert loss.item() == 0.0 and loss.requires_grad
    assert torch.autograd.grad(loss, sq)[0].abs().max() == 0
    with pytest.raises(ValueError, match="frozen teacher"):
        tapped_score_mse(scores_of(sq, sk, 2), scores_of(sq, sk, 2), torch.ones(4, 6))


def test_the_tapped_scores_kernel_takes_bf16_scores_and_gives_a_bf16_gradient():
    g = torch.Generator().manual_seed(4)
    student = torch.randn(2, 4, 16, 16, generator=g).bfloat16().requires_grad_()
    teacher = torch.randn(2, 4, 16, 16, generator=g).bfloat16()
    mask = torch.ones(2, 16)
    mask[1, 9:] = 0
    exact = student.detach().float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = tapped_score_mse(student, teacher, mask)
    real = mask.bool()[:, None, :, None] & mask.bool()[:, None, None, :]  # (B, 1, n, n) real pairs
    plain = (exact - teacher.float()).pow(2).masked_select(real).sum() / (4 * real.sum())
    assert loss.dtype == torch.float32 and torch.allclose(loss, plain, rtol=1e-6)  # the difference is taken in fp32
    (got,), (expected,) = torch.autograd.grad(loss, student), torch.autograd.grad(plain, exact)
    assert got.dtype == torch.bfloat16 and (got.float() - expected).norm() < 2**-7 * expected.norm()


@pytest.mark.parametrize("loss_scale", [1.0, 2.0**15, 2.0**16])
def test_fp16_gradients_are_scaled_in_fp32_at_a_grad_scalers_loss_scales(loss_scale):
    """fp16 (mixed_precision fp16): 2 / (A x real pairs) underflows and a GradScaler's 2^16
    overflows in fp16; both kernels scale in fp32 and round the gradient once."""
    g = torch.Generator().manual_seed(5)
    q, k = (torch.randn(8, 64, 32, generator=g) for _ in range(2))
    tq, tk = (torch.randn(8, 64, 64, generator=g) for _ in range(2))
    mask = torch.ones(8, 64)
    half_q, half_k = (x.half().requires_grad_() for x in (q, k))
    exact_q, exact_k = (x.half().float().requires_grad_() for x in (q, k))
    expected = torch.autograd.grad(plain_score_mse(exact_q, exact_k, tq.half().float(), tk.half().float(), mask, 4)
                                   * loss_scale, exact_q)[0]
    tapped = tapped_score_mse(scores_of(half_q, half_k, 4), scores_of(tq.half(), tk.half(), 4), mask)
    fused = losses.attention_score_mse(student_query=half_q, student_key=half_k, teacher_query=tq.half(),
                                       teacher_key=tk.half(), attention_mask=mask, heads=4, kernel="fused")
    for loss in (tapped, fused):
        (got,) = torch.autograd.grad(loss * loss_scale, half_q)
        assert got.dtype == torch.float16 and torch.isfinite(got).all()
        assert (got.float() - expected).norm() < 2e-2 * expected.norm()
