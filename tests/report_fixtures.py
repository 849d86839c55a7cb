"""Hand-written inputs for the report tests: a study directory as `tadistill study` leaves
it (study.json, cells with run directories, results.json, bench.json, agreement.json, the
teacher's evaluations), small enough to write in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tadistill.evaluation.tasks import XNLI_LANGUAGES

TEACHER = "teacher-model"


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def glue_results(model: str, scores: dict[str, float]) -> dict:
    """A `tadistill evaluate --suite glue` summary with these task scores."""
    tasks = {name: {"score": score, "task": {"title": name}, "lr": 2e-5, "epochs": 3, "seeds": 1,
                    "metrics": {"dev": {"accuracy": score, "score": score}}} for name, score in scores.items()}
    return {"model": model, "suite": "glue", "grid": {}, "tasks": tasks}


def xnli_results(model: str, accuracies: list[float]) -> dict:
    metrics = {f"test_{lang}": {"accuracy": acc, "score": acc} for lang, acc in zip(XNLI_LANGUAGES, accuracies)}
    average = sum(accuracies) / len(accuracies)
    return {"model": model, "suite": "xnli", "grid": {},
            "tasks": {"xnli": {"score": average, "task": {"title": "XNLI"}, "metrics": metrics}}}


def bench(student: str, params: dict, teacher_ms: float, student_ms: float) -> dict:
    teacher_params = {"embeddings": 23_000_000, "blocks": 85_000_000, "other": 600_000, "total": 108_600_000}
    cell = {"batch": 32, "seq": 128, "dtype": "fp32", "p90_ms": 1.0, "sequences_per_s": 1.0, "tokens_per_s": 1.0}
    return {"device": "cpu", "teacher": TEACHER,
            "models": {TEACHER: {"shape": "12L", "params": teacher_params}, student: {"shape": "6L", "params": params}},
            "cells": [{**cell, "model": TEACHER, "median_ms": teacher_ms, "speedup": 1.0},
                      {**cell, "model": student, "median_ms": student_ms, "speedup": teacher_ms / student_ms}]}


def metrics_lines(objective: str, parts: list[str], tokens_per_step: int, steps: int) -> list[dict]:
    records = []
    for step in range(1, steps + 1):
        loss = 1.0 / step
        records.append({"step": step * 10, "tokens": step * tokens_per_step, "lr": 1e-4, "loss": loss, objective: loss,
                        **{f"{objective}/{part}": loss * (i + 1) / 2 for i, part in enumerate(parts)},
                        "tokens_per_s": 1000.0 * step})
    return records


# Everything the fixture study holds, so a test can compute what the tables must show.
CELLS = {
    "hs-6x384": {"method": "hs", "student": "6x384", "state": "done",
                 "glue": {"sst2": 0.90, "mrpc": 0.80}, "xnli": [0.70 + 0.01 * i for i in range(15)],
                 "params": {"embeddings": 12_000_000, "blocks": 10_000_000, "other": 150_000, "total": 22_150_000},
                 "ms": 20.0, "tokens": 5_120_000, "steps": 200, "distill_s": 61.5,
                 "agreement": {"texts": 50, "pooling": "mean", "mean_cos": None, "spearman": 0.71, "nn_at_1": 0.4, "similarity": {}}},
    "minilmv2-6x384": {"method": "minilmv2", "student": "6x384", "state": "done",
                       "glue": {"sst2": 0.92, "mrpc": 0.78}, "xnli": [0.72 + 0.01 * i for i in range(15)],
                       "params": {"embeddings": 12_000_000, "blocks": 10_000_000, "other": 150_000, "total": 22_150_000},
                       "ms": 21.0, "tokens": 5_120_000, "steps": 200, "distill_s": 70.0,
                       "agreement": {"texts": 50, "pooling": "mean", "mean_cos": None, "spearman": 0.75, "nn_at_1": 0.5, "similarity": {}}},
    # a cell whose evaluation of MRPC and XNLI never ran, and that has no bench or agreement
    "minilmv2-3x384": {"method": "minilmv2", "student": "3x384", "state": "failed", "error": "eval/mrpc failed: boom",
                       "glue": {"sst2": 0.88}, "xnli": None, "params": None, "ms": None,
                       "tokens": 2_560_000, "steps": 100, "distill_s": 30.0, "agreement": None},
}
TEACHER_GLUE = {"sst2": 0.93, "mrpc": 0.85}
TEACHER_XNLI = [0.75 + 0.01 * i for i in range(15)]


def make_study(root: Path) -> Path:
    study = root / "study"
    cells = []
    for name, cell in CELLS.items():
        cell_dir = study / "cells" / name
        run_dir = cell_dir / "run"
        student = str(run_dir / "student")
        layers, hidden = map(int, cell["student"].split("x"))
        write_json(run_dir / "student" / "config.json",
                   {"model_type": "bert", "num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": 12,
                    "intermediate_size": 4 * hidden, "vocab_size": 30522})
        objectives = [{"name": cell["method"], "weight": 1.0, **({"mapping": "uniform+last"} if cell["method"] == "hs" else
                                                                  {"relation_heads": 48})}]
        write_json(run_dir / "student" / "tadistill.json",
                   {"teacher": TEACHER, "objectives": objectives, "steps": cell["steps"], "tokens_seen": cell["tokens"],
                    "student_init": "random", "processes": 1})
        (run_dir / "config.yaml").write_text(yaml.safe_dump({
            "teacher": {"path": TEACHER}, "student": {"layers": layers, "hidden": hidden, "init": "random"},
            "data": {"sources": [{"path": "wikimedia/wikipedia", "format": "hub"}, {"path": str(root / "corpus.txt")}],
                     "max_seq_length": 128},
            "objectives": objectives, "train": {"batch_size": 32, "learning_rate": 6e-4, "warmup_steps": 10}}))
        parts = ["qq", "kk", "vv"] if cell["method"] == "minilmv2" else []
        lines = metrics_lines(cell["method"], parts, cell["tokens"] // 5, 5)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        for task, score in cell["glue"].items():
            write_json(cell_dir / "eval" / task / "results.json", glue_results(student, {task: score}))
        if cell["xnli"]:
            write_json(cell_dir / "eval" / "xnli" / "results.json", xnli_results(student, cell["xnli"]))
        if cell["params"]:
            write_json(cell_dir / "bench.json", bench(student, cell["params"], 60.0, cell["ms"]))
        if cell["agreement"]:
            write_json(cell_dir / "agreement.json", cell["agreement"])
        cells.append({"name": name, "dir": f"cells/{name}", "state": cell["state"], "error": cell.get("error"),
                      "method": cell["method"], "student": cell["student"], "seconds": 100.0,
                      "steps": {"distill": {"state": "done", "seconds": cell["distill_s"]}}})
    for task, score in TEACHER_GLUE.items():
        write_json(study / "teacher" / "eval" / task / "results.json", glue_results(TEACHER, {task: score}))
    write_json(study / "teacher" / "eval" / "xnli" / "results.json", xnli_results(TEACHER, TEACHER_XNLI))
    write_json(study / "study.json", {"format": 1, "name": "fixture", "teacher": TEACHER, "tasks": ["sst2", "mrpc", "xnli"],
                                      "cells": cells, "baseline": {"name": "teacher", "state": "done", "steps": {}}})
    return study
