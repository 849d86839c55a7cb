"""What a report reads: every run of a study (or plain run directories) with its
evaluations, benchmark, embedding agreement, training log and analysis, and the teacher's
own evaluations as the baseline.

Nothing is computed here beyond parsing: a value that is not on disk stays None, so the
tables show it as missing instead of as zero.

Where things are:
- a study directory (`study.json`): each cell `cells/<method>-<student>/` holds `run/` (the
  run directory), `eval/<task>/results.json`, `bench.json`, `agreement.json`; the teacher's
  evaluations are `teacher/eval/<task>/results.json`;
- a run directory (`metrics.jsonl` or `student/`): evaluations in `eval/*/` or where
  `tadistill evaluate` puts them by default (`student-eval/*/`), `bench.json` and
  `agreement.json` in the run directory;
- an analysis (`tadistill analyze`) in `analysis/analysis.json` of the cell or run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tadistill.errors import DataError

RESULTS = "results.json"


@dataclass
class Run:
    """One student: where it lives and everything measured about it (None: not measured)."""

    method: str
    student: str
    root: Path  # the study cell, or the run directory itself
    run_dir: Path
    state: str | None = None  # the study's state of the cell; None outside a study
    error: str | None = None
    meta: dict = field(default_factory=dict)  # student/tadistill.json
    config: dict = field(default_factory=dict)  # the resolved run config
    results: list[dict] = field(default_factory=list)  # every results.json found
    bench: dict | None = None
    agreement: dict | None = None
    metrics: list[dict] = field(default_factory=list)  # metrics.jsonl
    distill_seconds: float | None = None  # the study's wall time of the distill step
    analysis: dict | None = None

    @property
    def label(self) -> str:
        return f"{self.method}/{self.student}"

    @property
    def student_dir(self) -> Path:
        return self.run_dir / "student"


@dataclass
class Baseline:
    """The teacher: its evaluations (when any) and its name."""

    name: str
    results: list[dict] = field(default_factory=list)


@dataclass
class Inputs:
    runs: list[Run]
    baseline: Baseline | None
    sources: list[Path]


def collect(paths: list[str | Path], baseline: str | None = None) -> Inputs:
    """Every run under `paths` (study directories, run directories or student directories)
    and the baseline: `baseline`'s evaluations when given, else a study's teacher."""
    runs: list[Run] = []
    teacher: Baseline | None = None
    for path in map(Path, paths):
        if (path / "study.json").is_file():
            study_runs, study_teacher = _read_study(path)
            runs += study_runs
            teacher = teacher or study_teacher
        elif _is_run_dir(path):
            runs.append(_read_run(path, path))
        elif (path / "tadistill.json").is_file() and _is_run_dir(path.parent):
            runs.append(_read_run(path.parent, path.parent))
        else:
            raise DataError(
                f"{path}: neither a study directory (study.json), a run directory (metrics.jsonl, student/) "
                "nor a student directory (tadistill.json)"
            )
    unique = {}
    for run in runs:  # a run named twice (its directory and its student) is one run
        unique.setdefault(run.run_dir.resolve(), run)
    runs = list(unique.values())
    if baseline is not None:
        teacher = Baseline(baseline, _baseline_results(Path(baseline)))
    labels = [run.label for run in runs]
    for run in runs:  # two runs with one label would be indistinguishable in every table
        if labels.count(run.label) > 1:
            run.method = f"{run.method} ({run.run_dir})"
    return Inputs(runs, teacher, [Path(p) for p in paths])


def _is_run_dir(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or (path / "student" / "tadistill.json").is_file()


def _read_study(study_dir: Path) -> tuple[list[Run], Baseline]:
    manifest = _read_json(study_dir / "study.json")
    runs = []
    for cell in manifest.get("cells", []):
        root = study_dir / cell["dir"]
        run = _read_run(root, root / "run", method=cell["method"], student=cell["student"])
        run.state, run.error = cell.get("state"), cell.get("error")
        distill = cell.get("steps", {}).get("distill", {})
        run.distill_seconds = distill.get("seconds") if distill.get("state") == "done" else None
        runs.append(run)
    teacher = Baseline(manifest.get("teacher", "teacher"), _results_under(study_dir / "teacher" / "eval"))
    return runs, teacher


def _read_run(root: Path, run_dir: Path, method: str | None = None, student: str | None = None) -> Run:
    meta = _read_json(run_dir / "student" / "tadistill.json", missing={})
    config = _read_yaml(run_dir / "config.yaml")
    shape = student or _student_shape(run_dir / "student" / "config.json", config)
    run = Run(method=method or _method_name(run_dir.name, shape, config), student=shape, root=root, run_dir=run_dir,
              meta=meta, config=config)
    run.results = _results_under(root / "eval") + _results_under(run_dir / "student-eval")
    run.bench = _read_json(root / "bench.json", missing=None)
    run.agreement = _read_json(root / "agreement.json", missing=None)
    run.metrics = read_metrics(run_dir / "metrics.jsonl")
    for where in (root / "analysis", run_dir / "analysis"):
        if (where / "analysis.json").is_file():
            run.analysis = {**_read_json(where / "analysis.json"), "dir": str(where)}
            break
    return run


def read_metrics(path: Path) -> list[dict]:
    """The training log, one record per line; a line cut short by a crash is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _results_under(directory: Path) -> list[dict]:
    """Every sweep summary (`results.json` with a suite and tasks) below `directory`."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.rglob(RESULTS)):
        data = _read_json(path, missing=None)
        if isinstance(data, dict) and "suite" in data and "tasks" in data:
            found.append(data)
    return found


def _baseline_results(path: Path) -> list[dict]:
    """The evaluations of --baseline MODEL: under MODEL (a results directory, or a model
    directory with eval/) or where `tadistill evaluate MODEL` writes them (MODEL-eval/)."""
    candidates = [path, path.with_name(f"{path.name}-eval")]
    found = [result for candidate in candidates for result in _results_under(candidate)]
    if not found:
        raise DataError(
            f"--baseline {path}: no evaluation (results.json of `tadistill evaluate`) under {path} or "
            f"{candidates[1]}; evaluate the teacher first, or leave --baseline out"
        )
    return found


def _method_name(run_name: str, shape: str, config: dict) -> str:
    """A plain run's method: its directory name without the student shape (runs/minilmv2-6x384
    -> minilmv2), else its objectives joined by '+'."""
    stripped = re.sub(rf"[-_]?{re.escape(shape)}$", "", run_name) if shape else run_name
    if stripped and stripped != run_name:
        return stripped
    names = [objective.get("name", "?") for objective in config.get("objectives", [])]
    return "+".join(names) if names else run_name


def _student_shape(config_path: Path, run_config: dict) -> str:
    """'<layers>x<hidden>' from the saved student, else from the run config."""
    data = _read_json(config_path, missing={})
    layers = data.get("num_hidden_layers", data.get("n_layers"))
    hidden = data.get("hidden_size", data.get("dim"))
    if layers is None:
        student = run_config.get("student", {})
        layers, hidden = student.get("layers"), student.get("hidden")
    return f"{layers}x{hidden}" if layers is not None and hidden is not None else "student"


def _read_json(path: Path, missing=...):
    if not path.is_file():
        if missing is ...:
            raise DataError(f"{path}: no such file")
        return missing
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}
