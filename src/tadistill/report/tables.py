"""The report's tables, built from what `collect` read, and written as Markdown, CSV, JSON
and LaTeX (booktabs).

A table is rows of values under columns; a value that was not measured is None and shows
as "—" (empty in CSV, null in JSON), never as 0. Scores are percentages of the sweep's
score (`results.json`, 0..1, times 100), as the papers print them. Each numeric column
says which way is better; the best student value is marked (bold in Markdown and LaTeX,
listed under "best" in JSON). The teacher's row is a reference, never marked best.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tadistill.evaluation.metrics import glue_average
from tadistill.evaluation.tasks import SUITES, TASKS, XNLI_LANGUAGES
from tadistill.report.collect import Inputs, Run
from tadistill.tables import render_markdown

MISSING = "—"
GLUE_ORDER = (*SUITES["glue"], "wnli")


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    best: str | None = None  # "max" | "min" | None (not a merit, e.g. tokens seen)
    format: str = "1"  # digits after the point; "x2": a speedup; "human": 5.1k, 12.3M; "text"


@dataclass
class Table:
    name: str  # file stem: tables/<name>.csv
    title: str
    columns: list[Column]
    rows: list[dict]  # column key -> value (None: missing)
    reference: set[int] = field(default_factory=set)  # row indices never marked best (the teacher)
    note: str = ""

    def best_rows(self, column: Column) -> set[int]:
        """Rows holding the best value of `column` among the non-reference rows (ties: all)."""
        if column.best is None:
            return set()
        values = {i: row.get(column.key) for i, row in enumerate(self.rows) if i not in self.reference}
        values = {i: v for i, v in values.items() if isinstance(v, (int, float)) and not math.isnan(v)}
        if len(values) < 2:  # a column with one value has nothing to compare
            return set()
        best = (max if column.best == "max" else min)(values.values())
        return {i for i, v in values.items() if v == best}


# ---------------------------------------------------------------- what the tables show


@dataclass(frozen=True)
class TaskColumn:
    name: str  # the task's name in results.json
    title: str
    suite: str


def task_scores(results: list[dict]) -> dict[str, float]:
    """task name -> score (0..1) from sweep summaries; XNLI also per language ("xnli/de")."""
    scores = {}
    for result in results:
        for name, summary in result["tasks"].items():
            scores[name] = summary["score"]
            if result["suite"] == "xnli":
                for language in XNLI_LANGUAGES:
                    value = summary["metrics"].get(f"test_{language}", {}).get("accuracy")
                    if value is not None:
                        scores[f"xnli/{language}"] = value
    return scores


def task_columns(inputs: Inputs) -> list[TaskColumn]:
    """Every task any run or the baseline was evaluated on: GLUE in the papers' order, XNLI,
    then the user's own tasks in the order first seen."""
    seen: dict[str, TaskColumn] = {}
    for results in [run.results for run in inputs.runs] + [inputs.baseline.results if inputs.baseline else []]:
        for result in results:
            for name, summary in result["tasks"].items():
                title = TASKS.get(name).title if name in TASKS else summary.get("task", {}).get("title", name)
                seen.setdefault(name, TaskColumn(name, "MNLI-m" if name == "mnli" else title, result["suite"]))
    order = {name: i for i, name in enumerate((*GLUE_ORDER, "xnli"))}
    return sorted(seen.values(), key=lambda task: order.get(task.name, len(order)))


def headline_scores(scores: dict[str, float], glue_tasks: list[str]) -> dict[str, float | None]:
    """The averages the papers report: GLUE (over `glue_tasks`, all of which the run must
    have: an average over fewer tasks is not comparable, so it is missing) and XNLI (the
    mean test accuracy over the 15 languages, the sweep's XNLI score)."""
    glue = None
    if glue_tasks and all(task in scores for task in glue_tasks):
        glue, _ = glue_average({task: scores[task] for task in glue_tasks})
    return {"glue_avg": glue, "xnli_avg": scores.get("xnli")}


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _labels(run: Run) -> dict:
    return {"method": run.method, "student": run.student}


