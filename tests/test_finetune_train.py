"""The fine-tuning loop: every task trains, a tiny model learns, the CLI writes a usable model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from accelerate.state import AcceleratorState
from transformers import AutoModelForSequenceClassification

from finetune_data import write_task
from tadistill import cli
from tadistill.evaluation.layouts import load_task_data
from tadistill.evaluation.tasks import TASKS, get_task
from tadistill.recipes.finetune import encode, finetune, load_tokenizer


def prepared(model_dir, name, data_dir, max_seq_length=32):
    task = get_task(name)
    tokenizer = load_tokenizer(model_dir)
    return task, encode(load_task_data(task, data_dir), tokenizer, max_seq_length), tokenizer


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_trains_and_is_scored(bert_teacher, tmp_path, name):
    write_task(tmp_path / "data", name, n_train=16, n_dev=6)
    task, data, tokenizer = prepared(bert_teacher, name, tmp_path / "data")

    metrics = finetune(bert_teacher, task, data, tokenizer, lr=1e-4, epochs=1, batch_size=8,
                       precision="no", output_dir=tmp_path / "out")

    expected_sets = set(data.evals) | ({"dev_avg", "test_avg"} if name == "xnli" else set())
    assert set(metrics) == expected_sets
    for values in metrics.values():
        assert -1.0 <= values["score"] <= 1.0
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["metrics"] == metrics
    assert record["score"] == metrics[task.report_on]["score"]
    assert record["settings"]["train_examples"] == 16
    assert not (tmp_path / "out" / "model.safetensors").exists()  # only with save_model


def test_a_tiny_model_learns_a_keyword_task(bert_teacher, tmp_path):
    # SST-2 layout; the label is which of two keywords the sentence contains
    write_task(tmp_path / "data", "sst2", n_train=192, n_dev=64)
    task, data, tokenizer = prepared(bert_teacher, "sst2", tmp_path / "data")

    metrics = finetune(bert_teacher, task, data, tokenizer, lr=2e-3, epochs=5, batch_size=16, precision="bf16")

    assert metrics["dev"]["accuracy"] > 0.9


def test_stsb_gets_a_regression_head(bert_teacher):
    from tadistill.recipes.finetune import load_classifier

    model = load_classifier(bert_teacher, get_task("stsb"))
    assert model.config.problem_type == "regression"
    assert model.config.num_labels == 1
    mnli = load_classifier(bert_teacher, get_task("mnli"))
    assert mnli.config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}


def test_other_families_fine_tune(roberta_teacher, xlmr_teacher, tmp_path):
    write_task(tmp_path / "data", "rte", n_train=8, n_dev=4)
    for model_dir in (roberta_teacher, xlmr_teacher):
        AcceleratorState._reset_state(reset_partial_state=True)
        task, data, tokenizer = prepared(model_dir, "rte", tmp_path / "data")
        metrics = finetune(model_dir, task, data, tokenizer, epochs=1, batch_size=4, precision="no")
        assert 0.0 <= metrics["dev"]["accuracy"] <= 1.0


def test_cli_finetune_writes_metrics_and_a_loadable_model(bert_teacher, tmp_path, capsys):
    write_task(tmp_path / "data", "mrpc", n_train=16, n_dev=8)
    out = tmp_path / "out"
    code = cli.main(["finetune", str(bert_teacher), "--task", "glue/mrpc", "--data-dir", str(tmp_path / "data"),
                     "--epochs", "1", "--batch-size", "8", "--max-seq-length", "32", "--precision", "no",
                     "--output", str(out)])
    assert code == 0
    assert "mrpc dev: accuracy" in capsys.readouterr().out
    assert set(json.loads((out / "metrics.json").read_text())["metrics"]["dev"]) == {"accuracy", "f1", "score"}
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "not_equivalent", 1: "equivalent"}


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    assert cli.main(["finetune", str(tmp_path), "--task", "sst2", "--data-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "no config.json" in error and len(error.strip().splitlines()) == 1
    assert cli.main(["finetune", str(tmp_path), "--task", "sst-2"]) == 2
    assert "did you mean 'sst2'" in capsys.readouterr().err.lower()


GATHER_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding
    from tadistill.evaluation.layouts import load_task_data
    from tadistill.evaluation.tasks import get_task
    from tadistill.recipes.finetune import encode, load_classifier, load_tokenizer, score_eval_sets

    model_dir, data_dir, out = sys.argv[1:]
    task = get_task("sst2")
    tokenizer = load_tokenizer(model_dir)
    dev = encode(load_task_data(task, data_dir), tokenizer, 32).evals["dev"]
    torch.manual_seed(0)
    model = load_classifier(model_dir, task).eval()
    # labels: the model's own prediction for the first 7 examples, the other class after,
    # so the gathered accuracy is 7/13 exactly when each example is counted once
    collate = DataCollatorWithPadding(tokenizer)
    with torch.no_grad():
        own = model(**{k: v for k, v in collate(list(dev)).items() if k != "labels"}).logits.argmax(-1).tolist()
    dev = dev.remove_columns("label").add_column("label", [p if i < 7 else 1 - p for i, p in enumerate(own)])
    accelerator = Accelerator(cpu=True)
    model, loader = accelerator.prepare(model, DataLoader(dev, batch_size=4, collate_fn=collate))
    metrics = score_eval_sets(model, {"dev": loader}, task, accelerator)
    if accelerator.is_main_process:
        json.dump({"processes": accelerator.num_processes, "accuracy": metrics["dev"]["accuracy"]}, open(out, "w"))
""")


def test_predictions_are_gathered_once_each_across_two_processes(bert_teacher, tmp_path):
    write_task(tmp_path / "data", "sst2", n_train=4, n_dev=13)  # 13: the last batch is uneven
    script = tmp_path / "gather.py"
    script.write_text(GATHER_SCRIPT)
    out = tmp_path / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(bert_teacher), str(tmp_path / "data"), str(out)]
    # its own session, so that a hang kills the workers too, not only the launcher
    launcher = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        log, _ = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 0, log.decode()[-3000:]
    result = json.loads(out.read_text())
    assert result == {"processes": 2, "accuracy": pytest.approx(7 / 13)}


def test_bf16_is_refused_where_the_device_lacks_it(monkeypatch, bert_teacher, tmp_path):
    from tadistill.errors import ConfigError

    monkeypatch.setattr("tadistill.recipes.finetune.is_bf16_available", lambda: False)
    write_task(tmp_path / "data", "sst2", n_train=4, n_dev=2)
    task, data, tokenizer = prepared(bert_teacher, "sst2", tmp_path / "data")
    with pytest.raises(ConfigError, match="--precision"):
        finetune(bert_teacher, task, data, tokenizer, precision="bf16")
