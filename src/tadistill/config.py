"""Run configuration: typed dataclasses, YAML with `include`, `key=value` overrides.

`read_run_config` returns the config with every *structural* problem (unknown keys with
"did you mean", wrong types, required keys left out, bad override paths, `package:` / `docstrings:` paths that do not
resolve, see `tadistill.paths`); a value of the
wrong type is replaced by the key's default, so the checks of the values (the owners'
`*_problems` functions, gathered by `tadistill.validation`) always run on well-typed
input and nothing is reported twice. `teacher: PATH` is short for `teacher: {path: PATH}`.
Shipped configs are package data (`tadistill/configs/`); `resolve_config_path` finds
them by their path in the source tree (`configs/paper/en/od-6x384.yaml`) from anywhere.

YAML shape::

    include: ../defaults.yaml        # optional; a path or a list, relative to this file
    teacher: {path: bert-base-uncased}
    student: {layers: 6, hidden: 384, heads: 12, init: random}
    data:
      sources: [{path: corpus/*.txt}]
      max_seq_length: 128
    objectives:
      - {name: minilmv2, weight: 1.0, relation_heads: 48}   # keys besides name/weight are options
    train: {batch_size: 32, max_steps: 1000, learning_rate: 6.0e-4}
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from tadistill.errors import ConfigError, Problem
from tadistill.paths import resolve_paths
from tadistill.registry import did_you_mean

# what a run cannot do without; checked on the YAML (present or not), never on the values
REQUIRED = {
    "teacher.path": "set the teacher: a local model directory or hub id",
    "data.sources": "list at least one corpus source, e.g. [{path: corpus.txt}]",
    "objectives": "list at least one objective, e.g. [{name: minilmv2}]",
}


@dataclass
class TeacherConfig:
    path: str = ""  # local model directory or hub id
    revision: str | None = None
    trust_remote_code: bool = False


@dataclass
class StudentConfig:
    layers: int | None = None  # None: the teacher's value
    hidden: int | None = None
    heads: int | None = None
    intermediate: int | None = None  # None: 4 x hidden when hidden changes, else the teacher's
    init: str = "random"  # random | teacher-layers | teacher-slice
    init_layers: list[int] | None = None  # teacher blocks (1-based) to copy, one per student layer
    init_mapping: str = "uniform"  # layer_map strategy choosing them when init_layers is unset
    dropout: float | None = None  # hidden and attention dropout while distilling; None: the teacher's


@dataclass
class SourceConfig:
    path: str = ""  # file, glob, save_to_disk directory, or hub dataset name
    format: str = "auto"  # auto | text | jsonl | parquet | saved | hub
    text_field: str = "text"
    split: str = "train"
    subset: str | None = None  # hub dataset config name
    weight: float = 1.0
    language: str | None = None
    documents: str = "blank-line"  # text files: blank-line | line
    streaming: bool | None = None  # None: True for hub datasets, False otherwise


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    max_seq_length: int = 128
    sampling_alpha: float | None = None  # multilingual p_i ∝ n_i^alpha over languages
    mlm_probability: float = 0.15  # used only when an objective needs MLM masking
    mlm_smoothing: float | None = None  # mask tokens with p ∝ frequency^-smoothing (DistilBERT: 0.7)
    on_decode_error: str = "skip"  # skip | fail
    packing: bool = True  # documents packed into full blocks; false: each document in blocks of its own
    group_by_length: bool = False  # batch blocks of similar length together (with packing: false)


@dataclass
class ObjectiveConfig:
    name: str = ""
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)  # written flat in YAML


@dataclass
class TrainConfig:
    batch_size: int = 32  # per process and micro-step
    gradient_accumulation_steps: int = 1
    max_steps: int | None = None  # optimizer steps; with max_tokens, whichever comes first
    max_tokens: int | None = None
    learning_rate: float = 6e-4
    warmup_steps: int = 0
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-6
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16 (tadistill.precision)
    seed: int = 42
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 3
    num_workers: int = 0
    record_blocks: bool = False  # audit: each process lists a digest of every block it trains on
    log_with: str = "tensorboard"  # tensorboard | wandb | mlflow | none: accelerate's tracker for the metrics
    compile: bool = False  # torch.compile the untapped parts of teacher and student (tadistill.compiling)
    attention: str = "auto"  # auto | sdpa | eager | matmul: the models' attention kernel (tadistill.attention)


@dataclass
class RunConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)



# ---------------------------------------------------------------- YAML + includes


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a config file, resolving `include:` (a path or list, relative to the file).

    Included files are merged first, in order; the including file wins. Mappings merge
    key by key, lists and scalars are replaced whole.
    """
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError([Problem("include", str(path), "include cycle: this file includes itself")])
    if not path.is_file():
        raise ConfigError([Problem("config", str(path), "no such file")])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError([Problem("config", str(path), f"not valid YAML: {error}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem("config", str(path), "the top level must be a mapping of sections")])
    includes = data.pop("include", [])
    merged: dict = {}
    for include in [includes] if isinstance(includes, str) else includes:
        merged = deep_merge(merged, read_yaml(path.parent / include, _seen + (path,)))
    return deep_merge(merged, data)


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---------------------------------------------------------------- overrides


def apply_overrides(data: dict, overrides: list[str]) -> list[Problem]:
    """Apply `a.b.0.c=value` overrides in place; values are parsed as YAML (typed)."""
    problems = []
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            problems.append(Problem("--set", override, "expected KEY=VALUE, e.g. train.max_steps=100"))
            continue
        value = yaml.safe_load(raw) if raw.strip() else None
        problem = _set_path(data, key.strip().split("."), value, key.strip())
        if problem:
            problems.append(problem)
    return problems


def _set_path(node: Any, parts: list[str], value: Any, full_key: str) -> Problem | None:
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(parts[:depth])
                return Problem(full_key, value, f"{where!r} is a list of {len(node)}: use an index 0..{len(node) - 1}")
            if last:
                node[int(part)] = value
                return None
            node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
                return None
            if part not in node and parts[depth + 1].isdigit():
                return Problem(full_key, value, f"{'.'.join(parts[: depth + 1])!r} is not set, so it has no item {parts[depth + 1]}")
            node = node.setdefault(part, {})
        else:
            return Problem(full_key, value, f"{'.'.join(parts[:depth])!r} is not a section")
    return None


# ---------------------------------------------------------------- dict -> dataclasses


def build(cls: type, data: Any, key: str, problems: list[Problem]) -> Any:
    """Convert plain YAML data to dataclass `cls`, appending every problem found."""
    if not isinstance(data, dict):
        problems.append(Problem(key or "config", data, f"expected a mapping for {cls.__name__}"))
        return cls()
    if cls is ObjectiveConfig:  # flat in YAML: everything except name/weight is an option
        data = {
            "name": data.get("name", ""),
            "weight": data.get("weight", 1.0),
            "options": {k: v for k, v in data.items() if k not in ("name", "weight")},
        }
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for name, value in data.items():
        child = f"{key}.{name}" if key else str(name)
        if name not in names:
            problems.append(Problem(child, value, f"unknown key.{did_you_mean(str(name), names)} Known: {', '.join(names)}"))
            continue
        converted = _convert(hints[name], value, child, problems)
        if converted is not _WRONG_TYPE:  # reported; the key keeps its default
            kwargs[name] = converted
    return cls(**kwargs)


_WRONG_TYPE = object()


def _convert(tp: Any, value: Any, key: str, problems: list[Problem]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key, problems)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, problems)
    if origin is list:
        if not isinstance(value, list):
            problems.append(Problem(key, value, "expected a list"))
            return _WRONG_TYPE
        items = [_convert(args[0], v, f"{key}.{i}", problems) for i, v in enumerate(value)]
        return [item for item in items if item is not _WRONG_TYPE]
    if origin is dict or tp is Any:
        if origin is dict and not isinstance(value, dict):
            problems.append(Problem(key, value, "expected a mapping"))
            return _WRONG_TYPE
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads 6e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        problems.append(Problem(key, value, f"expected {tp.__name__}, got {type(value).__name__}"))
        return _WRONG_TYPE
    return value


def read_run_config(path: str | Path, overrides: list[str] = ()) -> tuple[RunConfig, list[Problem]]:
    """A run config file with its overrides, and every structural problem found in it.

    The checks of the values need the teacher and the file system: `tadistill.validation`.
    """
    data = expand_shorthands(read_yaml(resolve_config_path(path)))
    problems = apply_overrides(data, list(overrides))
    data, unresolved = resolve_paths(data)
    problems += [Problem(key, value, message) for key, (value, message) in unresolved.items()]
    problems += required_problems(data)
    return build(RunConfig, data, "", problems), problems


def expand_shorthands(data: dict) -> dict:
    """`teacher: PATH` is short for `teacher: {path: PATH}` (before overrides reach teacher.*)."""
    if isinstance(data.get("teacher"), str):
        data["teacher"] = {"path": data["teacher"]}
    return data


def required_problems(data: dict) -> list[Problem]:
    """The required keys missing from (or empty in) the YAML, and a missing training budget."""
    teacher = data.get("teacher")
    given = {
        "teacher.path": teacher.get("path") if isinstance(teacher, dict) else None,
        "data.sources": data["data"].get("sources") if isinstance(data.get("data"), dict) else None,
        "objectives": data.get("objectives"),
    }
    problems = [Problem(key, given[key], message) for key, message in REQUIRED.items() if given[key] in (None, "", [])]
    train = data.get("train")
    if not isinstance(train, dict) or (train.get("max_steps") is None and train.get("max_tokens") is None):
        problems.append(Problem("train.max_steps", None, "set train.max_steps and/or train.max_tokens (the budget)"))
    return problems


# ---------------------------------------------------------------- shipped configs


def shipped_configs() -> Path:
    """The directory of the configs shipped with tadistill (package data)."""
    return Path(str(importlib.resources.files("tadistill") / "configs"))


def resolve_config_path(path: str | Path) -> Path:
    """`path` when it exists; else the shipped config of that name (`configs/tiny/hs.yaml`
    or `tiny/hs.yaml`), so the README's commands run from any directory."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    relative = given.parts[1:] if given.parts[:1] == ("configs",) else given.parts
    shipped = shipped_configs().joinpath(*relative) if relative else None
    if shipped is not None and shipped.is_file():
        return shipped
    names = sorted(str(p.relative_to(shipped_configs().parent)) for p in shipped_configs().rglob("*.yaml"))
    hint = did_you_mean(str(given), names)
    raise ConfigError([Problem("config", str(path), f"no such file, and no shipped config of that name.{hint}")])


def to_dict(config: RunConfig) -> dict:
    """Plain data for writing the resolved config (objective options written flat again)."""
    data = dataclasses.asdict(config)
    data["objectives"] = [{"name": o["name"], "weight": o["weight"], **o["options"]} for o in data["objectives"]]
    return data


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