LABEL_COLUMNS = [Column("method", "Method", format="text"), Column("student", "Student", format="text")]


def build_tables(inputs: Inputs) -> list[Table]:
    """Every table the inputs support, in the order report.md shows them."""
    tasks = task_columns(inputs)
    glue_tasks = [task.name for task in tasks if task.suite == "glue" and task.name != "wnli"]
    teacher_scores = task_scores(inputs.baseline.results) if inputs.baseline else {}
    tables = []
    if tasks:
        tables.append(_scores_table(inputs, tasks, glue_tasks, teacher_scores))
        if teacher_scores:
            tables.append(_kept_table(inputs, tasks, glue_tasks, teacher_scores))
        if any(task.name == "xnli" for task in tasks):
            tables.append(_xnli_table(inputs, teacher_scores))
    tables.append(_efficiency_table(inputs))
    if any(run.agreement for run in inputs.runs):
        tables.append(_agreement_table(inputs))
    return tables


def _score_columns(tasks: list[TaskColumn], glue_tasks: list[str], unit: str) -> list[Column]:
    columns = [Column(task.name, f"{task.title} ({unit})", best="max") for task in tasks]
    if glue_tasks:
        columns.append(Column("glue_avg", f"GLUE avg, {len(glue_tasks)} tasks ({unit})", best="max"))
    if any(task.name == "xnli" for task in tasks):
        columns = [c if c.key != "xnli" else Column("xnli_avg", f"XNLI avg, 15 languages ({unit})", best="max")
                   for c in columns]
    return columns


def _score_row(scores: dict[str, float], tasks: list[TaskColumn], glue_tasks: list[str]) -> dict:
    row = {task.name: _percent(scores.get(task.name)) for task in tasks if task.name != "xnli"}
    headline = headline_scores(scores, glue_tasks)
    if glue_tasks:
        row["glue_avg"] = _percent(headline["glue_avg"])
    if any(task.name == "xnli" for task in tasks):
        row["xnli_avg"] = _percent(headline["xnli_avg"])
    return row


def _scores_table(inputs: Inputs, tasks, glue_tasks, teacher_scores) -> Table:
    rows, reference = [], set()
    if inputs.baseline:
        rows.append({"method": "teacher", "student": _short(inputs.baseline.name), **_score_row(teacher_scores, tasks, glue_tasks)})
        reference.add(0)
    rows += [{**_labels(run), **_score_row(task_scores(run.results), tasks, glue_tasks)} for run in inputs.runs]
    note = "Each task's score from `tadistill evaluate` (dev for GLUE, test for XNLI and file tasks), in %."
    if glue_tasks:
        note += " GLUE avg: the mean over " + ", ".join(TASKS.get(t).title for t in glue_tasks) + \
                " (MRPC, QQP: mean of F1 and acc; STS-B: of Pearson and Spearman); missing when a task is."
    return Table("scores", "Scores", LABEL_COLUMNS + _score_columns(tasks, glue_tasks, "%"), rows, reference, note)


def _kept_table(inputs: Inputs, tasks, glue_tasks, teacher_scores) -> Table:
    teacher_row = _score_row(teacher_scores, tasks, glue_tasks)
    columns = _score_columns(tasks, glue_tasks, "% of teacher")
    rows = []
    for run in inputs.runs:
        row = _score_row(task_scores(run.results), tasks, glue_tasks)
        rows.append({**_labels(run), **{c.key: _share(row.get(c.key), teacher_row.get(c.key)) for c in columns}})
    note = "The student's score as a share of the teacher's on the same task (100: as good as the teacher)."
    return Table("kept", "Share of the teacher's score kept", LABEL_COLUMNS + columns, rows, set(), note)


def _share(student: float | None, teacher: float | None) -> float | None:
    # a share of a score at or below 0 (e.g. an MCC) means nothing
    if student is None or teacher is None or teacher <= 0:
        return None
    return 100 * student / teacher


