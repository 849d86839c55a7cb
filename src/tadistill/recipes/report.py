"""The report recipe: runs and studies -> report.md with its tables and plots.

Read top to bottom: read every run (and the teacher's evaluations) from disk, build the
tables and write each as Markdown, CSV, JSON and LaTeX, draw the plots (PNG and SVG),
refresh each student's model card with what was found, and write report.md, which embeds
the tables and the plots. Nothing is trained or evaluated here: a value not on disk is
shown as missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from tadistill.errors import DataError
from tadistill.report import plots
from tadistill.report.analysis_section import analysis_markdown, analysis_table
from tadistill.report.card import write_model_card
from tadistill.report.collect import Inputs, collect
from tadistill.report.tables import (
    Table,
    bench_settings,
    build_tables,
    format_value,
    setting_title,
    student_latency,
    teacher_latency,
    to_markdown,
    write_table,
)


def run_report(paths: list[str | Path], out: str | Path | None = None, baseline: str | None = None,
               cards: bool = True) -> Path:
    """Write the report of `paths` (study, run or student directories) to `out`; returns report.md."""
    inputs = collect(paths, baseline)
    if not inputs.runs:
        raise DataError(f"{', '.join(map(str, paths))}: no runs found (a study with no cells?)")
    out = Path(out) if out else _default_out(inputs)
    out.mkdir(parents=True, exist_ok=True)

    # ---- tables: one file per format each
    tables = build_tables(inputs)
    for table in tables:
        write_table(table, out / "tables")

    # ---- plots, with one colour per method throughout
    colours = plots.method_colours([run.method for run in inputs.runs])
    figures = _draw_plots(inputs, tables, colours, out / "plots")

    # ---- the layer analyses, when any run has one
    analysed = [run for run in inputs.runs if run.analysis]
    analysis = analysis_table(analysed) if analysed else None
    if analysis is not None:
        write_table(analysis, out / "tables")

    # ---- model cards: every student with what this report knows about it
    if cards:
        for run in inputs.runs:
            if (run.student_dir / "tadistill.json").is_file():
                write_model_card(run.student_dir, scores=_card_scores(run, tables), latency=_card_latency(run))

    report = out / "report.md"
    partial = report.with_name("report.md.partial")
    partial.write_text(_markdown(inputs, tables, figures, analysis, out))
    partial.replace(report)
    return report


def _default_out(inputs: Inputs) -> Path:
    """A single study's report goes into the study (STUDY/report); anything else to ./report."""
    studies = [p for p in inputs.sources if (p / "study.json").is_file()]
    return studies[0] / "report" if len(inputs.sources) == 1 and studies else Path("report")


def _table(tables: list[Table], name: str) -> Table | None:
    return next((t for t in tables if t.name == name), None)


def headline(scores: Table) -> tuple[str, str] | None:
    """The one score a run is ranked by in the plots: the GLUE average, else XNLI's, else
    the first task's: (column key, column title)."""
    candidates = [c for c in scores.columns if c.key in ("glue_avg", "xnli_avg")] + [c for c in scores.columns if c.best]
    for column in candidates:
        if any(row.get(column.key) is not None for row in scores.rows):
            return column.key, column.title
    return None


