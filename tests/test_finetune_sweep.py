"""The evaluation sweep: lr selection by median dev score, tables, and resuming."""

from __future__ import annotations

import json

import pytest

from finetune_data import write_task
from tadistill import cli
from tadistill.recipes import sweep
from tadistill.recipes.sweep import markdown_table, summarize_task
from tadistill.evaluation.tasks import XNLI_LANGUAGES, get_task


def mrpc_run(f1: float, accuracy: float) -> dict:
    return {"dev": {"accuracy": accuracy, "f1": f1, "score": (accuracy + f1) / 2}}


def test_best_lr_is_chosen_by_the_median_over_seeds():
    runs = {
        # lr 1e-5: one lucky seed gives the higher mean (0.8), but the median is 0.6
        (1e-5, 3, 42): mrpc_run(0.6, 0.6), (1e-5, 3, 43): mrpc_run(0.6, 0.6), (1e-5, 3, 44): mrpc_run(1.2, 1.2),
        # lr 2e-5: median 0.7
        (2e-5, 3, 42): mrpc_run(0.7, 0.6), (2e-5, 3, 43): mrpc_run(0.8, 0.7), (2e-5, 3, 44): mrpc_run(0.5, 0.5),
    }
    summary = summarize_task(get_task("mrpc"), runs)

    assert (summary["lr"], summary["epochs"], summary["seeds"]) == (2e-5, 3, 3)
    # each metric is its own median over the chosen lr's seeds
    assert summary["metrics"]["dev"] == pytest.approx({"accuracy": 0.6, "f1": 0.7, "score": 0.65})
    assert summary["score"] == pytest.approx(0.65)
    assert summary["dev_score_by_config"] == pytest.approx({"lr=1e-05 epochs=3": 0.6, "lr=2e-05 epochs=3": 0.65})


def test_xnli_selects_on_dev_average_and_reports_test_average():
    def run(dev: float, test: float) -> dict:
        return {"dev_avg": {"accuracy": dev, "score": dev}, "test_avg": {"accuracy": test, "score": test}}

    runs = {(1e-5, 2, 42): run(dev=0.7, test=0.9), (3e-5, 2, 42): run(dev=0.8, test=0.6)}
    summary = summarize_task(get_task("xnli"), runs)
    assert summary["lr"] == 3e-5
    assert summary["score"] == pytest.approx(0.6)


def glue_results() -> dict:
    def task_summary(score: float, metrics: dict) -> dict:
        return {"score": score, "lr": 2e-5, "epochs": 3, "seeds": 3, "metrics": metrics}

    return {
        "model": "runs/x/student",
        "suite": "glue",
        "tasks": {
            "mnli": task_summary(0.842, {"dev_matched": {"accuracy": 0.842, "score": 0.842},
                                         "dev_mismatched": {"accuracy": 0.846, "score": 0.846}}),
            "mrpc": task_summary(0.85, {"dev": {"accuracy": 0.839, "f1": 0.881, "score": 0.86}}),
        },
        "glue_average": {"score": 0.851, "tasks": ["mnli", "mrpc"], "definition": "the definition"},
    }


def test_glue_table_is_leaderboard_style():
    table = markdown_table(glue_results())
    assert "| Model | MNLI-m/mm | MRPC | Avg (2 tasks) |" in table
    assert "| runs/x/student | 84.2/84.6 | 88.1/83.9 | 85.1 |" in table
    assert "| MRPC | F1/acc | 88.1/83.9 | 2e-05 | 3 | 3 |" in table
    assert "| Task | Metric | Scores | lr | Epochs | Seeds |" in table
    assert "Avg: the definition." in table


def test_xnli_table_has_a_column_per_language():
    metrics = {f"test_{lang}": {"accuracy": 0.5 + i / 100, "score": 0.5 + i / 100} for i, lang in enumerate(XNLI_LANGUAGES)}
    metrics["dev_avg"] = {"accuracy": 0.6, "score": 0.6}
    results = {"model": "m", "suite": "xnli",
               "tasks": {"xnli": {"score": 0.57, "lr": 3e-5, "epochs": 2, "seeds": 1, "metrics": metrics}}}
    table = markdown_table(results)
    assert "| Model | en | fr | es | de | el | bg | ru | tr | ar | vi | th | zh | hi | sw | ur | Avg |" in table
    assert "| m | 50.0 | 51.0 |" in table and "| 64.0 | 57.0 |" in table
    assert "average dev accuracy (60.0)" in table