def _xnli_table(inputs: Inputs, teacher_scores) -> Table:
    columns = [Column(f"xnli/{lang}", lang, best="max") for lang in XNLI_LANGUAGES] + [Column("xnli", "Avg", best="max")]
    keys = [c.key for c in columns]
    rows, reference = [], set()
    if inputs.baseline and teacher_scores:
        rows.append({"method": "teacher", "student": _short(inputs.baseline.name),
                     **{k: _percent(teacher_scores.get(k)) for k in keys}})
        reference.add(0)
    for run in inputs.runs:
        scores = task_scores(run.results)
        rows.append({**_labels(run), **{k: _percent(scores.get(k)) for k in keys}})
    return Table("xnli", "XNLI test accuracy by language (%)", LABEL_COLUMNS + columns, rows, reference,
                 "Zero-shot from English: fine-tuned on English NLI, tested on each language.")


# ---------------------------------------------------------------- efficiency


def bench_settings(inputs: Inputs) -> list[tuple[str, int, int]]:
    """Every (dtype, batch, seq) any run was benchmarked at, in the order first seen."""
    settings = {}
    for run in inputs.runs:
        for row in (run.bench or {}).get("cells", []):
            settings.setdefault((row["dtype"], row["batch"], row["seq"]), None)
    return list(settings)


def student_latency(run: Run) -> dict[tuple[str, int, int], dict]:
    """(dtype, batch, seq) -> the bench row of this run's student."""
    if not run.bench:
        return {}
    teacher = run.bench.get("teacher")
    rows = [row for row in run.bench["cells"] if row["model"] != teacher]
    models = {row["model"] for row in rows}
    if len(models) > 1:  # a bench of several students: keep this one's
        rows = [row for row in rows if _same_path(row["model"], run.student_dir)]
    return {(row["dtype"], row["batch"], row["seq"]): row for row in rows}


def teacher_latency(inputs: Inputs) -> tuple[dict[tuple[str, int, int], dict], dict | None]:
    """The teacher's bench rows and parameter counts, from the first bench that has them."""
    for run in inputs.runs:
        if run.bench and run.bench.get("teacher"):
            teacher = run.bench["teacher"]
            rows = {(r["dtype"], r["batch"], r["seq"]): r for r in run.bench["cells"] if r["model"] == teacher}
            return rows, run.bench["models"].get(teacher, {}).get("params")
    return {}, None


def student_params(run: Run) -> dict | None:
    """Embedding / Transformer-block / total parameters: from the bench, else counted from
    the saved weights' header (no weights loaded)."""
    if run.bench:
        for name, info in run.bench.get("models", {}).items():
            # this student's entry; in a bench of one student against the teacher, the other entry
            # (its path may be where the study ran, not where the run is now)
            if name != run.bench.get("teacher") and (_same_path(name, run.student_dir) or len(run.bench["models"]) <= 2):
                return info["params"]
    return count_saved_parameters(run.student_dir)


def count_saved_parameters(student_dir) -> dict | None:
    """Parameter counts of a saved encoder from its safetensors header, grouped as the bench
    groups them (embeddings, blocks, other = pooler); the LM head is not part of the encoder."""
    from safetensors import safe_open

    from tadistill.arch import adapter_for
    from tadistill.models import load_model_config

    weights = Path(student_dir) / "model.safetensors"
    if not weights.is_file():
        return None
    adapter = adapter_for(load_model_config(str(student_dir)))
    counts = {"embeddings": 0, "blocks": 0, "other": 0}
    with safe_open(str(weights), framework="pt") as stored:
        for name in stored.keys():
            inner = name.split(".", 1)[1] if "." in name else name  # without the base model's prefix
            size = math.prod(stored.get_slice(name).get_shape())
            if any(n.startswith(adapter.embeddings + ".") for n in (name, inner)):
                counts["embeddings"] += size
            elif any(n.startswith(adapter.layers + ".") for n in (name, inner)):
                counts["blocks"] += size
            elif any(n.startswith("pooler.") for n in (name, inner)):
                counts["other"] += size
    return {**counts, "total": sum(counts.values())}


