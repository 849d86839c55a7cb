"""The report's figures, drawn with matplotlib's Agg backend (no display needed) and saved
as PNG and SVG at one fixed size (FIGSIZE inches at DPI), so they read at the width
report.md embeds them and a test can check what was written.

Every figure colours a method the same way (`method_colours`) and gives a student shape
its own marker or line style, so a method can be followed from one figure to the next.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never a window, works without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

FIGSIZE = (8.0, 5.0)  # inches; at DPI: 1200 x 750 pixels
DPI = 150
TEACHER_COLOUR = "black"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def method_colours(methods: list[str]) -> dict[str, str]:
    """One colour per method, by the method's position in the sorted list of all methods."""
    palette = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors
    return {method: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, method in enumerate(sorted(set(methods)))}


def pareto_frontier(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower x, higher y: faster and better),
    ordered by x. A point equal to another in both is kept with it."""
    frontier = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (ox <= x and oy >= y) and (ox < x or oy > y) for j, (ox, oy) in enumerate(points) if j != i
        )
        if not dominated:
            frontier.append(i)
    return sorted(frontier, key=lambda i: (points[i][0], -points[i][1]))


def _save(figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("png", "svg"):
        path = out_dir / f"{name}.{suffix}"
        partial = path.with_name(f".{path.stem}.partial.{suffix}")  # the suffix tells matplotlib the format
        figure.savefig(partial, dpi=DPI)
        partial.replace(path)
        paths.append(path)
    plt.close(figure)
    return paths


def score_vs_latency(points: list[dict], colours: dict[str, str], *, score_title: str, latency_title: str,
                     out_dir: Path, name: str = "score_vs_latency") -> list[Path]:
    """Each point {label, method, student, latency_ms, score, teacher?}; the Pareto frontier
    (nothing both faster and better) joined by a line and ringed."""
    figure, axes = plt.subplots(figsize=FIGSIZE, layout="constrained")
    students = sorted({p["student"] for p in points if not p.get("teacher")})
    frontier = set(pareto_frontier([(p["latency_ms"], p["score"]) for p in points]))
    for i, point in enumerate(points):
        teacher = point.get("teacher", False)
        colour = TEACHER_COLOUR if teacher else colours[point["method"]]
        marker = "*" if teacher else MARKERS[students.index(point["student"]) % len(MARKERS)]
        axes.scatter(point["latency_ms"], point["score"], color=colour, marker=marker, s=160 if teacher else 70, zorder=3)
        if i in frontier:
            axes.scatter(point["latency_ms"], point["score"], facecolors="none", edgecolors="red", s=320, linewidths=1.5, zorder=4)
        axes.annotate(point["label"], (point["latency_ms"], point["score"]), textcoords="offset points", xytext=(6, 6),
                      fontsize=9)
    ordered = sorted(frontier, key=lambda i: points[i]["latency_ms"])
    if len(ordered) > 1:
        axes.step([points[i]["latency_ms"] for i in ordered], [points[i]["score"] for i in ordered], where="post",
                  color="red", linewidth=1, alpha=0.7, zorder=2)
    axes.scatter([], [], facecolors="none", edgecolors="red", s=200, label="Pareto frontier (nothing faster and better)")
    for method in sorted({p["method"] for p in points if not p.get("teacher")}):
        axes.scatter([], [], color=colours[method], marker="o", label=method)
    axes.set_xlabel(latency_title)
    axes.set_ylabel(score_title)
    axes.set_title("Score against latency")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=9, loc="best")
    return _save(figure, out_dir, name)


def training_curves(runs: list[dict], colours: dict[str, str], *, out_dir: Path, name: str = "training_curves") -> list[Path]:
    """One panel per objective: its loss against tokens seen for every run that has it
    (colour: method, line style: student); its parts (e.g. minilmv2/qq) as thin lines."""
    objectives = list(dict.fromkeys(obj for run in runs for obj in run["objectives"]))
    columns = min(len(objectives), 3) or 1
    rows = -(-len(objectives) // columns) or 1
    figure, grid = plt.subplots(rows, columns, figsize=FIGSIZE, layout="constrained", squeeze=False)
    students = sorted({run["student"] for run in runs})
    for axes, objective in zip(grid.flat, objectives):
        for run in runs:
            if objective not in run["objectives"]:
                continue
            records = run["metrics"]
            style = LINESTYLES[students.index(run["student"]) % len(LINESTYLES)]
            tokens = [r["tokens"] for r in records if objective in r]
            axes.plot(tokens, [r[objective] for r in records if objective in r], color=colours[run["method"]],
                      linestyle=style, linewidth=1.8, label=run["label"])
            parts = sorted({k for r in records for k in r if k.startswith(objective + "/")})
            for part in parts:
                axes.plot([r["tokens"] for r in records if part in r], [r[part] for r in records if part in r],
                          color=colours[run["method"]], linestyle=style, linewidth=0.7, alpha=0.6)
                last = next(r for r in reversed(records) if part in r)
                axes.annotate(part.split("/", 1)[1], (last["tokens"], last[part]), fontsize=7, alpha=0.8)
        axes.set_title(objective)
        axes.set_xlabel("tokens seen")
        axes.set_ylabel("loss (log scale)")
        axes.set_yscale("log")
        axes.xaxis.set_major_formatter(EngFormatter())
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    for axes in list(grid.flat)[len(objectives):]:
        axes.set_visible(False)
    figure.suptitle("Training curves: each named loss against tokens seen (thin lines: the loss's parts)")
    return _save(figure, out_dir, name)


def scores_by_method(tasks: list[str], bars: list[dict], colours: dict[str, str], *, unit: str, out_dir: Path,
                     name: str = "scores_by_task") -> list[Path]:
    """Grouped bars: one group per task, one bar per run (colour: method, hatch: student);
    the teacher as a black tick over each group. bars: {label, method, student, scores, teacher?};
    a missing score leaves a gap, never a bar at 0."""
    figure, axes = plt.subplots(figsize=FIGSIZE, layout="constrained")
    students = sorted({b["student"] for b in bars if not b.get("teacher")})
    hatches = ("", "//", "..", "xx", "\\\\", "oo")
    runs = [b for b in bars if not b.get("teacher")]
    width = 0.8 / max(len(runs), 1)
    for j, bar in enumerate(runs):
        xs = [i - 0.4 + width * (j + 0.5) for i, task in enumerate(tasks) if bar["scores"].get(task) is not None]
        ys = [bar["scores"][task] for task in tasks if bar["scores"].get(task) is not None]
        axes.bar(xs, ys, width=width, color=colours[bar["method"]], label=bar["label"], edgecolor="white",
                 hatch=hatches[students.index(bar["student"]) % len(hatches)])
    for bar in bars:
        if bar.get("teacher"):
            for i, task in enumerate(tasks):
                if bar["scores"].get(task) is not None:
                    axes.hlines(bar["scores"][task], i - 0.45, i + 0.45, color=TEACHER_COLOUR, linewidth=2,
                                label="teacher" if i == 0 else None)
    axes.set_xticks(range(len(tasks)), tasks)
    axes.set_ylabel(f"score ({unit})")
    axes.set_xlabel("task")
    axes.set_title("Scores by task and method")
    axes.grid(axis="y", alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    return _save(figure, out_dir, name)


def heatmap(matrix: list[list[float]], *, row_title: str, column_title: str, value_title: str, title: str,
            out_dir: Path, name: str, row_labels: list[str] | None = None, column_labels: list[str] | None = None) -> list[Path]:
    """A matrix as coloured cells with the value written in each (layer x layer CKA, KL...)."""
    figure, axes = plt.subplots(figsize=FIGSIZE, layout="constrained")
    image = axes.imshow(matrix, cmap="viridis", aspect="auto", origin="lower")
    rows, columns = len(matrix), len(matrix[0]) if matrix else 0
    axes.set_xticks(range(columns), column_labels or [str(i) for i in range(columns)])
    axes.set_yticks(range(rows), row_labels or [str(i) for i in range(rows)])
    if rows * columns <= 400:  # numbers stay readable up to ~20 x 20
        for r in range(rows):
            for c in range(columns):
                axes.text(c, r, f"{matrix[r][c]:.2f}", ha="center", va="center", fontsize=7, color="white")
    axes.set_xlabel(column_title)
    axes.set_ylabel(row_title)
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label=value_title)
    return _save(figure, out_dir, name)
