"""Every problem of a study, before anything runs: the shared parts once (teacher, data,
evaluation), each student and method once, and what depends on both in the cell it
concerns. The owners' checks do the work (`models`, `data`, `training`, `objectives`,
`evaluation.file_tasks`); this module only says where each problem belongs."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from tadistill.arch import adapter_for
from tadistill.config import RunConfig, StudentConfig
from tadistill.data import corpus_problems
from tadistill.errors import Problem
from tadistill.evaluation.file_tasks import file_task_problems
from tadistill.evaluation.tasks import TASKS
from tadistill.measure import DTYPES
from tadistill.models import resolved_student_shape, shape_of, student_problems, teacher_problems
from tadistill.objectives import build_objectives, objective_problems
from tadistill.registry import did_you_mean
from tadistill.study.config import StudyConfig
from tadistill.study.plan import cell_name, cell_run_config, file_task, is_file_task, task_name
from tadistill.training import train_problems

NAME = re.compile(r"^[A-Za-z0-9][\w.+-]*$")  # a cell is a directory: <method>-<student>


@dataclass
class StudyCheck:
    problems: list[Problem] = field(default_factory=list)
    cells: dict[str, RunConfig] = field(default_factory=dict)  # cell name -> its run config
    needs_head: dict[str, bool] = field(default_factory=dict)  # cell name -> reads the teacher's logits


def check_study(study: StudyConfig) -> StudyCheck:
    check = StudyCheck()
    problems = check.problems
    problems += _name_problems("students", [s.name for s in study.students])
    problems += _name_problems("methods", [m.name for m in study.methods])

    teacher_config, found = teacher_problems(study.teacher, study.data.max_seq_length)
    problems += found
    problems += corpus_problems(study.data)
    teacher = shape_of(teacher_config) if teacher_config is not None else None
    has_head = teacher_config is not None and adapter_for(teacher_config).checkpoint_has_lm_head(teacher_config)

    shapes = {}
    for i, student in enumerate(study.students):
        own = StudentConfig(**{f.name: getattr(student, f.name) for f in dataclasses.fields(StudentConfig)})
        problems += [_rekey(p, "student.", f"students.{i}.") for p in student_problems(own, teacher_config)]
        shapes[i] = resolved_student_shape(own, teacher_config) if teacher_config is not None else None

    for m, method in enumerate(study.methods):
        if bool(method.objectives) == bool(method.config):
            problems.append(Problem(f"methods.{m}.objectives", method.objectives,
                                    "give the method's objectives, or `config:` a run config that lists them, not both"))
            continue
        configs = {}
        for s, student in enumerate(study.students):
            configs[s], structural = cell_run_config(study, m, s, study.teacher.path)
            if s == 0:  # what the method adds is the same for every student: reported once
                problems += structural
                problems += [_rekey(p, "train.", f"methods.{m}.train.") for p in train_problems(configs[s].train)]
                if configs[s].train.max_steps is None and configs[s].train.max_tokens is None:
                    problems.append(Problem(f"methods.{m}.train.max_steps", None, "set train.max_steps and/or train.max_tokens (the budget)"))
        objectives = configs[0].objectives if configs else []
        shared = objective_problems(objectives, teacher=None, student=None, teacher_has_lm_head=True)
        problems += [_rekey(p, "objectives.", f"methods.{m}.objectives.") for p in shared]
        for s, student in enumerate(study.students):
            name = cell_name(method.name, student.name)
            check.cells[name] = configs[s]
            if shared or teacher is None or shapes[s] is None:
                continue
            found = objective_problems(objectives, teacher=teacher, student=shapes[s],
                                       teacher_has_lm_head=has_head or study.fit_head is not None)
            problems += [_rekey(p, "objectives.", f"cells.{name}.objectives.") for p in found]
            if not found:
                check.needs_head[name] = build_objectives(objectives, teacher=teacher, student=shapes[s]).needs_logits
    problems += _evaluation_problems(study)
    return check


def _rekey(problem: Problem, old: str, new: str) -> Problem:
    return dataclasses.replace(problem, key=new + problem.key.removeprefix(old))


def _name_problems(key: str, names: list[str]) -> list[Problem]:
    problems = [Problem(f"{key}.{i}.name", name, "give a name of letters, digits and . _ + - (it names directories)")
                for i, name in enumerate(names) if not NAME.match(name or "")]
    repeated = sorted({name for name in names if names.count(name) > 1})
    problems += [Problem(key, name, "names must be distinct") for name in repeated]
    return problems


def _evaluation_problems(study: StudyConfig) -> list[Problem]:
    evaluation, problems = study.evaluation, []
    names = [task_name(task) for task in evaluation.tasks]
    problems += _name_problems("evaluation.tasks", names)
    for i, task in enumerate(evaluation.tasks):
        key = f"evaluation.tasks.{i}"
        if is_file_task(task):
            if not any(task.get(k) for k in ("train", "data")):
                hint = did_you_mean(task_name(task), TASKS.names())
                problems.append(Problem(f"{key}.name", task_name(task), f"not a GLUE/XNLI task, and no files given (train/dev or data).{hint}"))
                continue
            found: list[Problem] = []
            config = file_task(task, found, key)
            problems += found + file_task_problems(config, key)
        elif set(task) - {"name", "data_dir"}:
            problems.append(Problem(key, task, "a GLUE/XNLI task takes only `name` and `data_dir`"))
    grid = evaluation.finetune
    if not grid.lrs or any(lr <= 0 for lr in grid.lrs) or not grid.epochs or any(e < 1 for e in grid.epochs):
        problems.append(Problem("evaluation.finetune", grid, "learning rates must be > 0 and epochs >= 1, at least one of each"))
    if grid.seeds < 1 or grid.batch_size < 1 or grid.max_seq_length < 8:
        problems.append(Problem("evaluation.finetune", grid, "seeds and batch_size must be >= 1, max_seq_length >= 8"))
    if evaluation.agreement is not None:
        agreement = evaluation.agreement
        if not Path(agreement.texts).is_file():
            problems.append(Problem("evaluation.agreement.texts", agreement.texts, "no such file (held-out text, one a line)"))
        for j, pairs in enumerate(agreement.pairs):
            if not Path(pairs.path).is_file():
                problems.append(Problem(f"evaluation.agreement.pairs.{j}.path", pairs.path, "no such file"))
    if evaluation.bench is not None:
        bench = evaluation.bench
        if min(bench.batch + bench.seq, default=0) < 1 or bench.iters < 1 or bench.warmup < 0:
            problems.append(Problem("evaluation.bench", bench, "batch and seq sizes and iters must be >= 1, warmup >= 0"))
        unknown = [d for d in bench.dtype if d not in DTYPES]
        if unknown:
            problems.append(Problem("evaluation.bench.dtype", bench.dtype, f"use {', '.join(DTYPES)}"))
    return problems