def train_seconds(metrics: list[dict]) -> float | None:
    """Time in the training loop, from the log: each record's new tokens over its tokens/s."""
    seconds, tokens = 0.0, 0
    for record in metrics:
        if record.get("tokens_per_s"):
            seconds += (record["tokens"] - tokens) / record["tokens_per_s"]
        tokens = record["tokens"]
    return seconds if metrics else None


def setting_title(setting: tuple[str, int, int]) -> str:
    dtype, batch, seq = setting
    return f"b{batch} s{seq} {dtype}"


def _efficiency_table(inputs: Inputs) -> Table:
    settings = bench_settings(inputs)
    columns = LABEL_COLUMNS + [
        Column("params_embeddings", "Emb. params (M)", best="min", format="2"),
        Column("params_blocks", "Transformer params (M)", best="min", format="2"),
        Column("params_total", "Total params (M)", best="min", format="2"),
    ]
    for setting in settings:
        columns.append(Column(f"ms {setting_title(setting)}", f"Latency {setting_title(setting)} (ms)", best="min", format="2"))
        columns.append(Column(f"speedup {setting_title(setting)}", f"Speedup {setting_title(setting)}", best="max", format="x2"))
    columns += [Column("tokens", "Tokens seen", format="human"), Column("steps", "Steps", format="0"),
                Column("train_s", "Train time (s)", best="min", format="1"),
                Column("distill_s", "Distill wall time (s)", best="min", format="1")]
    rows, reference = [], set()
    teacher_rows, teacher_params = teacher_latency(inputs)
    if teacher_rows or teacher_params:
        row = {"method": "teacher", "student": _short(inputs.baseline.name if inputs.baseline else "teacher")}
        row.update(_param_values(teacher_params))
        for setting in settings:
            found = teacher_rows.get(setting)
            row[f"ms {setting_title(setting)}"] = found["median_ms"] if found else None
            row[f"speedup {setting_title(setting)}"] = 1.0 if found else None
        rows.append(row)
        reference.add(0)
    for run in inputs.runs:
        row = {**_labels(run), **_param_values(student_params(run))}
        latency = student_latency(run)
        for setting in settings:
            found = latency.get(setting)
            row[f"ms {setting_title(setting)}"] = found["median_ms"] if found else None
            row[f"speedup {setting_title(setting)}"] = found.get("speedup") if found else None
        row.update(tokens=run.meta.get("tokens_seen"), steps=run.meta.get("steps"), train_s=train_seconds(run.metrics),
                   distill_s=run.distill_seconds)
        rows.append(row)
    device = next((run.bench.get("device") for run in inputs.runs if run.bench), None)
    note = ("Parameters of the encoder (no LM head): embeddings, Transformer blocks, all. Latency: median forward "
            f"time from `tadistill bench`{f' on {device}' if device else ''} (b batch, s sequence length); speedup "
            "against the teacher in the same bench. Train time: the training loop's time from metrics.jsonl; "
            "distill wall time: the study's whole distill step.")
    return Table("efficiency", "Size, speed and training cost", columns, rows, reference, note)


def _param_values(params: dict | None) -> dict:
    if params is None:
        return {"params_embeddings": None, "params_blocks": None, "params_total": None}
    return {"params_embeddings": params["embeddings"] / 1e6, "params_blocks": params["blocks"] / 1e6,
            "params_total": params["total"] / 1e6}


