"""`tadistill fit-head`: a teacher saved without its masked-LM head gets a trained one on the
frozen encoder, saved as a plain *ForMaskedLM directory that `od` distils from."""

from __future__ import annotations

import collections
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

from tadistill import cli
from tadistill.errors import ConfigError
from tadistill.models import load_teacher
from tadistill.recipes.fit_head import fit_head
from tiny import make_sentences, make_tiny_teacher


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit-head") / "corpus.txt"
    path.write_text("\n".join(make_sentences(1200, seed=5, min_words=8, max_words=30)) + "\n")
    return path


def unigram_entropy(tokenizer, path) -> float:
    """Cross-entropy of the best context-free prediction (the corpus's token frequencies): what a
    head on a random tiny encoder over random word sequences can reach at best."""
    counts = collections.Counter(i for line in path.read_text().splitlines()
                                 for i in tokenizer(line, add_special_tokens=False)["input_ids"])
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_the_fitted_head_predicts_held_out_masked_tokens_far_better(family, corpus, tmp_path):
    teacher = make_tiny_teacher(family, tmp_path / "teacher", layers=2, hidden=32, heads=2, intermediate=64,
                                with_lm_head=False)
    result = fit_head(str(teacher), [str(corpus)], tmp_path / "head", documents="line", steps=300,
                      learning_rate=3e-2, batch_size=16, max_seq_length=32, precision="no")
    before, after = result["before"], result["after"]
    assert before["tokens"] == after["tokens"] > 150  # the same held-out masked tokens, measured twice
    floor = unigram_entropy(AutoTokenizer.from_pretrained(teacher), corpus)
    assert before["loss"] > floor + 0.6  # the untrained head is near log V
    assert after["loss"] < before["loss"] - 0.6 and after["loss"] < floor + 0.25  # it learned what can be learned here
    assert after["top1"] > before["top1"]
    assert json.loads((tmp_path / "head" / "fit_head.json").read_text())["after"] == after

    # the encoder is the teacher's, unchanged; the head loads as a trained one
    original = AutoModel.from_pretrained(teacher).state_dict()
    fitted, info = AutoModelForMaskedLM.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert not info["missing_keys"]
    for name, tensor in fitted.base_model.state_dict().items():
        if name in original:
            assert torch.equal(tensor, original[name]), name
    assert fitted.get_output_embeddings().weight is fitted.get_input_embeddings().weight
    assert load_teacher(str(tmp_path / "head")).has_lm_head
    assert any(name.endswith(".safetensors") for name in (p.name for p in (tmp_path / "head").iterdir()))


def test_od_distils_from_the_fitted_head(corpus, tmp_path):
    teacher = make_tiny_teacher("bert", tmp_path / "teacher", layers=2, hidden=32, heads=2, intermediate=64,
                                with_lm_head=False)
    assert cli.main(["fit-head", str(teacher), "--data", str(corpus), "--documents", "line", "--output",
                     str(tmp_path / "head"), "--steps", "20", "--batch-size", "8", "--max-seq-length", "32",
                     "--precision", "no"]) == 0
    config = tmp_path / "od.yaml"
    config.write_text(
        f"teacher: {{path: {tmp_path / 'head'}}}\n"
        "student: {layers: 1, init: teacher-layers, init_layers: [2]}\n"
        f"data: {{sources: [{{path: {corpus}, documents: line}}], max_seq_length: 32}}\n"
        "objectives: [{name: od, temperature: 2.0}]\n"
        "train: {batch_size: 8, max_steps: 4, learning_rate: 1.0e-3, warmup_steps: 1, mixed_precision: 'no', log_every: 1}\n"
    )
    assert cli.main(["distill", str(config), "--output", str(tmp_path / "run")]) == 0
    losses = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("od" in str(entry) for entry in losses)
    assert load_file(tmp_path / "run" / "student" / "model.safetensors")


def test_bad_input_is_refused_before_any_training(corpus, tmp_path, capsys):
    with_head = make_tiny_teacher("bert", tmp_path / "with-head", layers=1, hidden=32, heads=2, intermediate=64)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("user data")
    with pytest.raises(ConfigError) as raised:
        fit_head(str(with_head), [str(tmp_path / "missing.txt")], tmp_path / "taken", steps=0, learning_rate=-1.0)
    message = str(raised.value)
    for expected in ("already has a trained masked-LM head", "missing.txt", "--steps", "--learning-rate", "not empty"):
        assert expected in message, expected
    assert (tmp_path / "taken" / "keep.txt").read_text() == "user data"

    distilbert = make_tiny_teacher("distilbert", tmp_path / "distilbert", layers=1, hidden=32, heads=2, intermediate=64,
                                   with_lm_head=False)
    assert cli.main(["fit-head", str(distilbert), "--data", str(corpus), "--output", str(tmp_path / "out")]) == 2
    assert "no masked-LM head class to fit" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
