"""`distill` writes the student of a sentence-transformers teacher in the teacher's layout:
`SentenceTransformer(student)` loads it and embeds exactly as the declared pooling of its
hidden states does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from tadistill.cli import main
from tiny import make_sentences

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def sentence_transformers_teacher(base: Path, out: Path, pooling: str, dense: bool = False) -> Path:
    """A copy of a tiny teacher with a sentence-transformers module list: Transformer, Pooling
    (`pooling`: "cls" or "mean"), Normalize, and optionally a Dense module after the pooling."""
    shutil.copytree(base, out)
    hidden = json.loads((base / "config.json").read_text())["hidden_size"]
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if dense:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        (out / "2_Dense").mkdir()
        (out / "2_Dense" / "config.json").write_text(json.dumps({"in_features": hidden, "out_features": 16}))
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
                    "type": "sentence_transformers.models.Normalize"})
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(make_sentences(200, seed=3, min_words=8, max_words=40)) + "\n")
    return path


def distill(teacher: Path, corpus: Path, run: Path) -> int:
    # a narrower student (48 wide) than the teacher (64): the pooling's width must follow it
    return main(["distill", str(CONFIGS / "mix.yaml"), "--output", str(run), "--set", f"teacher.path={teacher}",
                 "--set", f"data.sources.0.path={corpus}", "--set", "train.max_steps=3", "--set", "train.warmup_steps=0"])


@pytest.mark.parametrize(("family", "pooling"), [("bert", "cls"), ("bert", "mean"), ("xlm-roberta", "mean")])
def test_student_loads_with_sentence_transformers_and_matches_manual_pooling(family, pooling, tiny_teacher_factory, corpus, tmp_path):
    teacher = sentence_transformers_teacher(tiny_teacher_factory(family, layers=4), tmp_path / "teacher", pooling)
    assert distill(teacher, corpus, tmp_path / "run") == 0
    student = tmp_path / "run" / "student"
    assert json.loads((student / "modules.json").read_text()) == json.loads((teacher / "modules.json").read_text())
    assert json.loads((student / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"] == 48

    texts = make_sentences(6, seed=9)
    tokenizer = AutoTokenizer.from_pretrained(student)
    model = AutoModel.from_pretrained(student).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, n, 48)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, n, 1)
    pooled = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)  # (B, 48)
    expected = F.normalize(pooled, dim=-1)

    encoder = SentenceTransformer(str(student), device="cpu")
    got = encoder.encode(texts, convert_to_tensor=True).cpu()
    assert got.shape == (6, 48)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_dense_module_of_another_width_keeps_the_plain_student(tiny_teacher_factory, corpus, tmp_path, capsys):
    teacher = sentence_transformers_teacher(tiny_teacher_factory("bert", layers=4), tmp_path / "teacher", "mean", dense=True)
    assert distill(teacher, corpus, tmp_path / "run") == 0
    student = tmp_path / "run" / "student"
    assert not (student / "modules.json").exists() and (student / "model.safetensors").is_file()
    assert "not written as a sentence-transformers model" in capsys.readouterr().out
