"""The study file: one teacher and corpus, students x methods, and how every cell is judged.

    # tadistill study configs/study/my-study.yaml
    name: my-study
    teacher: google-bert/bert-base-uncased   # as in a run config (`teacher: {path: ...}` too)
    data: {sources: [{path: corpus/*.txt}], max_seq_length: 128}
    train: {batch_size: 32, max_steps: 20000, learning_rate: 6.0e-4, mixed_precision: auto}
    fit_head: {steps: 300}                   # optional: fit an MLM head first for methods that read logits
    students:
      - {name: 6x384, layers: 6, hidden: 384, heads: 12}          # a run config's `student` section + a name
    methods:
      - {name: minilmv2, objectives: [{name: minilmv2, relation_heads: 48}]}
      - {name: hs-last, objectives: [{name: hs}], train: {learning_rate: 1.0e-3}}  # train settings of its own
      - {name: mine, config: runs/mine.yaml}  # a run config: its objectives and train settings
    evaluation:
      tasks:
        - {name: sst2, data_dir: glue_data}                      # GLUE / XNLI by name
        - {name: tickets, data: tickets.jsonl, text: body, label: queue}   # a task file's keys
      finetune: {lrs: [2.0e-5, 5.0e-5], epochs: [3], seeds: 3}
      agreement: {texts: heldout.txt, max_texts: 1000}
      bench: {batch: [1, 32], seq: [128], dtype: [fp32]}
    launcher: {partition: gpu, gpus_per_job: 1, time_limit_min: 240, account: my-account}

`include:` and `--set` work as in run configs. Each cell (method x student) distils with
the study's teacher, data and train settings, the method's objectives (and train
overrides) and the student's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tadistill.config import (
    DataConfig,
    ObjectiveConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    apply_overrides,
    build,
    expand_shorthands,
    read_yaml,
    resolve_config_path,
)
from tadistill.errors import Problem
from tadistill.paths import resolve_paths


@dataclass
class StudentSpec(StudentConfig):
    """A student of the study: a run config's `student` section with a name."""

    name: str = ""


@dataclass
class MethodSpec:
    name: str = ""
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    config: str | None = None  # a run config whose objectives (and train settings) the method takes
    train: dict[str, Any] = field(default_factory=dict)  # train settings of this method


@dataclass
class FitHeadSpec:
    steps: int = 300
    learning_rate: float = 1e-3


@dataclass
class FinetuneGrid:
    lrs: list[float] = field(default_factory=lambda: [1e-5, 2e-5, 3e-5, 5e-5])
    epochs: list[int] = field(default_factory=lambda: [3])
    seeds: int = 3
    batch_size: int = 32
    max_seq_length: int = 128
    precision: str = "auto"


@dataclass
class PairsSpec:
    path: str = ""
    text: str = "sentence1"
    text_pair: str = "sentence2"
    score: str = "score"


@dataclass
class AgreementSpec:
    texts: str = ""  # held-out text, one a line
    max_texts: int = 1000
    max_seq_length: int = 128
    pairs: list[PairsSpec] = field(default_factory=list)


@dataclass
class BenchSpec:
    batch: list[int] = field(default_factory=lambda: [1, 32])
    seq: list[int] = field(default_factory=lambda: [128])
    dtype: list[str] = field(default_factory=lambda: ["fp32"])
    warmup: int = 3
    iters: int = 20


@dataclass
class EvaluationSpec:
    tasks: list[dict[str, Any]] = field(default_factory=list)  # GLUE/XNLI by name, or a task file's keys
    finetune: FinetuneGrid = field(default_factory=FinetuneGrid)
    agreement: AgreementSpec | None = None
    bench: BenchSpec | None = None
    baseline: bool = True  # evaluate the teacher on the tasks too


@dataclass
class LauncherSpec:
    """Where `--launcher slurm` runs each cell (submitit's Slurm executor)."""

    partition: str | None = None
    account: str | None = None
    gpus_per_job: int = 0  # >1: the cell's distillation runs under `accelerate launch`
    cpus_per_job: int | None = None
    mem_gb: int | None = None
    time_limit_min: int = 240
    max_parallel: int | None = None  # jobs of the study running at once
    slurm_options: dict[str, Any] = field(default_factory=dict)  # any other sbatch option


@dataclass
class StudyConfig:
    name: str = ""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fit_head: FitHeadSpec | None = None
    students: list[StudentSpec] = field(default_factory=list)
    methods: list[MethodSpec] = field(default_factory=list)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    launcher: LauncherSpec = field(default_factory=LauncherSpec)


STUDY_KEYS = ("students", "methods")


def is_study(path: str | Path) -> bool:
    """Whether a YAML file is a study (it lists students or methods) rather than a run config."""
    data = read_yaml(resolve_config_path(path))
    return any(key in data for key in STUDY_KEYS)


def read_study_config(path: str | Path, overrides: list[str] = ()) -> tuple[StudyConfig, list[Problem]]:
    """A study file with its overrides and every structural problem in it (as `read_run_config`)."""
    data = expand_shorthands(read_yaml(resolve_config_path(path)))
    problems = apply_overrides(data, list(overrides))
    data, unresolved = resolve_paths(data)
    problems += [Problem(key, value, message) for key, (value, message) in unresolved.items()]
    teacher = data.get("teacher")
    if not (isinstance(teacher, dict) and teacher.get("path")):
        problems.append(Problem("teacher.path", None, "set the teacher: a local model directory or hub id"))
    for key, message in (("students", "list at least one student, e.g. [{name: 6x384, layers: 6, hidden: 384}]"),
                         ("methods", "list at least one method, e.g. [{name: minilmv2, objectives: [{name: minilmv2}]}]")):
        if not data.get(key):
            problems.append(Problem(key, data.get(key), message))
    study = build(StudyConfig, data, "", problems)
    if not study.name:
        study.name = Path(path).stem
    return study, problems
