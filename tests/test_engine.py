"""One distillation step on tiny teacher/student pairs of every family, against full-forward references."""

from __future__ import annotations

import pytest
import torch
from tiny import make_sentences, objective_configs
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

from tadistill import losses
from tadistill.arch import adapter_for
from tadistill.attention import MATMUL, set_attention
from tadistill.engine import Distiller, distill_losses
from tadistill.errors import DataError, ModelError
from tadistill.objectives import build_objectives

FAMILIES = ("bert", "roberta", "xlm-roberta")
ALL_OBJECTIVES = [
    ("od", 1.0, {"alpha_mlm": 0.5, "alpha_cos": 0.5}),
    ("hs", 1.0, {"mapping": "uniform-consecutive", "embeddings": True}),
    ("minilmv2", 1.0, {"relation_heads": 16, "teacher_layer": 3, "relations": {"qk": 1.0, "vv": 1.0}}),
    ("minilm", 1.0, {"heads": 4}),
    ("tinybert", 1.0, {"heads": 8}),
    ("direct-minilm", 1.0, {}),
]


def load_pair(teacher_dir, student_hidden=48, student_heads=3):
    """The teacher (4L x 64 x 4 heads) and a random 2-layer student of another width and head count."""
    teacher = AutoModelForMaskedLM.from_pretrained(teacher_dir).eval().requires_grad_(False)
    student_config = AutoConfig.from_pretrained(
        teacher_dir, num_hidden_layers=2, hidden_size=student_hidden, num_attention_heads=student_heads,
        intermediate_size=2 * student_hidden,
    )
    torch.manual_seed(0)
    return teacher, AutoModelForMaskedLM.from_config(student_config)


def shapes(teacher, student) -> dict:
    return {"teacher": adapter_for(teacher).shape(teacher.config), "student": adapter_for(student).shape(student.config)}


def make_batch(teacher_dir, mlm: bool, size: int = 6):
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    features = [tokenizer(text, truncation=True, max_length=64) for text in make_sentences(size, seed=3)]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=mlm, mlm_probability=0.3, seed=0)
    batch = dict(collator(features))
    if not mlm:
        del batch["labels"]  # causal-LM labels: a plain-text run has none
    assert (batch["attention_mask"] == 0).any()  # mixed lengths
    return batch


@pytest.fixture(scope="module", params=FAMILIES)
def teacher_dir(request, tiny_teacher_factory):
    return tiny_teacher_factory(request.param, layers=4)


def test_every_objective_runs_on_each_family_across_widths_and_head_counts(teacher_dir):
    teacher, student = load_pair(teacher_dir)
    objectives = build_objectives(objective_configs(ALL_OBJECTIVES), **shapes(teacher, student))
    loss = distill_losses(teacher=teacher, student=student, objectives=objectives, batch=make_batch(teacher_dir, mlm=objectives.needs_mlm))
    total, logged = loss.total, loss.parts
    assert torch.isfinite(total) and total.dtype == torch.float32
    assert {"od", "hs", "minilmv2", "minilm", "tinybert", "direct-minilm"} <= logged.keys()
    assert all(torch.isfinite(value) for value in logged.values())


def test_gradients_reach_only_the_student_and_projections_and_the_teacher_never_changes(bert_teacher_4l):
    teacher, student = load_pair(bert_teacher_4l)
    objectives = build_objectives(objective_configs(ALL_OBJECTIVES), **shapes(teacher, student))
    teacher_before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    optimizer = torch.optim.AdamW([*student.parameters(), *objectives.parameters()], lr=1e-2)
    batch = make_batch(bert_teacher_4l, mlm=True)
    for _ in range(2):
        loss = distill_losses(teacher=teacher, student=student, objectives=objectives, batch=batch)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in objectives.parameters())
    trained = [p for p in student.parameters() if p.grad is not None]
    assert len(trained) > 0.9 * len(list(student.parameters()))
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, teacher_before[name]), name


def test_distiller_trains_the_student_and_projections_only(bert_teacher_4l):
    teacher, student = load_pair(bert_teacher_4l)
    student.eval()
    objectives = build_objectives(objective_configs([("hs", 1.0, {"mapping": "uniform"}), ("od", 1.0, {})]), **shapes(teacher, student))
    distiller = Distiller(student, objectives)
    trained = {id(p) for p in distiller.parameters()}
    assert trained == {id(p) for p in [*student.parameters(), *objectives.parameters()]}
    assert not trained & {id(p) for p in teacher.parameters()}
    batch = make_batch(bert_teacher_4l, mlm=True)
    loss = distiller(teacher, batch)
    expected = distill_losses(teacher=teacher, student=student, objectives=objectives, batch=batch)
    torch.testing.assert_close(loss.total, expected.total)
    assert loss.parts.keys() == expected.parts.keys()


