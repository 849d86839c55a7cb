"""Teacher loading, student building and initialisation, saving for plain transformers."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

from tadistill.arch import adapter_for
from tadistill.errors import ModelError
from tadistill.config import StudentConfig
from tadistill.models import build_student, load_teacher, save_student, student_config, student_problems
from tiny import make_tiny_teacher


def _bert_param_count(vocab, positions, types, d, layers, inter):
    """Parameters of BertForMaskedLM counted by hand (decoder weight tied to embeddings)."""
    embeddings = vocab * d + positions * d + types * d + 2 * d
    block = 4 * (d * d + d) + 2 * (2 * d) + (d * inter + inter) + (inter * d + d)
    head = (d * d + d) + 2 * d + vocab  # transform dense, LayerNorm, output bias
    return embeddings + layers * block + head


def test_student_shape_and_parameter_count(bert_teacher):
    loaded = load_teacher(str(bert_teacher))
    teacher = loaded.model
    config = student_config(teacher.config, layers=1, hidden=32, heads=2)
    student = build_student(teacher=teacher, config=config)
    shape = adapter_for(student).shape(student.config)
    assert (shape.layers, shape.hidden, shape.heads, shape.intermediate) == (1, 32, 2, 128)  # 4 x hidden
    expected = _bert_param_count(teacher.config.vocab_size, 256, 2, 32, 1, 128)
    assert sum(p.numel() for p in student.parameters()) == expected


def test_shape_defaults_keep_teacher_values(bert_teacher):
    loaded = load_teacher(str(bert_teacher))
    teacher = loaded.model
    shape = adapter_for(teacher).shape(student_config(teacher.config, layers=1))
    assert (shape.hidden, shape.heads, shape.intermediate) == (64, 4, 128)


def test_teacher_layers_copies_tensors_exactly(any_teacher):
    loaded = load_teacher(str(any_teacher))
    teacher = loaded.model
    has_head = loaded.has_lm_head
    assert has_head
    student = build_student(teacher=teacher, config=student_config(teacher.config, layers=1), init="teacher-layers", init_layers=[2])
    adapter = adapter_for(teacher)
    t_block, s_block = adapter.layer(teacher, 2), adapter.layer(student, 1)
    for (name, t), (_, s) in zip(t_block.state_dict().items(), s_block.state_dict().items()):
        assert torch.equal(t, s), name
    for (name, t), (_, s) in zip(
        adapter.embedding_module(teacher).state_dict().items(), adapter.embedding_module(student).state_dict().items()
    ):
        assert torch.equal(t, s), name
    for (name, t), (_, s) in zip(adapter.lm_head_module(teacher).state_dict().items(), adapter.lm_head_module(student).state_dict().items()):
        assert torch.equal(t, s), name


def test_teacher_layers_default_mapping_is_uniform(tiny_teacher_factory):
    loaded = load_teacher(str(tiny_teacher_factory("bert", layers=4)))
    teacher = loaded.model
    student = build_student(teacher=teacher, config=student_config(teacher.config, layers=2), init="teacher-layers")
    adapter = adapter_for(teacher)
    for s_index, t_index in ((1, 2), (2, 4)):  # uniform 4 -> 2: blocks 2 and 4
        assert torch.equal(adapter.qkv(student, s_index).query.weight, adapter.qkv(teacher, t_index).query.weight)


def test_student_problems_name_each_key_once(bert_teacher):
    from tadistill.models import load_model_config

    teacher = load_model_config(str(bert_teacher))  # 2 layers x 64 wide, 4 heads
    assert student_problems(StudentConfig(layers=1, init="teacher-layers", init_layers=[2]), teacher) == []

    def problems(**student):
        return {(p.key, str(p.value)) for p in student_problems(StudentConfig(**student), teacher)}

    assert problems(layers=1, hidden=32, heads=2, intermediate=96, init="teacher-layers", init_layers=[1]) == {
        ("student.hidden", "32"), ("student.heads", "2"), ("student.intermediate", "96")}
    assert problems(layers=2, init="teacher-layers", init_mapping="last") == {("student.init_mapping", "last")}
    assert problems(layers=2, init="teacher-layers", init_layers=[1, 3]) == {("student.init_layers", "[1, 3]")}
    assert problems(layers=3, init="teacher-slice") == {("student.init_mapping", "uniform")}  # deeper than 2
    assert problems(hidden=100, heads=12) == {("student.heads", "12")}
    assert problems(layers=0, init="copy") == {("student.layers", "0"), ("student.init", "copy")}
    # without the teacher (it could not be read) what needs none is still checked
    assert {p.key for p in student_problems(StudentConfig(hidden=100, heads=12, init="copy"), None)} == {
        "student.heads", "student.init"}


def test_teacher_slice_truncates_heads_and_ffn(any_teacher):
    loaded = load_teacher(str(any_teacher))
    teacher, tokenizer = loaded.model, loaded.tokenizer
    # teacher 64 wide, 4 heads of 16; student 3 heads of 8 = 24 wide, FFN 40
    config = student_config(teacher.config, layers=1, hidden=24, heads=3, intermediate=40)
    student = build_student(teacher=teacher, config=config, init="teacher-slice", init_layers=[2])
    adapter = adapter_for(teacher)
    q_t, q_s = adapter.qkv(teacher, 2).query, adapter.qkv(student, 1).query
    expected = torch.cat([q_t.weight[h * 16 : h * 16 + 8, :24] for h in range(3)])  # head by head
    assert torch.equal(q_s.weight, expected)
    assert torch.equal(q_s.bias, torch.cat([q_t.bias[h * 16 : h * 16 + 8] for h in range(3)]))
    out_t = adapter.layer(teacher, 2).attention.output.dense.weight
    out_s = adapter.layer(student, 1).attention.output.dense.weight
    assert torch.equal(out_s, torch.cat([out_t[:24, h * 16 : h * 16 + 8] for h in range(3)], dim=1))
    ffn_t = adapter.layer(teacher, 2).intermediate.dense.weight
    assert torch.equal(adapter.layer(student, 1).intermediate.dense.weight, ffn_t[:40, :24])
    batch = tokenizer(["the model is small", "a teacher"], return_tensors="pt", padding=True)
    logits = student(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], teacher.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_saved_student_loads_with_plain_transformers(any_teacher, tmp_path):
    loaded = load_teacher(str(any_teacher))
    teacher, tokenizer = loaded.model, loaded.tokenizer
    student = build_student(teacher=teacher, config=student_config(teacher.config, layers=1, hidden=32, heads=2), init="teacher-slice")
    out = save_student(student, tokenizer, tmp_path / "student", {"teacher": str(any_teacher)})
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin"))
    assert json.loads((out / "tadistill.json").read_text())["teacher"] == str(any_teacher)
    batch = AutoTokenizer.from_pretrained(out)(["the model is small"], return_tensors="pt")
    student.eval()
    with torch.no_grad():
        expected = student(**batch, output_hidden_states=True).hidden_states[-1]
        mlm = AutoModelForMaskedLM.from_pretrained(out).eval()
        assert torch.allclose(mlm(**batch).logits, student(**batch).logits, atol=1e-6)
        assert torch.allclose(AutoModel.from_pretrained(out).eval()(**batch).last_hidden_state, expected, atol=1e-6)
        classifier = AutoModelForSequenceClassification.from_pretrained(out, num_labels=3)
        assert classifier(**batch).logits.shape == (1, 3)


def test_save_is_atomic_and_keeps_previous_on_failure(bert_teacher, tmp_path, monkeypatch):
    loaded = load_teacher(str(bert_teacher))
    teacher, tokenizer = loaded.model, loaded.tokenizer
    student = build_student(teacher=teacher, config=student_config(teacher.config, layers=1))
    out = save_student(student, tokenizer, tmp_path / "student", {"step": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer, "save_pretrained", crash)
    with pytest.raises(OSError):
        save_student(student, tokenizer, out, {"step": 2})
    assert json.loads((out / "tadistill.json").read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["student"]  # no temp dir left behind


def test_headless_teacher_loads_as_base_model(tmp_path):
    path = make_tiny_teacher("bert", tmp_path / "encoder", with_lm_head=False)
    loaded = load_teacher(str(path))
    model = loaded.model
    has_head = loaded.has_lm_head
    assert not has_head
    assert type(model).__name__ == "BertModel"
    assert not any(p.requires_grad for p in model.parameters())


def test_missing_teacher_path_is_one_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_teacher(str(tmp_path / "no" / "such-model"))


def test_init_mapping_chooses_the_copied_blocks(tiny_teacher_factory):
    loaded = load_teacher(str(tiny_teacher_factory("bert", layers=4)))
    teacher = loaded.model
    student = build_student(teacher=teacher, config=student_config(teacher.config, layers=2), init="teacher-layers",
                            init_mapping="uniform-consecutive")  # groups (1, 2), (3, 4): copy 2 and 4
    adapter = adapter_for(teacher)
    assert torch.equal(adapter.qkv(student, 1).query.weight, adapter.qkv(teacher, 2).query.weight)
    assert torch.equal(adapter.qkv(student, 2).query.weight, adapter.qkv(teacher, 4).query.weight)
