"""What a study does: its cells (method x student), each an ordinary run config, and the
steps of every cell, each a `tadistill` command with the file that marks it done.

Steps run as their own processes (`python -m tadistill.cli ...`), locally or in a cluster
job, so a cell is exactly what a user would run by hand, and a crash, a kill or a
pre-emption loses at most the step in flight (a distillation resumes from its checkpoint).
`plan.json` in the study directory holds every step, so a job needs nothing else to run
its cell.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tadistill.config import RunConfig, StudentConfig, build, deep_merge, read_yaml, resolve_config_path, to_dict
from tadistill.errors import ConfigError, Problem
from tadistill.evaluation.file_tasks import FileTaskConfig
from tadistill.evaluation.tasks import TASKS
from tadistill.study.config import StudyConfig

HEAD_DIR = "teacher-head"  # the teacher with a fitted MLM head, for methods that read logits
TEACHER_DIR = "teacher"  # the teacher's own evaluations (the baseline row)


@dataclass
class Step:
    name: str  # "distill", "eval/<task>", "agreement", "bench", "fit-head"
    argv: list[str]  # the command, from the Python executable on
    marker: str  # the file whose presence (and this step's fingerprint) marks it done
    # files whose content the step depends on beyond its command line: its run config or task
    # file, and the student it evaluates (whose tadistill.json changes when it is distilled again)
    inputs: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """Changes when the command or an input does: an edited study redoes what its edit
        concerns, and a student distilled again is evaluated again."""
        digest = hashlib.sha256(json.dumps(self.argv[1:]).encode())
        for path in map(Path, self.inputs):
            digest.update(path.read_bytes() if path.is_file() else b"(absent)")
        return digest.hexdigest()[:16]


@dataclass
class Unit:
    """A cell of the study (or its preparation, or the teacher's baseline): steps run in order."""

    name: str
    dir: str
    steps: list[Step] = field(default_factory=list)
    method: str | None = None
    student: str | None = None
    gpus: int = 0
    after: list[str] = field(default_factory=list)  # units that must be done first
    teacher: str | None = None  # a cell's teacher: the study's, or the one with the fitted head


def cell_name(method: str, student: str) -> str:
    return f"{method}-{student}"


def cell_run_config(study: StudyConfig, method_index: int, student_index: int, teacher_path: str) -> tuple[RunConfig, list[Problem]]:
    """The run config of one cell and the structural problems of what its method adds."""
    method, student = study.methods[method_index], study.students[student_index]
    data = {
        "teacher": {**dataclasses.asdict(study.teacher), "path": teacher_path},
        "student": {f.name: getattr(student, f.name) for f in dataclasses.fields(StudentConfig)},
        "data": dataclasses.asdict(study.data),
        "train": dataclasses.asdict(study.train),
        "objectives": [{"name": o.name, "weight": o.weight, **o.options} for o in method.objectives],
    }
    if method.config:  # a run config: its objectives and train settings
        own = read_yaml(resolve_config_path(method.config))
        data["train"] = deep_merge(data["train"], own.get("train", {}))
        data["objectives"] = own.get("objectives", [])
    data["train"] = deep_merge(data["train"], method.train)
    problems: list[Problem] = []
    config = build(RunConfig, data, "", problems)
    key = f"methods.{method_index}"
    return config, [dataclasses.replace(p, key=f"{key}.{p.key}") for p in problems]


def select(names: list[str], patterns: str | None) -> list[str]:
    """The names matching any of the comma-separated glob `patterns` (all when None)."""
    if not patterns:
        return names
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in wanted)]
    if not chosen:
        raise ConfigError([Problem("--cells", patterns, f"matches no cell; cells: {', '.join(names)}")])
    return chosen