def _draw_plots(inputs: Inputs, tables: list[Table], colours: dict[str, str], plot_dir: Path) -> dict[str, str]:
    """name -> PNG path of every plot the inputs support."""
    figures = {}
    scores = _table(tables, "scores")
    settings = bench_settings(inputs)
    if scores and settings and headline(scores):
        key, title = headline(scores)
        setting = settings[0]
        device = next(run.bench["device"] for run in inputs.runs if run.bench)
        points = []
        for run, row in zip(inputs.runs, scores.rows[len(scores.reference):]):
            latency = student_latency(run).get(setting)
            if latency and row.get(key) is not None:
                points.append({"label": run.label, "method": run.method, "student": run.student,
                               "latency_ms": latency["median_ms"], "score": row[key]})
        teacher_rows, _ = teacher_latency(inputs)
        if scores.reference and setting in teacher_rows and scores.rows[0].get(key) is not None:
            points.append({"label": "teacher", "method": "teacher", "student": "teacher", "teacher": True,
                           "latency_ms": teacher_rows[setting]["median_ms"], "score": scores.rows[0][key]})
        if points:
            dtype, batch, seq = setting
            paths = plots.score_vs_latency(points, colours, score_title=title,
                                           latency_title=f"latency (ms per batch; batch {batch}, {seq} tokens, {dtype}, {device})",
                                           out_dir=plot_dir)
            figures["Score against latency"] = str(paths[0])
    curves = [{"label": run.label, "method": run.method, "student": run.student, "metrics": run.metrics,
               "objectives": [k for k in run.metrics[-1] if _is_objective(k)]} for run in inputs.runs if run.metrics]
    if curves:
        figures["Training curves"] = str(plots.training_curves(curves, colours, out_dir=plot_dir)[0])
    if scores:
        columns = [c for c in scores.columns if c.best]
        bars = [{"label": f"{row['method']}/{row['student']}", "method": row["method"], "student": row["student"],
                 "teacher": i in scores.reference, "scores": {c.title.split(" (")[0]: row.get(c.key) for c in columns}}
                for i, row in enumerate(scores.rows)]
        tasks = [c.title.split(" (")[0] for c in columns]
        figures["Scores by task"] = str(plots.scores_by_method(tasks, bars, colours, unit="%", out_dir=plot_dir)[0])
    return figures


_NOT_LOSSES = {"step", "tokens", "lr", "loss", "tokens_per_s"}


def _is_objective(key: str) -> bool:
    return key not in _NOT_LOSSES and "/" not in key


def _card_scores(run, tables: list[Table]) -> list[tuple[str, str]]:
    scores = _table(tables, "scores")
    if not scores:
        return []
    row = next((r for i, r in enumerate(scores.rows) if i not in scores.reference
                and r["method"] == run.method and r["student"] == run.student), {})
    return [(c.title, format_value(row.get(c.key), c)) for c in scores.columns if c.best and row.get(c.key) is not None]


def _card_latency(run) -> list[tuple[str, str, str]]:
    device = (run.bench or {}).get("device", "")
    return [(f"{setting_title(setting)} {device}".strip(), f"{row['median_ms']:.2f}",
             "—" if row.get("speedup") is None else f"{row['speedup']:.2f}x")
            for setting, row in student_latency(run).items()]


def _markdown(inputs: Inputs, tables: list[Table], figures: dict[str, str], analysis: Table | None, out: Path) -> str:
    sources = ", ".join(f"`{p}`" for p in inputs.sources)
    lines = ["# Distillation report", "", f"{len(inputs.runs)} run(s) from {sources}"
             + (f"; teacher `{inputs.baseline.name}`" if inputs.baseline else "") + ".",
             "Best student value per column in **bold**; — marks a value that was not measured.", ""]
    unfinished = [run for run in inputs.runs if run.state not in (None, "done")]
    if unfinished:
        lines += ["Not finished: " + "; ".join(
            f"{run.label} ({run.state}{': ' + run.error.splitlines()[0] if run.error else ''})" for run in unfinished), ""]
    for table in tables:
        lines += [f"## {table.title}", "", to_markdown(table), ""]
        if table.note:
            lines += [table.note, ""]
        lines += [f"As [CSV](tables/{table.name}.csv), [JSON](tables/{table.name}.json), "
                  f"[LaTeX](tables/{table.name}.tex).", ""]
    if figures:
        lines += ["## Plots", ""]
        for title, path in figures.items():
            relative = os.path.relpath(path, out)
            lines += [f"### {title}", "", f"![{title}]({relative})", "",
                      f"[SVG]({Path(relative).with_suffix('.svg').as_posix()})", ""]
    if analysis is not None:
        lines += analysis_markdown([run for run in inputs.runs if run.analysis], analysis, out)
    return "\n".join(lines)
