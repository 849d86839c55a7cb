"""Objective registry: validation problems, defaults, declared taps, projections, combined losses."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from tadistill import losses
from tadistill.arch import ModelShape
from tadistill.objectives import OBJECTIVES, StepTensors, build_objectives, objective_problems
from tadistill.taps import Tap
from tiny import objective_configs

TEACHER = ModelShape(layers=4, hidden=64, heads=4, intermediate=128, vocab_size=50)
STUDENT = ModelShape(layers=2, hidden=48, heads=3, intermediate=96, vocab_size=50)
SAME_WIDTH = ModelShape(layers=2, hidden=64, heads=4, intermediate=128, vocab_size=50)


def problems_by_key(specs, teacher=TEACHER, student=STUDENT, lm_head=True) -> dict[str, str]:
    found = objective_problems(objective_configs(specs), teacher=teacher, student=student, teacher_has_lm_head=lm_head)
    return {p.key: p.message for p in found}


def test_every_problem_is_reported_at_once_with_its_key():
    specs = [
        ("minilmv3", 1.0, {}),
        ("minilmv2", -1.0, {"relation_head": 4}),
        ("minilmv2", 1.0, {"relation_heads": 48, "teacher_layer": 5, "student_layer": 0, "relations": ["qq", "qx"]}),
        ("minilm", 1.0, {}),
        ("od", 1.0, {"temperature": "hot"}),
        ("hs", 1.0, {"mapping": "unifrom"}),
        ("hs", 1.0, {"mapping": "explicit", "pairs": [[1, 9]]}),
        ("tinybert", 1.0, {"heads": 4, "projection": "never"}),
        ("direct-minilm", 1.0, {"tensors": ["q", "o"], "teacher_layer": True}),
    ]
    found = problems_by_key(specs)
    assert "Did you mean 'minilmv2'" in found["objectives.0.name"]
    assert "must be a number >= 0" in found["objectives.1.weight"]
    assert "Did you mean 'relation_heads'" in found["objectives.1.relation_head"]
    assert "relations" in found["objectives.1.relation_head"]  # the known options are listed
    assert "does not divide the teacher width 64;" in found["objectives.2.relation_heads"]
    assert "16" in found["objectives.2.relation_heads"]  # a value that would work
    assert "1..4" in found["objectives.2.teacher_layer"] and "1..2" in found["objectives.2.student_layer"]
    assert "q, k, v" in found["objectives.2.relations"]
    assert "4 heads and the student 3" in found["objectives.3.heads"]
    assert "expected float" in found["objectives.4.temperature"]
    assert "Did you mean 'uniform'" in found["objectives.5.mapping"]
    assert "1..4" in found["objectives.6.pairs"]
    assert "projection 'auto'" in found["objectives.7.projection"]
    assert "expected int or None" in found["objectives.8.teacher_layer"]  # a bool is not a layer
    assert "tensors" not in found  # semantic checks wait for well-typed options
    assert len(found) == 13


def test_od_needs_a_teacher_lm_head_and_only_one_od():
    found = problems_by_key([("od", 1.0, {}), ("od", 1.0, {"positions": "all"})], lm_head=False)
    assert "masked-LM head" in found["objectives.0.name"]
    assert "only one od" in found["objectives.1.name"]
    assert "expected 'masked' or 'all'" in problems_by_key([("od", 1, {"positions": "some"})])["objectives.0.positions"]


def test_valid_specs_have_no_problem():
    specs = [
        ("od", 5.0, {"alpha_mlm": 2, "alpha_cos": 1}),
        ("hs", 1, {"mapping": "uniform-consecutive", "loss": "cosine", "embeddings": True}),
        ("minilmv2", 1.0, {"relation_heads": 16, "relations": {"qk": 1.0, "vv": 0.5}}),
        ("minilm", 1.0, {"heads": 4}),
        ("tinybert", 1.0, {"heads": 8, "mapping": "explicit", "pairs": [[1, 2], [2, 4]]}),
        ("direct-minilm", 1.0, {"teacher_layer": 3, "tensors": ["q", "k"]}),
    ]
    assert objective_problems(objective_configs(specs), teacher=TEACHER, student=STUDENT, teacher_has_lm_head=True) == []


def test_without_shapes_names_and_option_types_are_still_checked():
    specs = [("minilmv3", 1.0, {}), ("minilmv2", 1.0, {"relation_heads": 5, "relation_head": 4}), ("od", 1.0, {})]
    found = objective_problems(objective_configs(specs), teacher=None, student=None, teacher_has_lm_head=False)
    assert [p.key for p in found] == ["objectives.0.name", "objectives.1.relation_head"]  # values need the shapes


def test_every_option_is_documented_by_its_exact_name():
    """Each option has a line `name: what it does` in its class docstring, and no other name does."""
    for name in OBJECTIVES:
        options_class = OBJECTIVES.get(name)
        documented = re.findall(r"^    ([a-z_]+): ", options_class.__doc__, flags=re.MULTILINE)
        assert documented == [field.name for field in dataclasses.fields(options_class)], name


def test_minilmv2_defaults_and_taps():
    teacher = ModelShape(layers=12, hidden=768, heads=12, intermediate=3072, vocab_size=100)
    student = ModelShape(layers=6, hidden=384, heads=12, intermediate=1536, vocab_size=100)
    objectives = build_objectives(objective_configs([("minilmv2", 1.0, {})]), teacher=teacher, student=student)
    (minilmv2,) = objectives.objectives
    assert (minilmv2.relation_heads, minilmv2.teacher_layer, minilmv2.student_layer) == (48, 12, 6)
    assert minilmv2.relations == {"qq": 1.0, "kk": 1.0, "vv": 1.0}  # the paper sums the relation losses
    assert objectives.teacher_taps == {Tap("query", 12), Tap("key", 12), Tap("value", 12)}
    assert objectives.student_taps == {Tap("query", 6), Tap("key", 6), Tap("value", 6)}
    assert not objectives.needs_mlm and not objectives.needs_logits
    assert list(objectives.parameters()) == []  # relations need no projection


def test_od_masks_the_input_unless_asked_to_learn_from_plain_text():
    def flags(options):
        objectives = build_objectives(objective_configs([("od", 1.0, options)]), teacher=TEACHER, student=STUDENT)
        return objectives.needs_mlm, objectives.logit_positions, objectives.deepest_teacher_layer

    assert flags({}) == (True, "all", 4)  # DistilBERT: masked input, soft targets on every token
    assert flags({"positions": "masked"}) == (True, "masked", 4)
    assert flags({"positions": "all", "alpha_mlm": 1.0}) == (True, "all", 4)
    assert flags({"mask_input": False}) == (False, "all", 4)
    found = problems_by_key([("od", 1.0, {"mask_input": False, "positions": "masked"}),
                             ("od", 1.0, {"mask_input": False, "alpha_mlm": 0.5})])
    assert "positions 'all'" in found["objectives.0.mask_input"] and "alpha_mlm" in found["objectives.1.mask_input"]


def test_hs_taps_follow_the_mapping_and_projections_follow_the_widths():
    objectives = build_objectives(objective_configs([("hs", 1.0, {"mapping": "uniform+last", "embeddings": True})]), teacher=TEACHER, student=STUDENT)
    assert objectives.teacher_taps == {Tap("hidden", layer) for layer in (0, 2, 4)}
    assert objectives.student_taps == {Tap("hidden", layer) for layer in (0, 1, 2)}
    shapes = [tuple(p.shape) for p in objectives.parameters()]
    assert shapes == [(64, 48), (64,)] * 4  # one learned map per pair: (0, 0), (1, 2), (1, 4), (2, 4)
    shared = {"mapping": "uniform+last", "embeddings": True, "projection_sharing": "student-layer"}
    shapes = [tuple(p.shape) for p in build_objectives(objective_configs([("hs", 1.0, shared)]), teacher=TEACHER, student=STUDENT).parameters()]
    assert shapes == [(64, 48), (64,)] * 3  # one learned map per distilled student layer

    def parameter_count(options):
        return sum(p.numel() for p in build_objectives(objective_configs([("hs", 1.0, options)]), teacher=TEACHER, student=SAME_WIDTH).parameters())

    assert parameter_count({}) == 0
    assert parameter_count({"projection": "always"}) == 64 * 64 + 64


def random_step(teacher: ModelShape, student: ModelShape, batch=2, tokens=6, positions=4) -> StepTensors:
    generator = torch.Generator().manual_seed(0)

    def tensors(shape, requires_grad):
        return {
            Tap(kind, layer): torch.randn(batch, tokens, shape.hidden, generator=generator, requires_grad=requires_grad)
            for kind in ("hidden", "query", "key", "value")
            for layer in range(0 if kind == "hidden" else 1, shape.layers + 1)
        }

    mask = torch.ones(batch, tokens, dtype=torch.long)
    mask[1, 4:] = 0
    return StepTensors(
        teacher=tensors(teacher, requires_grad=False),
        student=tensors(student, requires_grad=True),
        attention_mask=mask,
        teacher_logits=torch.randn(positions, teacher.vocab_size, generator=generator),
        student_logits=torch.randn(positions, student.vocab_size, generator=generator, requires_grad=True),
        logit_labels=torch.tensor([3, -100, 7, 1]),
    )


def test_objectives_combine_with_weights_and_log_each_loss_by_name():
    step = random_step(TEACHER, SAME_WIDTH)
    specs = [
        ("minilmv2", 2.0, {"relation_heads": 8, "relations": {"qk": 1.0, "vv": 0.5}}),
        ("hs", 0.5, {"projection": "never"}),
        ("od", 3.0, {"temperature": 1.0, "alpha_mlm": 0.25}),
        ("hs", 1.0, {"loss": "cosine", "projection": "never"}),
    ]
    loss = build_objectives(objective_configs(specs), teacher=TEACHER, student=SAME_WIDTH)(step)
    total, logged = loss.total, loss.parts
    t, s, mask = step.teacher, step.student, step.attention_mask
    student_qk, teacher_qk = (s[Tap("query", 2)], s[Tap("key", 2)]), (t[Tap("query", 4)], t[Tap("key", 4)])
    qk = losses.attention_relation_kl(student=student_qk, teacher=teacher_qk, attention_mask=mask, relation_heads=8)
    vv = losses.attention_relation_kl(student=s[Tap("value", 2)], teacher=t[Tap("value", 4)], attention_mask=mask, relation_heads=8)
    hs_mse = losses.hidden_mse(student=s[Tap("hidden", 2)], teacher=t[Tap("hidden", 4)], attention_mask=mask)
    hs_cos = losses.hidden_cosine(student=s[Tap("hidden", 2)], teacher=t[Tap("hidden", 4)], attention_mask=mask)
    kl = losses.output_kl(student=step.student_logits, teacher=step.teacher_logits, mask=None, temperature=1.0)
    mlm = losses.masked_lm_cross_entropy(step.student_logits, step.logit_labels)
    expected = {
        "minilmv2": qk + 0.5 * vv, "minilmv2/qk": qk, "minilmv2/vv": vv,
        "hs.1": hs_mse,
        "od": kl + 0.25 * mlm, "od/kl": kl, "od/mlm": mlm,
        "hs.3": hs_cos,
    }
    assert logged.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(logged[name], value.detach(), msg=name)
        assert not logged[name].requires_grad
    torch.testing.assert_close(total, 2 * (qk + 0.5 * vv) + 0.5 * hs_mse + 3 * (kl + 0.25 * mlm) + hs_cos)
    assert total.requires_grad


@pytest.mark.parametrize(
    "name, options, parts",
    [
        ("od", {"alpha_mlm": 1.0, "alpha_cos": 1.0}, {"od", "od/kl", "od/mlm", "od/cos"}),
        ("hs", {"mapping": "uniform-consecutive", "embeddings": True}, {"hs"}),
        ("minilmv2", {"relation_heads": 16}, {"minilmv2", "minilmv2/qq", "minilmv2/kk", "minilmv2/vv"}),
        ("minilm", {"heads": 4}, {"minilm", "minilm/attention", "minilm/value"}),
        ("tinybert", {"heads": 4}, {"tinybert", "tinybert/attention", "tinybert/hidden", "tinybert/embeddings"}),
        ("direct-minilm", {}, {"direct-minilm", "direct-minilm/q", "direct-minilm/k", "direct-minilm/v"}),
    ],
)
def test_each_objective_gives_finite_named_losses_across_widths(name, options, parts):
    objectives = build_objectives(objective_configs([(name, 1.0, options)]), teacher=TEACHER, student=STUDENT)
    step = random_step(TEACHER, STUDENT)
    loss = objectives(step)
    total, logged = loss.total, loss.parts
    assert set(logged) == parts
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert all(p.grad is not None for p in objectives.parameters())
    read = [tensor for tap, tensor in step.student.items() if tap in objectives.student_taps]
    assert read and all(tensor.grad is not None for tensor in read)