def make_plan(study: StudyConfig, study_dir: Path, *, needs_head: dict[str, bool]) -> dict[str, Unit]:
    """Every unit of the study in run order: preparation, the teacher's baseline, the cells.

    `needs_head[cell]` says which cells read logits (and so learn from the fitted head).
    """
    study_dir = study_dir.resolve()
    python = [sys.executable, "-m", "tadistill.cli"]
    evaluation = study.evaluation
    units: dict[str, Unit] = {}
    head_dir = study_dir / HEAD_DIR
    if study.fit_head is not None and any(needs_head.values()):
        units["prepare"] = Unit("prepare", str(study_dir), [Step(
            "fit-head",
            [*python, "fit-head", study.teacher.path, *[arg for s in study.data.sources for arg in ("--data", s.path)],
             "--documents", study.data.sources[0].documents if study.data.sources else "blank-line",
             "--output", str(head_dir), "--steps", str(study.fit_head.steps), "--learning-rate", str(study.fit_head.learning_rate),
             "--max-seq-length", str(study.data.max_seq_length)],
            str(head_dir / "config.json"),
        )])
    task_files = _write_task_files(study, study_dir)
    if evaluation.baseline and evaluation.tasks:
        teacher = Unit("teacher", str(study_dir / TEACHER_DIR))
        teacher.steps = [_eval_step(python, study, study.teacher.path, Path(teacher.dir), task, task_files)
                         for task in evaluation.tasks]
        units["teacher"] = teacher
    for m, method in enumerate(study.methods):
        for s, student in enumerate(study.students):
            name = cell_name(method.name, student.name)
            cell_dir = study_dir / "cells" / name
            teacher_path = str(head_dir) if needs_head.get(name) and study.fit_head is not None else study.teacher.path
            unit = Unit(name, str(cell_dir), method=method.name, student=student.name, gpus=study.launcher.gpus_per_job,
                        after=["prepare"] if teacher_path == str(head_dir) else [], teacher=teacher_path)
            distill = [*python, "distill", str(cell_dir / "run.yaml"), "--output", str(cell_dir / "run"), "--resume", "auto"]
            if unit.gpus > 1:  # data parallel inside the cell's job
                distill = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                           str(unit.gpus), *distill[1:]]
            student_dir = str(cell_dir / "run" / "student")
            distilled = str(cell_dir / "run" / "student" / "tadistill.json")
            unit.steps.append(Step("distill", distill, distilled, inputs=[str(cell_dir / "run.yaml")]))
            unit.steps += [_eval_step(python, study, student_dir, cell_dir, task, task_files, inputs=[distilled])
                           for task in evaluation.tasks]
            if evaluation.agreement is not None:
                a = evaluation.agreement
                argv = [*python, "agreement", student_dir, "--teacher", study.teacher.path, "--texts", a.texts,
                        "--max-texts", str(a.max_texts), "--max-seq-length", str(a.max_seq_length),
                        "--teacher-cache", str(study_dir / TEACHER_DIR / "embeddings.safetensors"),
                        "--output", str(cell_dir / "agreement.json")]
                for pairs in a.pairs:
                    argv += ["--pairs", pairs.path, "--pair-columns", f"{pairs.text},{pairs.text_pair},{pairs.score}"]
                unit.steps.append(Step("agreement", argv, str(cell_dir / "agreement.json"), inputs=[distilled]))
            if evaluation.bench is not None:
                b = evaluation.bench
                unit.steps.append(Step("bench", [
                    *python, "bench", student_dir, "--teacher", study.teacher.path,
                    "--batch", ",".join(map(str, b.batch)), "--seq", ",".join(map(str, b.seq)),
                    "--dtype", ",".join(b.dtype), "--warmup", str(b.warmup), "--iters", str(b.iters),
                    "--output", str(cell_dir / "bench.json"),
                ], str(cell_dir / "bench.json"), inputs=[distilled]))
            units[name] = unit
    return units


def write_cell_configs(configs: dict[str, RunConfig], units: dict[str, Unit], study_dir: Path) -> None:
    """Each cell's run config as `cells/<cell>/run.yaml` (what its distill step reads), with
    the cell's teacher: the fitted-head directory for cells that read logits."""
    for name, config in configs.items():
        config = dataclasses.replace(config, teacher=dataclasses.replace(config.teacher, path=units[name].teacher))
        path = study_dir / "cells" / name / "run.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = f"# cell {name} of study {study_dir.name}: tadistill distill {path} --resume auto\n"
        text += yaml.safe_dump(to_dict(config), sort_keys=False)
        if not path.is_file() or path.read_text() != text:
            partial = path.with_suffix(".yaml.partial")
            partial.write_text(text)
            partial.replace(path)


def task_name(task: dict) -> str:
    return str(task.get("name", ""))


def is_file_task(task: dict) -> bool:
    return any(task.get(key) for key in ("train", "data")) or task_name(task) not in TASKS


def file_task(task: dict, problems: list[Problem], key: str) -> FileTaskConfig:
    return build(FileTaskConfig, task, key, problems)


def _write_task_files(study: StudyConfig, study_dir: Path) -> dict[str, Path]:
    """The study's file tasks as task files under `tasks/` (what `tadistill evaluate --task` reads)."""
    written = {}
    for task in study.evaluation.tasks:
        if not is_file_task(task):
            continue
        path = study_dir / "tasks" / f"{task_name(task)}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        config = dataclasses.asdict(file_task(task, [], ""))
        partial = path.with_suffix(".yaml.partial")
        partial.write_text(yaml.safe_dump(config, sort_keys=False))
        partial.replace(path)
        written[task_name(task)] = path
    return written


def _eval_step(python: list[str], study: StudyConfig, model: str, unit_dir: Path, task: dict, task_files: dict[str, Path],
               inputs: list[str] = ()) -> Step:
    grid = study.evaluation.finetune
    name = task_name(task)
    out = unit_dir / "eval" / name
    which = ["--task", str(task_files[name])] if name in task_files else ["--suite", TASKS.get(name).suite, *(
        ["--tasks", name] if TASKS.get(name).suite == "glue" else [])] + (["--data-dir", task["data_dir"]] if task.get("data_dir") else [])
    argv = [*python, "evaluate", model, *which, "--lrs", ",".join(f"{lr:g}" for lr in grid.lrs),
            "--epochs", ",".join(map(str, grid.epochs)), "--seeds", str(grid.seeds), "--batch-size", str(grid.batch_size),
            "--max-seq-length", str(grid.max_seq_length), "--precision", grid.precision, "--output", str(out)]
    task_file = [str(task_files[name])] if name in task_files else []
    return Step(f"eval/{name}", argv, str(out / "results.json"), inputs=[*task_file, *inputs])


def plan_to_json(units: dict[str, Unit]) -> dict:
    return {"format": 1, "units": {name: dataclasses.asdict(unit) for name, unit in units.items()}}


def plan_from_json(data: dict) -> dict[str, Unit]:
    return {name: Unit(**{**unit, "steps": [Step(**step) for step in unit["steps"]]}) for name, unit in data["units"].items()}