def evaluate_args(model, data_dir, output, *extra):
    return ["evaluate", str(model), "--suite", "glue", "--tasks", "rte,stsb", "--data-dir", str(data_dir),
            "--lrs", "1e-4,3e-4", "--seeds", "2", "--epochs", "1", "--batch-size", "8",
            "--max-seq-length", "32", "--precision", "no", "--output", str(output), *extra]


def test_cli_sweep_writes_results_and_skips_finished_runs(bert_teacher, tmp_path, monkeypatch, capsys):
    for name in ("rte", "stsb"):
        write_task(tmp_path / "data", name, n_train=12, n_dev=6)
    out = tmp_path / "eval"
    real_finetune = sweep.finetune

    assert cli.main(evaluate_args(bert_teacher, tmp_path / "data", out)) == 0

    results = json.loads((out / "results.json").read_text())
    assert list(results["tasks"]) == ["rte", "stsb"]
    for summary in results["tasks"].values():
        assert summary["lr"] in (1e-4, 3e-4) and summary["seeds"] == 2
    assert results["glue_average"]["tasks"] == ["stsb", "rte"]
    assert results["glue_average"]["score"] == pytest.approx(
        (results["tasks"]["rte"]["score"] + results["tasks"]["stsb"]["score"]) / 2)
    assert (out / "results.md").read_text() in capsys.readouterr().out
    cells = sorted(p.parent.name for p in (out / "runs" / "rte").glob("*/metrics.json"))
    assert cells == ["lr0.0001_ep1_bs8_len32_seed42", "lr0.0001_ep1_bs8_len32_seed43",
                     "lr0.0003_ep1_bs8_len32_seed42", "lr0.0003_ep1_bs8_len32_seed43"]

    # rerun: nothing left to train, the same results
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sweep, "finetune", no_training)
    assert cli.main(evaluate_args(bert_teacher, tmp_path / "data", out)) == 0
    assert json.loads((out / "results.json").read_text()) == results

    # a missing cell is the only one run again
    (out / "runs" / "stsb" / "lr0.0003_ep1_bs8_len32_seed43" / "metrics.json").unlink()
    trained = []

    def record(model_dir, task, data, tokenizer, **settings):
        trained.append((task.name, settings["lr"], settings["seed"]))
        return real_finetune(model_dir, task, data, tokenizer, **settings)

    monkeypatch.setattr(sweep, "finetune", record)
    assert cli.main(evaluate_args(bert_teacher, tmp_path / "data", out)) == 0
    assert trained == [("stsb", 3e-4, 43)]


def test_cli_sweep_rejects_tasks_of_another_suite(bert_teacher, tmp_path, capsys):
    args = ["evaluate", str(bert_teacher), "--suite", "glue", "--tasks", "sst2,xnli", "--output", str(tmp_path)]
    assert cli.main(args) == 2
    assert "--tasks='xnli': is not a glue task" in capsys.readouterr().err


def test_cli_xnli_sweep_tabulates_the_languages(bert_teacher, tmp_path, capsys):
    write_task(tmp_path / "data", "xnli", n_train=12, n_dev=3)
    args = ["evaluate", str(bert_teacher), "--suite", "xnli", "--data-dir", str(tmp_path / "data"), "--lrs", "1e-4",
            "--seeds", "1", "--epochs", "1", "--batch-size", "8", "--max-seq-length", "32", "--precision", "no",
            "--output", str(tmp_path / "eval")]
    assert cli.main(args) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["tasks"]["xnli"]["metrics"]) >= {"dev_avg", "test_avg", "test_sw"}
    assert "| Model | en | fr |" in capsys.readouterr().out
