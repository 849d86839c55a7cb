"""The study recipe: methods x students distilled, evaluated and benchmarked, as one
resumable command.

Read top to bottom: read the study file and check every cell (nothing runs when anything
is wrong), lock the study directory, write each cell's run config and the plan (every
step of every unit as a `tadistill` command), then run what is not done: on this machine
one step after another, or as submitit jobs (`--launcher slurm`; `submitit-local` runs the
same job path on this machine). Finished steps are skipped, an interrupted distillation
resumes from its checkpoint, a failed cell is recorded with its error and the others go
on. `study.json` and the progress view are updated after every step.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import yaml

from tadistill.errors import ConfigError
from tadistill.study.checks import check_study
from tadistill.study.config import read_study_config
from tadistill.study.launch import run_local, study_lock, submit
from tadistill.study.plan import make_plan, plan_to_json, select, task_name, write_cell_configs
from tadistill.study.state import manifest, progress_view, write_json

LAUNCHERS = ("local", "slurm", "submitit-local")


def run_study(
    path: str | Path,
    output: str | Path | None = None,
    *,
    overrides: list[str] = (),
    cells: str | None = None,
    launcher: str = "local",
    wait: bool = False,
) -> bool:
    """Run (or continue) a study; True when every selected unit is done."""
    study, problems = read_study_config(path, overrides)
    check = check_study(study)
    problems += check.problems
    if problems:
        raise ConfigError(problems, source=str(path))
    study_dir = Path(output or Path("runs") / f"study-{study.name}").resolve()
    started = time.monotonic()

    with study_lock(study_dir) as lock:
        # ---- what the study is: the resolved study, each cell's run config, every step
        write_json(study_dir / "study.resolved.json", dataclasses.asdict(study))
        (study_dir / "study.yaml").write_text(yaml.safe_dump(_plain(dataclasses.asdict(study)), sort_keys=False))
        units = make_plan(study, study_dir, needs_head=check.needs_head)
        write_cell_configs(check.cells, units, study_dir)
        write_json(study_dir / "plan.json", plan_to_json(units))
        cell_names = [name for name, unit in units.items() if unit.method]
        chosen = set(select(cell_names, cells))
        todo = [unit for name, unit in units.items()
                if name in chosen or (unit.method is None and (cells is None or any(name in units[c].after for c in chosen)))]
        tasks = [task_name(task) for task in study.evaluation.tasks]
        last_view = [""]

        def report() -> None:
            view = progress_view(manifest(study_dir, study.name, study.teacher.path, tasks, units), time.monotonic() - started)
            if view.splitlines()[1:] != last_view[0].splitlines()[1:]:  # a state changed: show it
                print(view, flush=True)
                last_view[0] = view

        print(f"study {study.name}: {len(cell_names)} cells ({len(study.methods)} methods x {len(study.students)} students)"
              f" in {study_dir}; running {len(todo)} unit(s) with the {launcher} launcher", flush=True)
        report()
        if launcher == "local":
            ok = run_local(study_dir, todo, report, lock)
        else:
            ok = submit(study_dir, todo, "slurm" if launcher == "slurm" else "local", study.launcher, study.name, wait, report)
            if not ok and not wait:
                print("jobs submitted; run the same command again to collect them and to resubmit what failed", flush=True)
        report()
        data = manifest(study_dir, study.name, study.teacher.path, tasks, units)
        print(progress_view(data, time.monotonic() - started).splitlines()[0], flush=True)
    done = {entry["name"]: entry["state"] == "done" for entry in data["cells"]}
    return ok and all(done[name] for name in chosen)


def _plain(data):
    """Dataclass dicts as a study file writes them: objective options flat again."""
    if isinstance(data, dict):
        if set(data) == {"name", "weight", "options"}:
            return {"name": data["name"], "weight": data["weight"], **data["options"]}
        return {key: _plain(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_plain(value) for value in data]
    return data

