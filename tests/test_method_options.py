"""The options that make each objective follow its paper, against plain references written here.

hs `projection_sharing`, the `reduction` of minilmv2 and tinybert, and od's positions and
input masking. References use plain torch on (B, n, d) tensors with padding.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tadistill.arch import ModelShape
from tadistill.objectives import StepTensors, build_objectives, objective_problems
from tadistill.taps import Tap, projection_scores
from tiny import objective_configs

TEACHER = ModelShape(layers=4, hidden=8, heads=2, intermediate=16, vocab_size=11)
STUDENT = ModelShape(layers=2, hidden=6, heads=2, intermediate=12, vocab_size=11)
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # (B, n): the second row is padded


def random_step(teacher=TEACHER, student=STUDENT, mask=MASK) -> StepTensors:
    generator = torch.Generator().manual_seed(0)
    batch, tokens = mask.shape

    def tensors(shape, requires_grad):
        tapped = {
            Tap(kind, layer): torch.randn(batch, tokens, shape.hidden, generator=generator, requires_grad=requires_grad)
            for kind in ("hidden", "query", "key", "value")
            for layer in range(0 if kind == "hidden" else 1, shape.layers + 1)
        }
        scores = {Tap("scores", layer): projection_scores(tapped[Tap("query", layer)], tapped[Tap("key", layer)],
                                                          shape.heads)  # as the taps form them from Q/K
                  for layer in range(1, shape.layers + 1)}
        return tapped | scores

    return StepTensors(teacher=tensors(teacher, False), student=tensors(student, True), attention_mask=mask)


def build(name, options, teacher=TEACHER, student=STUDENT):
    return build_objectives(objective_configs([(name, 1.0, options)]), teacher=teacher, student=student)


def ref_mse(x, y, mask):
    """Mean over real tokens of the mean over features of (x - y)^2, as a plain loop."""
    values = [((x[b, i] - y[b, i]) ** 2).mean() for b in range(x.shape[0]) for i in range(x.shape[1]) if mask[b, i]]
    return torch.stack(values).mean()


def linear(module, x):
    return x @ module.weight.T + module.bias


# ---------------------------------------------------------------- hs projection_sharing

# uniform+last, 4 -> 2: student 1 <- teacher {2, 4}, student 2 <- teacher {4}
UNIFORM_PLUS_LAST = [(1, (2, 4)), (2, (4,))]


def test_pair_sharing_gives_each_pair_its_own_projection_and_loss_term():
    objectives = build("hs", {"mapping": "uniform+last"})
    (hs,) = objectives.objectives
    assert len(hs.projections) == 3  # (1, 2), (1, 4), (2, 4)
    step = random_step()
    s, t = step.student, step.teacher
    w12, w14, w24 = hs.projections
    student_1 = (ref_mse(linear(w12, s[Tap("hidden", 1)]), t[Tap("hidden", 2)], MASK)
                 + ref_mse(linear(w14, s[Tap("hidden", 1)]), t[Tap("hidden", 4)], MASK)) / 2
    student_2 = ref_mse(linear(w24, s[Tap("hidden", 2)]), t[Tap("hidden", 4)], MASK)
    torch.testing.assert_close(objectives(step).total, (student_1 + student_2) / 2)


def test_student_layer_sharing_regresses_onto_the_mean_of_the_teacher_layers():
    """sum_j ||W h - a_j||^2 = N ||W h - mean_j a_j||^2 + sum_j ||a_j - mean a||^2: same value
    up to a constant free of W, hence the same gradients for W and for the student."""
    objectives = build("hs", {"mapping": "uniform+last", "projection_sharing": "student-layer"})
    (hs,) = objectives.objectives
    assert len(hs.projections) == 2  # one per student layer
    step = random_step()
    s, t = step.student, step.teacher
    w1, w2 = hs.projections
    a2, a4 = t[Tap("hidden", 2)], t[Tap("hidden", 4)]
    mean_a = (a2 + a4) / 2
    constant = (ref_mse(a2, mean_a, MASK) + ref_mse(a4, mean_a, MASK)) / 2
    student_1 = ref_mse(linear(w1, s[Tap("hidden", 1)]), mean_a, MASK)
    student_2 = ref_mse(linear(w2, s[Tap("hidden", 2)]), a4, MASK)
    reference = (student_1 + student_2) / 2

    loss = objectives(step).total
    torch.testing.assert_close(loss, reference + constant / 2)
    parameters = [*hs.parameters(), s[Tap("hidden", 1)], s[Tap("hidden", 2)]]
    for got, expected in zip(torch.autograd.grad(loss, parameters), torch.autograd.grad(reference, parameters)):
        torch.testing.assert_close(got, expected)


def test_sharings_agree_on_one_to_one_maps_and_differ_on_one_to_many():
    def parameter_names(options):
        return [name for name, _ in build("hs", options).named_parameters()]

    assert parameter_names({"mapping": "uniform"}) == parameter_names({"mapping": "uniform", "projection_sharing": "student-layer"})
    assert len(parameter_names({"mapping": "uniform-consecutive"})) == 2 * 4  # 4 pairs, weight + bias each
    assert len(parameter_names({"mapping": "uniform-consecutive", "projection_sharing": "student-layer"})) == 2 * 2


def test_hs_pair_sharing_with_all_padding_gives_zero_with_a_graph():
    step = random_step(mask=torch.zeros_like(MASK))
    loss = build("hs", {"mapping": "uniform+last"})(step).total
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()


# ---------------------------------------------------------------- reductions


def ref_relation_kl(x_s, x_t, mask, heads):
    """MiniLMv2 relation KL, loop over batch rows with padding cut off: mean over real queries
    (of the whole batch) of the head-mean of sum over real keys of p_T (log p_T - log p_S)."""
    rows = []
    for b in range(x_s.shape[0]):
        n = int(mask[b].sum())

        def relation(x):
            split = x[b, :n].reshape(n, heads, -1).transpose(0, 1)  # (A, n, d_r)
            return torch.log_softmax(split @ split.transpose(1, 2) / split.shape[-1] ** 0.5, dim=-1)  # (A, n, n)

        log_t, log_s = relation(x_t), relation(x_s)
        rows.append((log_t.exp() * (log_t - log_s)).sum(-1).mean(0))  # (n,)
    return torch.cat(rows).mean()


@pytest.mark.parametrize("reduction, scale", [(None, 1.0), ("sum", 1.0), ("mean", 1 / 3)])
def test_minilmv2_sums_its_relation_losses_by_default(reduction, scale):
    options = {"relation_heads": 2} | ({"reduction": reduction} if reduction else {})
    step = random_step()
    loss = build("minilmv2", options)(step)
    s, t = step.student, step.teacher
    parts = {f"{x}{x}": ref_relation_kl(s[Tap(kind, 2)], t[Tap(kind, 4)], MASK, 2) for x, kind in
             (("q", "query"), ("k", "key"), ("v", "value"))}
    for name, value in parts.items():
        torch.testing.assert_close(loss.parts[f"minilmv2/{name}"], value)
    torch.testing.assert_close(loss.total, scale * sum(parts.values()))


def test_minilmv2_mean_divides_weighted_relations_by_their_count():
    step = random_step()
    summed = build("minilmv2", {"relation_heads": 2, "relations": {"qk": 2.0, "vv": 1.0}})(step)
    mean = build("minilmv2", {"relation_heads": 2, "relations": {"qk": 2.0, "vv": 1.0}, "reduction": "mean"})(step)
    torch.testing.assert_close(summed.total, 2 * summed.parts["minilmv2/qk"] + summed.parts["minilmv2/vv"])
    torch.testing.assert_close(mean.total, summed.total / 2)


def ref_score_mse(s, t, mask, heads):
    """TinyBERT attention-score MSE: mean over heads and real (query, key) pairs."""
    values = []
    for b in range(s[0].shape[0]):
        n = int(mask[b].sum())

        def scores(q, k):
            q, k = (x[b, :n].reshape(n, heads, -1).transpose(0, 1) for x in (q, k))  # (A, n, d_h)
            return q @ k.transpose(1, 2) / q.shape[-1] ** 0.5  # (A, n, n)

        values.append(((scores(*s) - scores(*t)) ** 2).mean(0).flatten())  # (n * n,)
    return torch.cat(values).mean()


@pytest.mark.parametrize("kernel", ["scores", "fused"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_tinybert_sums_attention_and_hidden_losses_over_layers_by_default(reduction, kernel):
    student = ModelShape(layers=2, hidden=8, heads=2, intermediate=16, vocab_size=11)
    options = {"projection": "never", "kernel": kernel} | ({} if reduction == "sum" else {"reduction": "mean"})
    step = random_step(student=student)
    loss = build("tinybert", options, student=student)(step)
    s, t = step.student, step.teacher
    pairs = [(1, 2), (2, 4)]  # uniform 4 -> 2
    attention = [ref_score_mse((s[Tap("query", i)], s[Tap("key", i)]), (t[Tap("query", j)], t[Tap("key", j)]), MASK, 2)
                 for i, j in pairs]
    hidden = [ref_mse(s[Tap("hidden", i)], t[Tap("hidden", j)], MASK) for i, j in pairs]
    embeddings = ref_mse(s[Tap("hidden", 0)], t[Tap("hidden", 0)], MASK)
    reduce = sum if reduction == "sum" else (lambda values: sum(values) / len(values))
    torch.testing.assert_close(loss.parts["tinybert/attention"], reduce(attention))
    torch.testing.assert_close(loss.parts["tinybert/hidden"], reduce(hidden))
    torch.testing.assert_close(loss.parts["tinybert/embeddings"], embeddings)  # one term, whatever the reduction
    torch.testing.assert_close(loss.total, reduce(attention) + reduce(hidden) + embeddings)


@pytest.mark.parametrize("name, options", [("minilmv2", {"relation_heads": 2}), ("tinybert", {"projection": "never"})])
def test_summed_losses_with_all_padding_give_zero_with_a_graph(name, options):
    student = ModelShape(layers=2, hidden=8, heads=2, intermediate=16, vocab_size=11)
    loss = build(name, options, student=student)(random_step(student=student, mask=torch.zeros_like(MASK))).total
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()


def test_tinybert_shares_one_hidden_projection_across_layers_as_the_paper():
    """TinyBERT: L_hidn = MSE(H^S W_h, H^T) with one W_h for every layer, and W_e for embeddings."""
    objectives = build("tinybert", {"heads": 2})
    (tinybert,) = objectives.objectives
    (w_h,), (w_e,) = tinybert.hidden.projections, tinybert.embedding.projections
    step = random_step()
    s, t = step.student, step.teacher
    hidden = sum(ref_mse(linear(w_h, s[Tap("hidden", i)]), t[Tap("hidden", j)], MASK) for i, j in ((1, 2), (2, 4)))
    embeddings = ref_mse(linear(w_e, s[Tap("hidden", 0)]), t[Tap("hidden", 0)], MASK)
    loss = objectives(step)
    torch.testing.assert_close(loss.parts["tinybert/hidden"], hidden)
    torch.testing.assert_close(loss.parts["tinybert/embeddings"], embeddings)
    per_layer = build("tinybert", {"heads": 2, "projection_sharing": "pair"}).objectives[0]
    assert len(per_layer.hidden.projections) == 2


def test_tinybert_reads_the_models_own_scores_where_their_kernels_hand_them_over():
    """kernel auto: "scores" when both models run the matmul kernel and `heads` is their head
    count, else "fused" from Q/K; "scores" with other heads is a problem naming the key."""
    on_matmul = {"teacher": replace(TEACHER, kernel_scores=True), "student": replace(STUDENT, kernel_scores=True)}
    (auto,) = build("tinybert", {}, **on_matmul).objectives
    assert auto.kernel == "scores" and {Tap("scores", 1), Tap("scores", 2)} <= auto.student_taps
    assert not any(tap.kind in ("query", "key") for tap in auto.student_taps | auto.teacher_taps)
    (split,) = build("tinybert", {"heads": 1}, **on_matmul).objectives  # one head over the whole width
    assert split.kernel == "fused" and Tap("query", 1) in split.student_taps
    (on_sdpa,) = build("tinybert", {}).objectives
    assert on_sdpa.kernel == "fused"
    (asked,) = build("tinybert", {"kernel": "scores"}).objectives  # on SDPA too: formed from Q/K by the taps
    assert asked.kernel == "scores"
    problems = objective_problems(objective_configs([("tinybert", 1.0, {"heads": 1, "kernel": "scores"})]),
                                  teacher=TEACHER, student=STUDENT, teacher_has_lm_head=True)
    assert [(p.key, p.value) for p in problems] == [("objectives.0.kernel", "scores")]
    assert "2 teacher and 2 student heads, not heads 1" in problems[0].message


def test_tinybert_on_the_models_scores_with_all_padding_gives_zero_with_a_graph():
    student = ModelShape(layers=2, hidden=8, heads=2, intermediate=16, vocab_size=11)
    objectives = build("tinybert", {"projection": "never", "kernel": "scores"}, student=student)
    loss = objectives(random_step(student=student, mask=torch.zeros_like(MASK))).total
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
