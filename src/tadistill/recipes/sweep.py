"""The sweep recipe: the evaluation protocol of the distillation papers, resumable, with a
leaderboard table.

Per task: fine-tune once per cell of learning rates x epochs x seeds; per (lr, epochs)
take the median over seeds of the dev score; keep the best (lr, epochs) and report the
median over its seeds of every metric. Each cell writes `runs/<task>/<cell>/metrics.json`
when it finishes, and a rerun skips the cells that have one. The summary goes to
`results.json` and `results.md` in the output directory.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from accelerate import PartialState

from tadistill.errors import ConfigError, Problem
from tadistill.evaluation.layouts import TaskData
from tadistill.evaluation.metrics import GLUE_AVERAGE_DEFINITION, SHOWN_VALUES, glue_average
from tadistill.evaluation.tasks import SUITES, TASKS, XNLI_LANGUAGES, Task, get_task
from tadistill.recipes.finetune import encode, finetune, load_tokenizer
from tadistill.tables import render_markdown

FIRST_SEED = 42  # seeds are 42, 43, ...: a one-seed sweep repeats `tadistill finetune`'s default run
METRIC_NAMES = {"mcc": "MCC", "accuracy": "acc", "accuracy_f1": "F1/acc", "classification": "acc/macro-F1",
                "pearson_spearman": "Pearson/Spearman"}


def run_sweep(
    model_dir: str | Path,
    output_dir: str | Path,
    *,
    suite: str,
    tasks: list[Task],
    load_data: Callable[[Task], TaskData],
    lrs: tuple[float, ...] = (1e-5, 2e-5, 3e-5, 5e-5),
    epochs: tuple[int, ...] = (3,),
    seeds: int = 3,
    batch_size: int = 32,
    max_seq_length: int = 128,
    precision: str = "auto",
) -> dict:
    """Run (or finish) the sweep of `model_dir` on `tasks` ("glue", "xnli" or "file" tasks);
    return and write its results. `load_data(task)` is called only for tasks with runs left."""
    output_dir = Path(output_dir)
    tokenizer = load_tokenizer(model_dir)
    grid = list(itertools.product(lrs, epochs, range(FIRST_SEED, FIRST_SEED + seeds)))
    summaries = {}
    for task in tasks:
        cell_dirs = {
            cell: output_dir / "runs" / task.name / cell_name(*cell, batch_size, max_seq_length) for cell in grid
        }
        todo = [cell for cell, cell_dir in cell_dirs.items() if not (cell_dir / "metrics.json").is_file()]
        PartialState().print(f"{task.name}: {len(grid) - len(todo)} of {len(grid)} runs already finished")
        if todo:  # a finished task needs no data: a rerun only rewrites the tables
            data = encode(load_data(task), tokenizer, max_seq_length)
            for lr, n_epochs, seed in todo:
                finetune(
                    model_dir, task, data, tokenizer, lr=lr, epochs=n_epochs, batch_size=batch_size,
                    seed=seed, precision=precision, output_dir=cell_dirs[lr, n_epochs, seed],
                )
        runs = {
            cell: json.loads((cell_dir / "metrics.json").read_text())["metrics"] for cell, cell_dir in cell_dirs.items()
        }
        summaries[task.name] = summarize_task(task, runs)

    results = {
        "model": str(model_dir),
        "suite": suite,
        "grid": {"lrs": list(lrs), "epochs": list(epochs), "seeds": seeds,
                 "batch_size": batch_size, "max_seq_length": max_seq_length},
        "tasks": summaries,
    }
    if suite == "glue":
        average, averaged = glue_average({name: summary["score"] for name, summary in summaries.items()})
        results["glue_average"] = {"score": average, "tasks": averaged, "definition": GLUE_AVERAGE_DEFINITION}
    if PartialState().is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        for name, text in (("results.json", json.dumps(results, indent=2) + "\n"), ("results.md", markdown_table(results))):
            partial = output_dir / f"{name}.partial"
            partial.write_text(text)
            partial.replace(output_dir / name)  # results.json marks a finished sweep: never half-written
    return results


def suite_tasks(suite: str, names: list[str] | None) -> list[Task]:
    """The tasks to sweep: `names` (checked to belong to `suite`) or the suite's defaults."""
    if suite not in SUITES:
        raise ConfigError([Problem("--suite", suite, f"choose one of {', '.join(SUITES)}")])
    tasks = [get_task(name) for name in (names or SUITES[suite])]
    wrong = [Problem("--tasks", task.name, f"is not a {suite} task") for task in tasks if task.suite != suite]
    if wrong:
        raise ConfigError(wrong)
    return tasks