def _agreement_table(inputs: Inputs) -> Table:
    pair_sets = list(dict.fromkeys(name for run in inputs.runs for name in (run.agreement or {}).get("similarity", {})))
    columns = LABEL_COLUMNS + [Column("mean_cos", "Mean cos", best="max", format="3"),
                               Column("spearman", "Spearman", best="max", format="3"),
                               Column("nn_at_1", "NN@1", best="max", format="3")]
    columns += [Column(f"sim/{name}", f"{name} Spearman", best="max", format="3") for name in pair_sets]
    rows = []
    for run in inputs.runs:
        agreement = run.agreement or {}
        row = {**_labels(run), **{key: agreement.get(key) for key in ("mean_cos", "spearman", "nn_at_1")}}
        row.update({f"sim/{name}": agreement.get("similarity", {}).get(name, {}).get("spearman") for name in pair_sets})
        rows.append(row)
    texts = next((run.agreement["texts"] for run in inputs.runs if run.agreement), None)
    note = (f"Sentence embeddings against the teacher's on {texts} held-out texts: mean cosine of each text's two "
            "embeddings (equal widths only), Spearman of all pairwise similarities, nearest-neighbour agreement.")
    return Table("agreement", "Embedding agreement with the teacher", columns, rows, set(), note)


def _same_path(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _short(name: str) -> str:
    return Path(str(name)).name or str(name)


# ---------------------------------------------------------------- rendering


def format_value(value, column: Column) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if column.format == "text":
        return str(value)
    if column.format == "human":
        for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= size:
                return f"{value / size:.1f}{suffix}"
        return f"{value:.0f}"
    if column.format.startswith("x"):
        return f"{value:.{int(column.format[1:])}f}x"
    return f"{value:.{int(column.format)}f}"


def to_markdown(table: Table) -> str:
    rows = []
    best = {column.key: table.best_rows(column) for column in table.columns}
    for i, row in enumerate(table.rows):
        cells = []
        for column in table.columns:
            text = format_value(row.get(column.key), column)
            cells.append(f"**{text}**" if i in best[column.key] else text)
        rows.append(cells)
    return render_markdown([column.title for column in table.columns], rows)


def to_csv(table: Table) -> str:
    """Full-precision values under the column titles; a missing value is an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([column.title for column in table.columns])
    for row in table.rows:
        writer.writerow(["" if row.get(column.key) is None else row.get(column.key) for column in table.columns])
    return out.getvalue()


def to_json(table: Table) -> dict:
    return {
        "name": table.name,
        "title": table.title,
        "note": table.note,
        "columns": [{"key": c.key, "title": c.title, "best": c.best} for c in table.columns],
        "rows": [{c.key: row.get(c.key) for c in table.columns} for row in table.rows],
        "reference_rows": sorted(table.reference),
        "best": {c.key: sorted(table.best_rows(c)) for c in table.columns if c.best},
    }


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def to_latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); the best value in \\textbf, the
    teacher's row above a rule of its own."""
    best = {column.key: table.best_rows(column) for column in table.columns}
    align = "".join("l" if column.format == "text" else "r" for column in table.columns)
    lines = [f"% {table.title}: {table.note}" if table.note else f"% {table.title}",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(column.title) for column in table.columns) + r" \\", r"\midrule"]
    for i, row in enumerate(table.rows):
        cells = []
        for column in table.columns:
            text = latex_escape(format_value(row.get(column.key), column))
            cells.append(rf"\textbf{{{text}}}" if i in best[column.key] else text)
        lines.append(" & ".join(cells) + r" \\")
        if i in table.reference and i + 1 < len(table.rows) and i + 1 not in table.reference:
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(table: Table, directory) -> dict[str, str]:
    """tables/<name>.{md,csv,json,tex}, each written atomically; returns format -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    texts = {"md": to_markdown(table) + "\n", "csv": to_csv(table),
             "json": json.dumps(to_json(table), indent=2) + "\n", "tex": to_latex(table)}
    written = {}
    for suffix, text in texts.items():
        path = directory / f"{table.name}.{suffix}"
        partial = path.with_name(f"{path.name}.partial")
        partial.write_text(text)
        partial.replace(path)
        written[suffix] = str(path)
    return written
