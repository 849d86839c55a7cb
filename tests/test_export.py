"""`tadistill export`: ONNX graphs of tiny BERT and XLM-R students match PyTorch under
onnxruntime on batches and lengths they were not traced with; int8 runs and its deviation
is reported; a mismatch over the tolerance fails with the numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tadistill import cli
from tadistill.deploy.parity import failures

TEXTS = ["the model", "a student of the teacher is small and fast and learns the hidden state", "data"]


@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def exported(request, tiny_teacher_factory, tmp_path_factory):
    student = tiny_teacher_factory(request.param)
    out = tmp_path_factory.mktemp("export") / "onnx"
    assert cli.main(["export", str(student), "--quantize", "int8", "--output", str(out)]) == 0
    return request.param, student, out


def test_graph_matches_pytorch_on_new_shapes(exported):
    family, student, out = exported
    tokenizer = AutoTokenizer.from_pretrained(out)  # the export directory serves on its own
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")  # 3 rows, padded: not the traced shape
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    assert names == (["input_ids", "attention_mask", "token_type_ids"] if family == "bert" else ["input_ids", "attention_mask"])
    got = session.run(None, {name: batch[name].astype(np.int64) for name in names})[0]

    model = AutoModel.from_pretrained(student).eval()
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    mask = batch["attention_mask"].astype(bool)
    assert got.shape == expected.shape
    assert np.abs(got - expected)[mask].max() < 1e-4  # every real token; padding positions are not used
    # batch and sequence axes are symbolic, not the traced 2 x n
    assert all(isinstance(dim, str) for dim in session.get_inputs()[0].shape)


def test_report_holds_parity_and_int8_deviation(exported):
    _, _, out = exported
    report = json.loads((out / "export.json").read_text())
    fp32 = report["parity"]["fp32_vs_torch"]
    assert fp32["max_abs_diff"] < 1e-4 and fp32["min_cosine"] > 0.99999
    int8 = report["parity"]["int8_vs_fp32"]
    # int8 rounds the weights: a deviation that is there, finite, and small enough to keep the embeddings
    assert 0 < int8["max_abs_diff"] < 1.0 and math.isfinite(int8["max_abs_diff"])
    assert 0.99 < int8["min_cosine"] <= int8["mean_cosine"] <= 1.0 + 1e-6
    assert report["sizes_mb"]["int8"] < report["sizes_mb"]["fp32"]
    assert (out / "model_int8.onnx").is_file() and (out / "config.json").is_file()


def test_int8_graph_runs_on_its_own(exported):
    _, _, out = exported
    tokenizer = AutoTokenizer.from_pretrained(out)
    session = ort.InferenceSession(str(out / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    hidden = session.run(None, {node.name: batch[node.name].astype(np.int64) for node in session.get_inputs()})[0]
    assert hidden.shape[:2] == batch["input_ids"].shape and np.isfinite(hidden).all()


def test_mismatch_over_tolerance_fails_with_the_numbers(bert_teacher, tmp_path, capsys):
    out = tmp_path / "onnx"
    # no cosine reaches 1.5: the check must fail, say why, and leave nothing behind
    assert cli.main(["export", str(bert_teacher), "--output", str(out), "--min-cosine", "1.5"]) == 2
    error = capsys.readouterr().err
    assert "does not match PyTorch" in error and "min cosine of pooled embeddings 1.0" in error and "< 1.5" in error
    assert not out.exists() and not list(tmp_path.iterdir())


def test_failures_name_every_number_outside_the_tolerance():
    assert failures({"max_abs_diff": 1e-5, "min_cosine": 0.99999}, atol=1e-3, min_cosine=0.9999) == []
    found = failures({"max_abs_diff": float("nan"), "min_cosine": 0.5}, atol=1e-3, min_cosine=0.9999)
    assert len(found) == 2 and "nan" in found[0] and "0.500000" in found[1]
    assert failures({"max_abs_diff": 0.0, "same_prediction": 0.75}, atol=1e-3, min_cosine=0.9999) == [
        "same predicted class on 75.0% of the texts"
    ]


def test_bad_arguments_are_refused_before_any_compute(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "missing"), "--opset", "9"]) == 2
    error = capsys.readouterr().err
    assert "STUDENT=" in error and "no config.json" in error and "--opset=9" in error


def test_task_scores_before_and_after_export_and_quantisation(bert_teacher, tmp_path, capsys):
    import yaml
    from transformers import AutoModelForSequenceClassification

    from tadistill.evaluation.file_tasks import load_file_task, read_file_task
    from tiny import make_sentences

    topics = ["attention", "teacher", "corpus"]
    rows = [{"body": f"{s} {topics[i % 3]}", "queue": topics[i % 3]} for i, s in enumerate(make_sentences(60))]
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    task_file = tmp_path / "topics.yaml"
    task_file.write_text(yaml.safe_dump({"name": "topics", "data": str(tmp_path / "all.jsonl"),
                                         "split": {"dev": 0.5}, "text": "body", "label": "queue"}))
    # a classifier as `tadistill finetune` saves it (its head untrained: the scores need not be good, only equal)
    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_pretrained(bert_teacher, num_labels=3).eval()
    classifier.save_pretrained(tmp_path / "classifier")
    AutoTokenizer.from_pretrained(bert_teacher).save_pretrained(tmp_path / "classifier")

    out = tmp_path / "onnx"
    assert cli.main(["export", str(tmp_path / "classifier"), "--task", str(task_file), "--quantize", "int8",
                     "--output", str(out)]) == 0
    report = json.loads((out / "export.json").read_text())
    assert report["output"] == "logits"
    assert report["parity"]["fp32_vs_torch"]["same_prediction"] == 1.0
    scores = report["task"]["scores"]

    # the plain reference: accuracy of the PyTorch classifier's argmax on the dev split
    _, data = load_file_task(read_file_task(task_file))
    dev = data.evals["dev"]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "classifier")
    with torch.no_grad():
        logits = classifier(**tokenizer(list(dev["text_a"]), padding=True, return_tensors="pt")).logits
    accuracy = (logits.argmax(-1) == torch.tensor(list(dev["label"]))).float().mean().item()
    assert scores["torch fp32"]["dev"] == pytest.approx(accuracy)
    assert scores["onnx fp32"]["dev"] == pytest.approx(accuracy)
    assert 0.0 <= scores["onnx int8"]["dev"] <= 1.0
    assert "topics (classification)" in capsys.readouterr().out


def test_task_needs_a_fine_tuned_classifier(bert_teacher, tmp_path, capsys):
    assert cli.main(["export", str(bert_teacher), "--task", "sst2", "--output", str(tmp_path / "o")]) == 2
    assert "holds no fine-tuned classifier" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["roberta", "electra", "distilbert"])
def test_the_other_families_export_within_tolerance(family, tiny_teacher_factory, tmp_path):
    student = tiny_teacher_factory(family)
    assert cli.main(["export", str(student), "--output", str(tmp_path / "onnx")]) == 0
    fp32 = json.loads((tmp_path / "onnx" / "export.json").read_text())["parity"]["fp32_vs_torch"]
    assert fp32["max_abs_diff"] < 1e-4 and fp32["min_cosine"] > 0.99999