def cell_name(lr: float, epochs: int, seed: int, batch_size: int, max_seq_length: int) -> str:
    # every setting that changes a run is in the name, so a rerun with other settings never
    # mistakes an old run for one of its own
    return f"lr{lr:g}_ep{epochs}_bs{batch_size}_len{max_seq_length}_seed{seed}"


def summarize_task(task: Task, runs: dict[tuple[float, int, int], dict]) -> dict:
    """Best (lr, epochs) by median dev score over seeds; medians of its runs' metrics."""
    by_config: dict[tuple[float, int], list[dict]] = {}
    for (lr, epochs, _seed), metrics in runs.items():
        by_config.setdefault((lr, epochs), []).append(metrics)
    dev_scores = {
        config: float(np.median([metrics[task.select_on]["score"] for metrics in seed_runs]))
        for config, seed_runs in by_config.items()
    }
    lr, epochs = max(dev_scores, key=dev_scores.get)  # ties: the first in grid order
    chosen = by_config[lr, epochs]
    medians = {
        name: {key: float(np.median([metrics[name][key] for metrics in chosen])) for key in values}
        for name, values in chosen[0].items()
    }
    return {
        "score": medians[task.report_on]["score"],
        "task": {"title": task.title, "metric": task.metric, "shown": list(task.shown), "report_on": task.report_on},
        "lr": lr,
        "epochs": epochs,
        "seeds": len(chosen),
        "metrics": medians,
        "dev_score_by_config": {f"lr={lr:g} epochs={epochs}": score for (lr, epochs), score in dev_scores.items()},
    }


def markdown_table(results: dict) -> str:
    """The model's results as Markdown: a leaderboard-style row, then how it was obtained."""
    title = [f"# {results['suite'].upper()}: {results['model']}", ""]
    body = _xnli_tables(results) if results["suite"] == "xnli" else _task_tables(results)
    return "\n".join(title + body) + "\n"


def _task_tables(results: dict) -> list[str]:
    summaries = results["tasks"]
    tasks = [_described_task(name, summary) for name, summary in summaries.items()]
    headers = ["Model", *(_column_title(task) for task in tasks)]
    row = [results["model"], *(_shown_values(task, summaries[task.name]) for task in tasks)]
    average = results.get("glue_average", {"tasks": []})
    if average["tasks"]:
        headers.append(f"Avg ({len(average['tasks'])} tasks)")
        row.append(_pct(average["score"]))
    details = [
        [_column_title(task), METRIC_NAMES[task.metric], _shown_values(task, summary),
         f"{summary['lr']:g}", str(summary["epochs"]), str(summary["seeds"])]
        for task, summary in zip(tasks, summaries.values())
    ]
    lines = render_markdown(headers, [row]).splitlines()
    if results["suite"] == "file":
        sets = "Each task's " + " then ".join(dict.fromkeys(name for task in tasks for name in task.shown)) + " set"
        lines += ["", f"{sets}; the learning rate picked on dev; median over seeds.", ""]
    else:
        lines += ["", "Dev sets; each task at its best learning rate, median over seeds.", ""]
    lines += render_markdown(["Task", "Metric", "Scores", "lr", "Epochs", "Seeds"], details).splitlines()
    if average["tasks"]:
        lines += ["", f"Avg: {average['definition']}."]
    return lines


def _xnli_tables(results: dict) -> list[str]:
    summary = results["tasks"]["xnli"]
    accuracies = [_pct(summary["metrics"][f"test_{language}"]["accuracy"]) for language in XNLI_LANGUAGES]
    lines = render_markdown(["Model", *XNLI_LANGUAGES, "Avg"], [[results["model"], *accuracies, _pct(summary["score"])]]).splitlines()
    dev_average = _pct(summary["metrics"]["dev_avg"]["accuracy"])
    return lines + [
        "",
        f"Test accuracy, zero-shot from English; lr {summary['lr']:g} and {summary['epochs']} epochs chosen by "
        f"the average dev accuracy ({dev_average}); median of {summary['seeds']} seed(s).",
    ]


def _described_task(name: str, summary: dict) -> Task:
    """The task of a summary: from the registry, or as the summary describes it (file tasks)."""
    if name in TASKS:
        return get_task(name)
    described = summary["task"]
    return Task(name=name, title=described["title"], suite="file", metric=described["metric"], labels=(),
                hub_text_columns=(), shown=tuple(described["shown"]), report_on=described["report_on"])


def _column_title(task: Task) -> str:
    return f"{task.title}-m/mm" if task.name == "mnli" else task.title


def _shown_values(task: Task, summary: dict) -> str:
    """e.g. "84.2/84.6" for MNLI m/mm, "88.1/83.9" for MRPC F1/acc."""
    return "/".join(_pct(summary["metrics"][name][key]) for name in task.shown for key in SHOWN_VALUES[task.metric])


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"