@pytest.fixture(scope="module")
def bert_teacher_4l(tiny_teacher_factory):
    return tiny_teacher_factory("bert", layers=4)


def full_forward(teacher, student, batch):
    """Hidden states of every layer of both models, and each block's Q, K, V recomputed from its input."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        states = {"teacher": teacher(**inputs, output_hidden_states=True).hidden_states,
                  "student": student(**inputs, output_hidden_states=True).hidden_states}

    def qkv(model, hidden_states, layer):
        projections = adapter_for(model).qkv(model, layer)
        with torch.no_grad():
            return {kind: getattr(projections, kind)(hidden_states[layer - 1]) for kind in ("query", "key", "value")}

    return states, {
        side: {layer: qkv(model, states[side], layer) for layer in range(1, len(states[side]))}
        for side, model in (("teacher", teacher), ("student", student))
    }


def test_losses_equal_full_forward_references(bert_teacher_4l):
    teacher, student = load_pair(bert_teacher_4l, student_hidden=64, student_heads=4)
    student.eval()  # no dropout, so the two student forwards agree
    specs = [
        ("od", 1.0, {"temperature": 2.0, "alpha_mlm": 1.0, "positions": "masked"}),
        ("minilmv2", 1.0, {"relation_heads": 8, "teacher_layer": 3}),
        ("hs", 1.0, {"mapping": "uniform", "projection": "never"}),
    ]
    objectives = build_objectives(objective_configs(specs), **shapes(teacher, student))
    batch = make_batch(bert_teacher_4l, mlm=True)
    logged = distill_losses(teacher=teacher, student=student, objectives=objectives, batch=batch).parts

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        full_teacher, full_student = teacher(**inputs), student(**inputs)
    masked = batch["labels"] != -100
    mask = batch["attention_mask"]
    kl = losses.output_kl(student=full_student.logits, teacher=full_teacher.logits, mask=masked, temperature=2.0)
    mlm = losses.masked_lm_cross_entropy(full_student.logits, batch["labels"])
    torch.testing.assert_close(logged["od/kl"], kl)
    torch.testing.assert_close(logged["od/mlm"], mlm)

    hidden, qkv = full_forward(teacher, student, batch)
    relations = [
        losses.attention_relation_kl(student=qkv["student"][2][kind], teacher=qkv["teacher"][3][kind],
                                     attention_mask=mask, relation_heads=8)
        for kind in ("query", "key", "value")
    ]
    torch.testing.assert_close(logged["minilmv2"], sum(relations))  # the paper's sum, weight 1 each
    hs = [  # uniform 4 -> 2: student 1 <- teacher 2, student 2 <- teacher 4
        losses.hidden_mse(student=hidden["student"][s], teacher=hidden["teacher"][t], attention_mask=mask)
        for s, t in ((1, 2), (2, 4))
    ]
    torch.testing.assert_close(logged["hs"], sum(hs) / 2)


def test_tinybert_minilm_and_direct_minilm_read_the_layers_they_declare(bert_teacher_4l):
    """Each loss part equals the loss of the tensors of the layers the method pairs, taken from full forwards."""
    teacher, student = load_pair(bert_teacher_4l, student_hidden=64, student_heads=4)
    student.eval()
    specs = [
        ("tinybert", 1.0, {"mapping": "uniform", "projection": "never"}),  # student 1 <- teacher 2, 2 <- 4
        ("minilm", 1.0, {"teacher_layer": 3, "student_layer": 1}),
        ("direct-minilm", 1.0, {"teacher_layer": 3, "student_layer": 2, "projection": "never"}),
    ]
    objectives = build_objectives(objective_configs(specs), **shapes(teacher, student))
    batch = make_batch(bert_teacher_4l, mlm=False)
    logged = distill_losses(teacher=teacher, student=student, objectives=objectives, batch=batch).parts
    (hidden, qkv), mask = full_forward(teacher, student, batch), batch["attention_mask"]
    s, t = qkv["student"], qkv["teacher"]

    scores = [
        losses.attention_score_mse(student_query=s[i]["query"], student_key=s[i]["key"], teacher_query=t[j]["query"],
                                   teacher_key=t[j]["key"], attention_mask=mask, heads=4)
        for i, j in ((1, 2), (2, 4))
    ]
    states = [losses.hidden_mse(student=hidden["student"][i], teacher=hidden["teacher"][j], attention_mask=mask)
              for i, j in ((1, 2), (2, 4))]
    embeddings = losses.hidden_mse(student=hidden["student"][0], teacher=hidden["teacher"][0], attention_mask=mask)
    torch.testing.assert_close(logged["tinybert/attention"], sum(scores))  # summed over layers, as TinyBERT
    torch.testing.assert_close(logged["tinybert/hidden"], sum(states))
    torch.testing.assert_close(logged["tinybert/embeddings"], embeddings)

    attention = losses.attention_kl(student_query=s[1]["query"], student_key=s[1]["key"], teacher_query=t[3]["query"],
                                    teacher_key=t[3]["key"], attention_mask=mask, heads=4)
    value = losses.attention_relation_kl(student=s[1]["value"], teacher=t[3]["value"], attention_mask=mask,
                                         relation_heads=4)
    torch.testing.assert_close(logged["minilm/attention"], attention)
    torch.testing.assert_close(logged["minilm/value"], value)

    for letter, kind in (("q", "query"), ("k", "key"), ("v", "value")):
        expected = losses.hidden_mse(student=s[2][kind], teacher=t[3][kind], attention_mask=mask)
        torch.testing.assert_close(logged[f"direct-minilm/{letter}"], expected)
    # and no other layer would have given the same numbers
    assert not torch.allclose(logged["minilm/value"], losses.attention_relation_kl(
        student=s[2]["value"], teacher=t[4]["value"], attention_mask=mask, relation_heads=4))


def _count_head_calls(model, calls: list):
    adapter_for(model).lm_head_module(model).register_forward_hook(lambda m, args, out: calls.append(tuple(out.shape)))


@pytest.mark.parametrize("attention", ["sdpa", MATMUL])
def test_tinybert_on_the_models_own_scores_equals_the_qk_reference(teacher_dir, attention):
    """kernel "scores" reads the matmul kernel's scores (sdpa: formed from Q/K by the taps): the
    same loss and student gradients as the plain fp32 loss from Q/K, padding included."""
    teacher, student = load_pair(teacher_dir, student_hidden=32, student_heads=4)
    for model in (teacher, student):
        set_attention(model, attention)
    batch = make_batch(teacher_dir, mlm=False)
    results = []
    for kernel in ("scores", "reference"):
        torch.manual_seed(0)
        objectives = build_objectives(objective_configs([("tinybert", 1.0, {"kernel": kernel})]), **shapes(teacher, student))
        student.zero_grad()
        loss = distill_losses(teacher=teacher, student=student, objectives=objectives, batch=batch)
        loss.total.backward()
        results.append((loss.parts["tinybert/attention"], [p.grad.clone() for p in student.parameters() if p.grad is not None]))
    (scores_loss, scores_grads), (reference_loss, reference_grads) = results
    torch.testing.assert_close(scores_loss, reference_loss, atol=1e-6, rtol=1e-6)
    assert len(scores_grads) == len(reference_grads) > 0
    for got, expected in zip(scores_grads, reference_grads):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_lm_heads_run_only_for_od_and_only_on_the_positions_it_reads(bert_teacher_4l):
    teacher, student = load_pair(bert_teacher_4l)
    calls = []
    _count_head_calls(teacher, calls)
    _count_head_calls(student, calls)
    batch = make_batch(bert_teacher_4l, mlm=True)
    mha = build_objectives(objective_configs([("minilmv2", 1.0, {"relation_heads": 16})]), **shapes(teacher, student))
    distill_losses(teacher=teacher, student=student, objectives=mha, batch=batch)
    assert calls == []
    od = build_objectives(objective_configs([("od", 1.0, {"positions": "masked"})]), **shapes(teacher, student))
    distill_losses(teacher=teacher, student=student, objectives=od, batch=batch)
    masked = int((batch["labels"] != -100).sum())
    assert calls == [(masked, teacher.config.vocab_size)] * 2
    calls.clear()
    od = build_objectives(objective_configs([("od", 1.0, {})]), **shapes(teacher, student))  # DistilBERT: all tokens
    distill_losses(teacher=teacher, student=student, objectives=od, batch=batch)
    real = int(batch["attention_mask"].sum())
    assert calls == [(real, teacher.config.vocab_size)] * 2 and real > masked


def test_the_objectives_get_the_teachers_own_tensors_not_copies(bert_teacher_4l):
    """od's (N, V) teacher logits are the step's largest tensor: the losses read the LM head's
    output itself, which carries no graph, and the reference kernel can still save it."""
    teacher, student = load_pair(bert_teacher_4l)
    produced, received = [], []
    adapter_for(teacher).lm_head_module(teacher).register_forward_hook(lambda m, args, out: produced.append(out))
    specs = [("od", 1.0, {"alpha_mlm": 0.5, "kernel": "reference"}), ("hs", 1.0, {"mapping": "last"})]
    objectives = build_objectives(objective_configs(specs), **shapes(teacher, student))
    objectives.register_forward_pre_hook(lambda m, args: received.append(args[0]))
    loss = distill_losses(teacher=teacher, student=student, objectives=objectives, batch=make_batch(bert_teacher_4l, mlm=True))
    loss.total.backward()  # the reference kernels save the teacher's tensors for backward
    (step,) = received
    assert step.teacher_logits.data_ptr() == produced[0].data_ptr()
    for tensor in (step.teacher_logits, *step.teacher.values()):
        assert not tensor.requires_grad and not tensor.is_inference()


def test_od_defaults_to_soft_targets_on_every_real_token(bert_teacher_4l):
    teacher, student = load_pair(bert_teacher_4l, student_hidden=64, student_heads=4)
    student.eval()
    od = build_objectives(objective_configs([("od", 1.0, {"temperature": 2.0})]), **shapes(teacher, student))
    assert od.needs_mlm  # the input is MLM-masked, as DistilBERT's
    batch = make_batch(bert_teacher_4l, mlm=True)
    logged = distill_losses(teacher=teacher, student=student, objectives=od, batch=batch).parts
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        full_teacher, full_student = teacher(**inputs), student(**inputs)
    expected = losses.output_kl(student=full_student.logits, teacher=full_teacher.logits,
                                mask=batch["attention_mask"], temperature=2.0)
    torch.testing.assert_close(logged["od"], expected)


def test_a_micro_batch_without_masked_tokens_gives_zero_od_loss(bert_teacher_4l):
    teacher, student = load_pair(bert_teacher_4l)
    od = build_objectives(objective_configs([("od", 1.0, {"alpha_mlm": 1.0, "positions": "masked"})]), **shapes(teacher, student))
    batch = make_batch(bert_teacher_4l, mlm=True)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss = distill_losses(teacher=teacher, student=student, objectives=od, batch=batch)
    assert loss.total.item() == 0.0 and loss.parts["od/kl"].item() == 0.0
    loss.total.backward()  # still a graph to run backward on


def test_plain_text_batches_serve_mha_and_hs(bert_teacher_4l):
    teacher, student = load_pair(bert_teacher_4l)
    specs = [("minilmv2", 1.0, {"relation_heads": 16}), ("hs", 1.0, {})]
    objectives = build_objectives(objective_configs(specs), **shapes(teacher, student))
    assert not objectives.needs_mlm
    loss = distill_losses(teacher=teacher, student=student, objectives=objectives, batch=make_batch(bert_teacher_4l, mlm=False))
    assert torch.isfinite(loss.total)


def test_bf16_teacher_under_autocast_gives_fp32_losses(bert_teacher_4l):
    teacher, student = load_pair(bert_teacher_4l)
    teacher.to(torch.bfloat16)
    objectives = build_objectives(objective_configs(ALL_OBJECTIVES), **shapes(teacher, student))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = distill_losses(teacher=teacher, student=student, objectives=objectives, batch=make_batch(bert_teacher_4l, mlm=True))
    total, logged = loss.total, loss.parts
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert all(value.dtype == torch.float32 for value in logged.values())
    total.backward()
    assert all(p.grad is not None for p in objectives.parameters())


def test_a_teacher_without_lm_head(bert_teacher_4l):
    _, student = load_pair(bert_teacher_4l)
    base_teacher = AutoModel.from_pretrained(bert_teacher_4l).eval()
    batch = make_batch(bert_teacher_4l, mlm=True)
    mha = build_objectives(objective_configs([("minilmv2", 1.0, {"relation_heads": 16})]), **shapes(base_teacher, student))
    assert torch.isfinite(distill_losses(teacher=base_teacher, student=student, objectives=mha, batch=batch).total)
    od = build_objectives(objective_configs([("od", 1.0, {})]), **shapes(base_teacher, student))
    with pytest.raises(ModelError, match="no masked-LM head"):
        distill_losses(teacher=base_teacher, student=student, objectives=od, batch=batch)


def test_masked_positions_need_labels(bert_teacher_4l):
    teacher, student = load_pair(bert_teacher_4l)
    od = build_objectives(objective_configs([("od", 1.0, {"positions": "masked"})]), **shapes(teacher, student))
    with pytest.raises(DataError, match="no labels"):
        distill_losses(teacher=teacher, student=student, objectives=od, batch=make_batch(bert_teacher_4l, mlm=False))
