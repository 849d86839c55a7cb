"""Where a study stands: one state file per unit (`state/<unit>.json`, written only by
whoever runs that unit, a local process or a cluster job), the manifest `study.json`
assembled from them, and the progress view with elapsed time and ETA.

A step is done when its state says so with the fingerprint of the command it ran and the
file that marks it done exists; anything else is run (again).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from tadistill.study.plan import Step, Unit
from tadistill.tables import render_text

STATES = ("done", "running", "failed", "pending")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def state_path(study_dir: Path, unit: str) -> Path:
    return Path(study_dir) / "state" / f"{unit}.json"


def read_state(study_dir: Path, unit: str) -> dict:
    path = state_path(study_dir, unit)
    return json.loads(path.read_text()) if path.is_file() else {"steps": {}}


def write_state(study_dir: Path, unit: str, state: dict) -> None:
    write_json(state_path(study_dir, unit), state)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(path)


def step_done(step: Step, state: dict) -> bool:
    record = state["steps"].get(step.name, {})
    return record.get("state") == "done" and record.get("fingerprint") == step.fingerprint and Path(step.marker).is_file()


def unit_state(unit: Unit, state: dict) -> str:
    """pending | running | done | failed, from the unit's steps."""
    records = [state["steps"].get(step.name, {}) for step in unit.steps]
    if all(step_done(step, state) for step in unit.steps):
        return "done"
    if any(r.get("state") == "failed" and r.get("fingerprint") == s.fingerprint for r, s in zip(records, unit.steps)):
        return "failed"
    if any(r.get("state") == "running" for r in records):
        return "running"
    return "pending"


def manifest(study_dir: Path, name: str, teacher: str, tasks: list[str], units: dict[str, Unit]) -> dict:
    """study.json: every cell with its state, timings and where its results are."""
    path = Path(study_dir) / "study.json"
    created = json.loads(path.read_text()).get("created", now()) if path.is_file() else now()

    def entry(unit: Unit) -> dict:
        state = read_state(study_dir, unit.name)
        steps = {s.name: {k: v for k, v in state["steps"].get(s.name, {"state": "pending"}).items() if k != "fingerprint"}
                 for s in unit.steps}
        for step in unit.steps:
            if steps[step.name].get("state") == "done" and not step_done(step, state):
                steps[step.name]["state"] = "pending"  # its command changed, or its output is gone
        errors = [record.get("error") for record in steps.values() if record.get("state") == "failed"]
        return {"name": unit.name, "dir": os.path.relpath(unit.dir, study_dir), "state": unit_state(unit, state),
                "error": errors[0] if errors else None, "seconds": round(sum(r.get("seconds", 0) for r in steps.values()), 1),
                "steps": steps, **({"job": state["job"]} if "job" in state else {})}

    cells = [{**entry(unit), "method": unit.method, "student": unit.student} for unit in units.values() if unit.method]
    data = {"format": 1, "name": name, "teacher": teacher, "created": created, "updated": now(), "tasks": tasks,
            "cells": cells}
    if "teacher" in units:
        data["baseline"] = entry(units["teacher"])
    if "prepare" in units:
        data["prepare"] = entry(units["prepare"])
    write_json(path, data)
    return data


def progress_view(data: dict, elapsed_s: float | None = None) -> str:
    """A table of the units: state, time spent, steps done; counts, elapsed time and ETA."""
    entries = [*([data["prepare"]] if "prepare" in data else []), *([data["baseline"]] if "baseline" in data else []),
               *data["cells"]]
    counts = {state: sum(e["state"] == state for e in entries) for state in STATES}
    def seconds_by_kind(group) -> dict[str, list[float]]:
        """Seconds of the finished steps of `group`, by kind of step ("eval/x" is "eval")."""
        found: dict[str, list[float]] = {}
        for e in group:
            for name, record in e["steps"].items():
                if record.get("state") == "done" and "seconds" in record:
                    found.setdefault(name.split("/")[0], []).append(record["seconds"])
        return found

    # a kind of step is estimated from the cells' own when there are any (the teacher's
    # fine-tuning, a larger model, says little about a student's)
    by_kind = {**seconds_by_kind(entries), **seconds_by_kind(data["cells"])}
    done_steps = [seconds for values in seconds_by_kind(entries).values() for seconds in values]
    mean_all = sum(done_steps) / len(done_steps) if done_steps else None
    left = [name for e in entries for name, record in e["steps"].items() if record.get("state") in ("pending", "running")]
    estimates = [sum(by_kind[n.split("/")[0]]) / len(by_kind[n.split("/")[0]]) if n.split("/")[0] in by_kind else mean_all
                 for n in left]
    eta = None if None in estimates else sum(estimates)
    rows = []
    for e in entries:
        steps = " ".join(f"{name}{_MARKS[record.get('state', 'pending')]}" for name, record in e["steps"].items())
        rows.append([e["name"], e["state"], _duration(e["seconds"]), steps])
    summary = ", ".join(f"{counts[s]} {s}" for s in STATES)
    timing = f"; elapsed {_duration(elapsed_s)}" if elapsed_s is not None else ""
    timing += f"; ETA {_duration(eta)}" if left and eta is not None else ("; ETA unknown" if left else "")
    return f"study {data['name']}: {summary}{timing}\n" + render_text(["unit", "state", "time", "steps"], rows)


_MARKS = {"done": " ok", "running": " ..", "failed": " FAILED", "pending": ""}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
