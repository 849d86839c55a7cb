"""The report's analysis section: for every run analysed by `tadistill analyze`, which
teacher layer each student block resembles most (by linear CKA, and by the MiniLMv2
relation KL), with the heatmaps next to it."""

from __future__ import annotations

import os
from pathlib import Path

from tadistill.report.collect import Run
from tadistill.report.tables import LABEL_COLUMNS, Column, Table, to_markdown


def analysis_table(runs: list[Run]) -> Table:
    """One row per analysed run: per student block "teacher layer (CKA)", the layers the
    relation KL matches, and the pooled-embedding Spearman."""
    depth = max(run.analysis["student_layers"] for run in runs)
    columns = LABEL_COLUMNS + [Column(f"layer {s}", f"Block {s}: teacher layer (CKA)", format="text")
                               for s in range(1, depth + 1)]
    columns += [Column("relation_match", "Closest by relation KL", format="text"),
                Column("embedding_spearman", "Embedding Spearman", best="max", format="3")]
    rows = []
    for run in runs:
        analysis = run.analysis
        closest = analysis["closest_teacher_layer"]
        row = {"method": run.method, "student": run.student,
               "relation_match": ", ".join(map(str, closest["relation_kl"])),
               "embedding_spearman": analysis.get("embedding_agreement", {}).get("spearman")}
        for s, t in enumerate(closest["cka"], start=1):
            row[f"layer {s}"] = f"{t} ({analysis['cka'][s][t]:.2f})"
        rows.append(row)
    note = ("For each student block, the teacher layer (0 = embeddings) whose representations it matches best by linear "
            "CKA over all held-out tokens, with that CKA (1: the same up to rotation and scale); then the teacher block "
            "whose Q-Q, K-K, V-V relations each student block matches best (lowest mean KL).")
    return Table("analysis", "Analysis: which student layers align with which teacher layers", columns, rows, set(), note)


def analysis_markdown(runs: list[Run], table: Table, out: Path) -> list[str]:
    lines = [f"## {table.title}", "", to_markdown(table), "", table.note, "",
             "As [CSV](tables/analysis.csv), [JSON](tables/analysis.json), [LaTeX](tables/analysis.tex).", ""]
    for run in runs:
        where = Path(run.analysis["dir"])
        figures = [(title, where / f"{name}.png") for name, title in (
            ("cka", "linear CKA"), ("relation_kl", "relation KL"), ("attention_kl_per_head", "attention KL per head"))]
        shown = [(title, path) for title, path in figures if path.is_file()]
        if shown:
            lines += [f"### {run.label}", ""]
            lines += [f"![{run.label}: {title}]({os.path.relpath(path, out)})" for title, path in shown] + [""]
    return lines
