"""Each loss against a plain loop-over-tokens reference written here, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from tadistill import losses

B, N, V = 3, 7, 11


def _mask() -> torch.Tensor:
    """Mixed lengths: full, right-padded, left-padded (positions need not be a prefix)."""
    mask = torch.ones(B, N, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, :5] = 0
    return mask


def _valid(mask: torch.Tensor, b: int) -> list[int]:
    return [i for i in range(mask.shape[1]) if mask[b, i]]


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """KL(softmax(p) || softmax(q)) of two 1-D logit vectors."""
    p, q = p_logits.double().softmax(-1), q_logits.double().softmax(-1)
    return float((p * (p.log() - q.log())).sum())


def _ref_output_kl(student, teacher, mask, temperature):
    values = [
        _kl(teacher[b, i] / temperature, student[b, i] / temperature)
        for b in range(student.shape[0])
        for i in _valid(mask, b)
    ]
    return temperature**2 * sum(values) / len(values)


def _ref_hidden_mse(student, teacher, mask):
    values = [
        float(((student[b, i].double() - teacher[b, i].double()) ** 2).mean())
        for b in range(B)
        for i in _valid(mask, b)
    ]
    return sum(values) / len(values)


def _ref_hidden_cosine(student, teacher, mask):
    values = []
    for b in range(B):
        for i in _valid(mask, b):
            s, t = student[b, i].double(), teacher[b, i].double()
            values.append(1 - float(s @ t / (s.norm() * t.norm())))
    return sum(values) / len(values)


def _head(x: torch.Tensor, heads: int, h: int) -> torch.Tensor:
    width = x.shape[-1] // heads
    return x[..., h * width : (h + 1) * width].double()


def _ref_relation_kl(student_pair, teacher_pair, mask, heads):
    """Token-level mean over valid queries of the head-mean of KL(R_T || R_S) over valid keys."""
    per_query = []
    for b in range(B):
        idx = _valid(mask, b)
        for qi in idx:
            kls = []
            for h in range(heads):
                rows = []
                for left, right in (student_pair, teacher_pair):
                    lh, rh = _head(left[b], heads, h), _head(right[b], heads, h)
                    rows.append(torch.stack([lh[qi] @ rh[k] for k in idx]) / math.sqrt(lh.shape[-1]))
                kls.append(_kl(rows[1], rows[0]))
            per_query.append(sum(kls) / heads)
    return sum(per_query) / len(per_query)


def _ref_score_mse(sq, sk, tq, tk, mask, heads):
    total, count = 0.0, 0
    for b in range(B):
        idx = _valid(mask, b)
        for h in range(heads):
            for i in idx:
                for j in idx:
                    s = _head(sq[b], heads, h)[i] @ _head(sk[b], heads, h)[j] / math.sqrt(sq.shape[-1] // heads)
                    t = _head(tq[b], heads, h)[i] @ _head(tk[b], heads, h)[j] / math.sqrt(tq.shape[-1] // heads)
                    total += float((s - t) ** 2)
                    count += 1
    return total / count


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "logits_s": torch.randn(B, N, V, generator=g) * 3,
        "logits_t": torch.randn(B, N, V, generator=g) * 3,
        "hidden_s": torch.randn(B, N, 12, generator=g),
        "hidden_t": torch.randn(B, N, 12, generator=g),
        "q_s": torch.randn(B, N, 12, generator=g),  # student width 12
        "k_s": torch.randn(B, N, 12, generator=g),
        "q_t": torch.randn(B, N, 16, generator=g) * 2,  # teacher width 16
        "k_t": torch.randn(B, N, 16, generator=g) * 2,
    }


def _cases(x):
    """(name, loss call, reference value) for every loss, on the tensors `x` and the mixed-length mask."""
    mask = _mask()
    labels = torch.where(torch.arange(N).expand(B, N) % 3 == 0, torch.arange(N).expand(B, N) % V, -100)
    return [
        ("output_kl", lambda m: losses.output_kl(student=x["logits_s"], teacher=x["logits_t"], mask=m, temperature=2.0),
         lambda m: _ref_output_kl(x["logits_s"], x["logits_t"], m, 2.0)),
        ("hidden_mse", lambda m: losses.hidden_mse(student=x["hidden_s"], teacher=x["hidden_t"], attention_mask=m),
         lambda m: _ref_hidden_mse(x["hidden_s"], x["hidden_t"], m)),
        ("hidden_cosine", lambda m: losses.hidden_cosine(student=x["hidden_s"], teacher=x["hidden_t"], attention_mask=m),
         lambda m: _ref_hidden_cosine(x["hidden_s"], x["hidden_t"], m)),
        ("relation_kl", lambda m: losses.attention_relation_kl(student=x["q_s"], teacher=x["q_t"], attention_mask=m, relation_heads=4),
         lambda m: _ref_relation_kl((x["q_s"], x["q_s"]), (x["q_t"], x["q_t"]), m, 4)),
        ("cross_relation_kl", lambda m: losses.attention_relation_kl(student=(x["q_s"], x["k_s"]), teacher=(x["q_t"], x["k_t"]), attention_mask=m, relation_heads=2),
         lambda m: _ref_relation_kl((x["q_s"], x["k_s"]), (x["q_t"], x["k_t"]), m, 2)),
        ("attention_kl", lambda m: losses.attention_kl(student_query=x["q_s"], student_key=x["k_s"], teacher_query=x["q_t"], teacher_key=x["k_t"], attention_mask=m, heads=4),
         lambda m: _ref_relation_kl((x["q_s"], x["k_s"]), (x["q_t"], x["k_t"]), m, 4)),
        ("score_mse", lambda m: losses.attention_score_mse(student_query=x["q_s"], student_key=x["k_s"], teacher_query=x["q_t"], teacher_key=x["k_t"], attention_mask=m, heads=4),
         lambda m: _ref_score_mse(x["q_s"], x["k_s"], x["q_t"], x["k_t"], m, 4)),
        ("score_mse_reference", lambda m: losses.attention_score_mse(student_query=x["q_s"], student_key=x["k_s"], teacher_query=x["q_t"], teacher_key=x["k_t"], attention_mask=m, heads=4, kernel="reference"),
         lambda m: _ref_score_mse(x["q_s"], x["k_s"], x["q_t"], x["k_t"], m, 4)),
    ], mask, labels


def test_losses_match_references_with_padding_and_mixed_lengths(tensors):
    cases, mask, _ = _cases(tensors)
    for name, loss, reference in cases:
        value = loss(mask)
        assert value.dtype == torch.float32 and value.dim() == 0, name
        assert value.item() == pytest.approx(reference(mask), rel=1e-5, abs=1e-6), name


def test_padding_content_does_not_change_losses(tensors):
    cases, mask, _ = _cases(tensors)
    before = {name: loss(mask).item() for name, loss, _ in cases}
    for key, value in tensors.items():  # garbage at every padding position
        value[mask == 0] = 1e3 if key.startswith("logits") else -50.0
    for name, loss, _ in cases:
        assert loss(mask).item() == pytest.approx(before[name], rel=1e-5, abs=1e-6), name


def test_bf16_inputs_are_reduced_in_fp32(tensors):
    bf16 = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
    cases, mask, _ = _cases(bf16)
    for name, loss, reference in cases:
        value = loss(mask)
        assert value.dtype == torch.float32, name
        # the reference upcasts the same bf16 values: only fp32 rounding may differ, except in the
        # fused score MSE, whose score-difference product runs in the taps' bf16 (rounded once)
        rel = 1e-2 if name == "score_mse" else 1e-4
        assert value.item() == pytest.approx(reference(mask), rel=rel, abs=1e-5), name


def test_autocast_does_not_lower_the_loss_precision(tensors):
    cases, mask, _ = _cases(tensors)
    for name, loss, _ in cases:
        exact = loss(mask).item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast_value = loss(mask)
        assert autocast_value.dtype == torch.float32, name
        assert autocast_value.item() == pytest.approx(exact, rel=1e-6, abs=1e-7), name


def test_all_masked_gives_zero_with_a_graph(tensors):
    for value in tensors.values():
        value.requires_grad_(True)
    cases, mask, _ = _cases(tensors)
    nothing = torch.zeros_like(mask)
    for name, loss, _ in cases:
        value = loss(nothing)
        assert value.item() == 0.0, name
        assert value.requires_grad, name
        value.backward()
    assert all(torch.count_nonzero(v.grad) == 0 for v in tensors.values())


def test_empty_logits_give_zero_with_a_graph():
    # od on a micro-batch where no token was masked: the engine hands over (0, V) logits
    student = torch.zeros(0, V, requires_grad=True)
    value = losses.output_kl(student=student, teacher=torch.zeros(0, V), mask=None, temperature=2.0)
    assert value.item() == 0.0 and value.requires_grad
    empty_labels = torch.zeros(0, dtype=torch.long)
    assert losses.masked_lm_cross_entropy(student, empty_labels).item() == 0.0


def test_output_kl_without_mask_averages_every_position(tensors):
    everything = torch.ones(B, N, dtype=torch.long)
    flat_s, flat_t = tensors["logits_s"].reshape(-1, V), tensors["logits_t"].reshape(-1, V)
    assert losses.output_kl(student=flat_s, teacher=flat_t, mask=None, temperature=1.0).item() == pytest.approx(
        _ref_output_kl(tensors["logits_s"], tensors["logits_t"], everything, 1.0), rel=1e-5
    )


def test_output_kl_is_zero_for_equal_logits_and_scales_with_temperature_squared(tensors):
    logits = tensors["logits_t"]
    assert losses.output_kl(student=logits, teacher=logits, mask=None, temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)
    mask = _mask()
    kl_t1 = _ref_output_kl(tensors["logits_s"] / 3, tensors["logits_t"] / 3, mask, 1.0)
    kl_t3 = losses.output_kl(student=tensors["logits_s"], teacher=tensors["logits_t"], mask=mask, temperature=3.0)
    assert kl_t3.item() == pytest.approx(9 * kl_t1, rel=1e-5)


def test_masked_lm_cross_entropy_matches_reference(tensors):
    _, mask, labels = _cases(tensors)
    logits = tensors["logits_s"]
    expected = [
        -float(logits[b, i].double().log_softmax(-1)[labels[b, i]])
        for b in range(B)
        for i in range(N)
        if labels[b, i] != -100
    ]
    value = losses.masked_lm_cross_entropy(logits, labels)
    assert value.item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    empty = losses.masked_lm_cross_entropy(logits.requires_grad_(True), torch.full_like(labels, -100))
    assert empty.item() == 0.0 and empty.requires_grad
