"""`tadistill agreement`: embedding agreement with the teacher and zero-shot pair similarity,
with the teacher's own pooling and a reusable cache of the teacher's embeddings."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from scipy.stats import spearmanr
from transformers import AutoModel, AutoTokenizer

from tadistill import cli
from tadistill.errors import DataError
from tadistill.evaluation.embeddings import embed
from tadistill.recipes.agreement import ScoredPairs, evaluate_agreement
from tiny import make_sentences


@pytest.fixture(scope="module")
def models(tiny_teacher_factory):
    return tiny_teacher_factory("bert", layers=2), tiny_teacher_factory("bert", layers=2, seed=1)


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    path = tmp_path_factory.mktemp("texts") / "heldout.txt"
    path.write_text("\n".join(make_sentences(40, seed=7)) + "\n")
    return path


def test_a_model_agrees_fully_with_itself_and_the_cli_writes_json(models, texts, tmp_path, capsys):
    teacher, _ = models
    out = tmp_path / "agreement.json"
    assert cli.main(["agreement", str(teacher), "--teacher", str(teacher), "--texts", str(texts), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["texts"] == 40 and result["pooling"] == "mean"
    assert result["mean_cos"] == pytest.approx(1.0) and result["spearman"] == pytest.approx(1.0)
    assert result["nn_at_1"] == 1.0 and result["similarity"] == {}
    assert json.loads(capsys.readouterr().out) == result


def test_pair_similarity_equals_a_plain_reference(models, texts, tmp_path):
    teacher, student = models
    sentences = make_sentences(30, seed=11)
    pairs = tmp_path / "pairs.tsv"
    with pairs.open("w", newline="") as file:
        writer = csv.writer(file, delimiter="\t")
        writer.writerow(["left", "right", "gold"])
        for i in range(15):
            writer.writerow([sentences[i], sentences[i + 15], i / 3])
    result = evaluate_agreement(str(student), str(teacher), str(texts), pairs=[ScoredPairs(str(pairs), "left", "right", "gold")])

    def spearman(model_dir):
        model, tokenizer = AutoModel.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
        first, second = embed(model, tokenizer, sentences[:15]), embed(model, tokenizer, sentences[15:])
        cosines = torch.nn.functional.cosine_similarity(first, second, dim=-1)
        return spearmanr(cosines.numpy(), [i / 3 for i in range(15)]).statistic

    found = result["similarity"]["pairs"]
    assert found["pairs"] == 15
    assert found["spearman"] == pytest.approx(spearman(student), abs=1e-6)
    assert found["teacher_spearman"] == pytest.approx(spearman(teacher), abs=1e-6)
    assert result["mean_cos"] < 0.999  # two different models


def test_the_teachers_pooling_and_embedding_cache_are_used(models, texts, tmp_path):
    teacher, student = models
    st_teacher = tmp_path / "st-teacher"
    shutil.copytree(teacher, st_teacher)
    (st_teacher / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (st_teacher / "1_Pooling").mkdir()
    (st_teacher / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    cache = tmp_path / "teacher.safetensors"
    first = evaluate_agreement(str(student), str(st_teacher), str(texts), teacher_cache=cache)
    assert first["pooling"] == "cls" and cache.is_file()
    stamp = cache.stat().st_mtime_ns
    again = evaluate_agreement(str(student), str(st_teacher), str(texts), teacher_cache=cache)
    assert again == first and cache.stat().st_mtime_ns == stamp  # read, not rewritten
    fewer = evaluate_agreement(str(student), str(st_teacher), str(texts), teacher_cache=cache, max_texts=20)
    assert fewer["texts"] == 20 and cache.stat().st_mtime_ns != stamp  # other texts: recomputed


def test_bad_inputs_name_what_is_wrong(models, texts, tmp_path):
    teacher, student = models
    with pytest.raises(DataError, match="no such file"):
        evaluate_agreement(str(student), str(teacher), str(tmp_path / "missing.txt"))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b,score\nx,y,0.5\n")
    with pytest.raises(DataError, match="pairs.csv has no column 'sentence1'; columns: a, b, score"):
        evaluate_agreement(str(student), str(teacher), str(texts), pairs=[ScoredPairs(str(pairs))])


def test_embeddings_come_back_in_input_order_as_each_text_alone(models):
    """`embed` batches texts by length; every row is still its own text's embedding, as if the
    text had been embedded alone (no padding), and an empty list gives no rows."""
    model_dir, _ = models
    model, tokenizer = AutoModel.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    sentences = make_sentences(12, seed=3)
    texts = [" ".join(sentences[: 1 + i % 5]) for i in range(12)]  # lengths 1..5 sentences, interleaved
    batched = embed(model, tokenizer, texts, batch_size=4)
    alone = torch.cat([embed(model, tokenizer, [text], batch_size=1) for text in texts])
    assert torch.allclose(batched, alone, atol=1e-5)
    assert embed(model, tokenizer, []).shape == (0, model.config.hidden_size)
