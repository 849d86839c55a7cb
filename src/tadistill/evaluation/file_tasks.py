"""Downstream tasks defined by the user's own files: classification or regression on one
text or a pair of texts, scored like the GLUE tasks.

A task file (YAML; also an entry of a study's `evaluation.tasks`)::

    name: support-tickets
    train: data/train.csv          # train / dev (/ test) files ...
    dev: data/dev.csv
    test: data/test.csv
    # ... or one file, split with a seed (optionally by a group column, so that related
    # rows never straddle the split):
    # data: data/all.jsonl
    # split: {dev: 0.1, test: 0.1, seed: 0, group: customer_id}
    text: body                     # columns
    text_pair: subject             # optional second text
    label: queue                   # class names or ids, or a float score (kind: regression)
    kind: auto                     # auto | classification | regression
    labels: [billing, tech, other] # optional: the classes in id order (default: sorted)

Formats, from the suffix unless `format` says: CSV (`.csv`), TSV (`.tsv`), JSON lines
(`.jsonl`/`.json`), parquet, a `save_to_disk` dataset (a directory; a DatasetDict's
train/validation|dev/test splits are taken as such), or `folders`: a directory of class
folders holding one text file per example (the layout of the BBC News corpus).

`kind: auto` is classification unless every train label is a number and one of them is
not an integer. Metrics: accuracy, macro-F1 and Matthews correlation (the score is the
accuracy); Pearson and Spearman for scores (the score is their mean). Learning rates are
picked on dev; the reported score is test's when there is a test set, else dev's.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tadistill.config import apply_overrides, build, read_yaml
from tadistill.errors import ConfigError, DataError, Problem
from tadistill.evaluation.layouts import TaskData
from tadistill.evaluation.tasks import Task
from tadistill.registry import did_you_mean

FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet", "saved", "folders")
KINDS = ("auto", "classification", "regression")
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
SPLITS = ("train", "dev", "test")


@dataclass
class SplitConfig:
    dev: float = 0.1  # shares of the rows of `data`
    test: float = 0.1
    seed: int = 0
    group: str | None = None  # a column whose rows stay on one side of the split


@dataclass
class FileTaskConfig:
    name: str = ""
    format: str = "auto"
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    data: str | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    text: str = "text"
    text_pair: str | None = None
    label: str = "label"
    kind: str = "auto"
    labels: list[str] | None = None


@dataclass
class Rows:
    """One split as read: the texts and raw labels, and where each row came from (for errors)."""

    path: str
    text_a: list[str]
    text_b: list[str] | None
    labels: list
    where: list[str]  # "row 12" / "line 12" / the file name of a folders example
    groups: list | None = None


def is_task_file(value: str) -> bool:
    """Whether a `--task` value names a task file rather than a GLUE/XNLI task."""
    return Path(value).suffix.lower() in (".yaml", ".yml")


def read_file_task(path: str | Path, overrides: list[str] = ()) -> FileTaskConfig:
    """A task file (YAML) with `--set`-style overrides; ConfigError with every problem."""
    from tadistill.paths import resolve_paths

    data = read_yaml(path)
    problems = apply_overrides(data, list(overrides))
    data, unresolved = resolve_paths(data)
    problems += [Problem(key, value, message) for key, (value, message) in unresolved.items()]
    task = build(FileTaskConfig, data, "", problems)
    if not task.name:
        task.name = Path(path).stem
    problems += file_task_problems(task, "")
    if problems:
        raise ConfigError(problems, source=str(path))
    return task


def file_task_problems(task: FileTaskConfig, key: str) -> list[Problem]:
    """What is wrong with a file task without reading its rows: files, format, columns, split."""
    prefix = f"{key}." if key else ""
    problems = []
    if task.format not in FORMATS:
        problems.append(Problem(f"{prefix}format", task.format, f"use one of {', '.join(FORMATS)}.{did_you_mean(task.format, FORMATS)}"))
    if task.kind not in KINDS:
        problems.append(Problem(f"{prefix}kind", task.kind, f"use one of {', '.join(KINDS)}.{did_you_mean(task.kind, KINDS)}"))
    given = {name: getattr(task, name) for name in SPLITS if getattr(task, name)}
    if task.data and given:
        problems.append(Problem(f"{prefix}data", task.data, "give either `data` (one file, split with `split`) or train/dev/test files, not both"))
    elif not task.data and not ("train" in given and "dev" in given):
        problems.append(Problem(f"{prefix}train", task.train, "give train and dev files (and optionally test), or one `data` file to split"))
    if task.data and not (0 < task.split.dev < 1 and 0 <= task.split.test < 1 and task.split.dev + task.split.test < 1):
        problems.append(Problem(f"{prefix}split", task.split, "dev and test are shares of the rows: dev in (0, 1), test in [0, 1), together < 1"))
    for name, path in ({"data": task.data} if task.data else given).items():
        if not Path(path).exists():
            problems.append(Problem(f"{prefix}{name}", path, "no such file or directory"))
            continue
        fmt = _format(path, task.format)
        if fmt is None:
            problems.append(Problem(f"{prefix}format", task.format, f"cannot tell the format of {path} from its name; set format"))
            continue
        columns = _columns(path, fmt)
        wanted = [("text", task.text), ("text_pair", task.text_pair), ("label", task.label)]
        if task.data and task.split.group:
            wanted.append(("split.group", task.split.group))
        for option, column in wanted:
            if column is not None and columns is not None and column not in columns:
                problems.append(Problem(f"{prefix}{option}", column, f"{path} has no column {column!r}; columns: {', '.join(columns)}"))
    return problems


def load_file_task(task: FileTaskConfig) -> tuple[Task, TaskData]:
    """The task (labels, metric, which eval set selects and which is reported) and its data,
    with labels encoded: class ids in `labels` order, or float scores."""
    from datasets import Dataset

    if task.data:
        splits = _split(_read(task.data, task), task.split, task)
    else:
        splits = {name: _read(getattr(task, name), task) for name in SPLITS if getattr(task, name)}
    for name, rows in splits.items():
        if not rows.labels:
            raise DataError(f"task {task.name!r}: the {name} split of {rows.path} is empty")
    kind = _kind(task, splits["train"])
    names = _class_names(task, splits["train"]) if kind == "classification" else ()
    columns = {
        name: {
            "text_a": rows.text_a,
            **({"text_b": rows.text_b} if rows.text_b is not None else {}),
            "label": _encode(rows, names, task, name) if names else _scores(rows, task),
        }
        for name, rows in splits.items()
    }
    evals = [name for name in ("dev", "test") if name in splits]
    definition = Task(
        name=task.name,
        title=task.name,
        suite="file",
        metric="classification" if names else "pearson_spearman",
        labels=tuple(names),
        hub_text_columns=(),
        select_on="dev",
        report_on="test" if "test" in splits else "dev",
        shown=tuple(evals),
    )
    data = TaskData(
        train=Dataset.from_dict(columns["train"]),
        evals={name: Dataset.from_dict(columns[name]) for name in evals},
    )
    return definition, data


def read_scored_pairs(path: str, text: str, text_pair: str, score: str, format: str = "auto") -> tuple[list, list, list]:
    """(first texts, second texts, float scores) of a file of scored text pairs (STS-style),
    in any task file format; errors name the file, the row and the column."""
    config = FileTaskConfig(name=Path(path).stem, format=format, text=text, text_pair=text_pair, label=score)
    rows = _read(path, config)
    if not rows.labels:
        raise DataError(f"{path}: no scored pairs")
    return rows.text_a, rows.text_b, _scores(rows, config)


# ---------------------------------------------------------------- reading


def _format(path: str, fmt: str) -> str | None:
    if fmt != "auto":
        return fmt
    local = Path(path)
    if local.is_dir():
        return "saved" if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file() else "folders"
    return SUFFIX_FORMATS.get(local.suffix.lower())


def _columns(path: str, fmt: str) -> list[str] | None:
    """The columns of a file, read cheaply; None for folders (text and label are implied)."""
    if fmt in ("csv", "tsv"):
        with open(path, encoding="utf-8-sig", newline="") as file:
            return next(csv.reader(file, delimiter="," if fmt == "csv" else "\t"), [])
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as file:
            first = file.readline()
        try:
            record = json.loads(first)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: line 1 is not a JSON object ({error.msg})") from None
        return list(record) if isinstance(record, dict) else []
    if fmt == "parquet":
        import pyarrow.parquet

        return pyarrow.parquet.read_schema(path).names
    if fmt == "saved":
        import datasets

        saved = datasets.load_from_disk(path)
        first = next(iter(saved.values())) if isinstance(saved, datasets.DatasetDict) else saved
        return first.column_names
    return None


def _read(path: str, task: FileTaskConfig) -> Rows:
    fmt = _format(path, task.format)
    if fmt == "folders":
        return _read_folders(path)
    if fmt in ("csv", "tsv"):
        records, where = _read_delimited(path, "," if fmt == "csv" else "\t")
    elif fmt == "jsonl":
        records, where = _read_jsonl(path)
    else:
        records, where = _read_table(path, fmt)
    needed = [task.text, task.label] + ([task.text_pair] if task.text_pair else [])
    group = task.split.group if task.data else None
    absent = [column for column in needed + ([group] if group else []) if records and column not in records[0]]
    if absent:
        raise DataError(f"{path} has no column {absent[0]!r}; columns: {', '.join(records[0])}")
    for record, at in zip(records, where):
        missing = [column for column in needed + ([group] if group else []) if record.get(column) is None]
        if missing:
            raise DataError(f"{path} {at}: no value in column {missing[0]!r}")
        for column in [task.text] + ([task.text_pair] if task.text_pair else []):
            if not isinstance(record[column], str):
                raise DataError(f"{path} {at}: column {column!r} holds {record[column]!r}, not text")
    return Rows(
        path=path,
        text_a=[record[task.text] for record in records],
        text_b=[record[task.text_pair] for record in records] if task.text_pair else None,
        labels=[record[task.label] for record in records],
        where=where,
        groups=[record[group] for record in records] if group else None,
    )


def _read_delimited(path: str, delimiter: str) -> tuple[list[dict], list[str]]:
    records, where = [], []
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        try:
            for record in reader:
                if None in record:  # more fields than the header names
                    raise DataError(f"{path} row {reader.line_num}: {len(reader.fieldnames) + len(record[None])} fields, "
                                    f"the header has {len(reader.fieldnames)}")
                records.append(record)
                where.append(f"row {reader.line_num}")
        except csv.Error as error:
            raise DataError(f"{path} row {reader.line_num}: not valid {'CSV' if delimiter == ',' else 'TSV'} ({error})") from None
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    return records, where


def _read_jsonl(path: str) -> tuple[list[dict], list[str]]:
    records, where = [], []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path} line {number}: not a JSON object ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path} line {number}: not a JSON object")
            records.append(record)
            where.append(f"line {number}")
    return records, where


def _read_table(path: str, fmt: str) -> tuple[list[dict], list[str]]:
    if fmt == "parquet":
        import pyarrow.parquet

        records = pyarrow.parquet.read_table(path).to_pylist()
    else:
        import datasets

        saved = datasets.load_from_disk(path)
        if isinstance(saved, datasets.DatasetDict):
            raise DataError(f"{path} is a DatasetDict: name one of its splits' directories, e.g. {path}/train")
        records = saved.to_list()
    return records, [f"row {i + 1}" for i in range(len(records))]


def _read_folders(path: str) -> Rows:
    from sklearn.datasets import load_files

    loaded = load_files(path, encoding="utf-8", decode_error="replace", shuffle=False)
    if not len(loaded.data):
        raise DataError(f"{path}: no class folders with text files in them")
    return Rows(
        path=path,
        text_a=[" ".join(text.split()) for text in loaded.data],
        text_b=None,
        labels=[loaded.target_names[target] for target in loaded.target],
        where=[str(Path(name).relative_to(path)) for name in loaded.filenames],
    )


# ---------------------------------------------------------------- splitting and labels


def _split(rows: Rows, split: SplitConfig, task: FileTaskConfig) -> dict[str, Rows]:
    """train / dev (/ test) of one file, seeded: by groups when a group column is given,
    stratified by class for classification when every class can be, else at random."""
    import numpy as np
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    indices = np.arange(len(rows.labels))
    held_share = split.dev + split.test

    def cut(idx, share, seed):
        if rows.groups is not None:
            groups = [rows.groups[i] for i in idx]
            first, second = next(GroupShuffleSplit(n_splits=1, test_size=share, random_state=seed).split(idx, groups=groups))
            return idx[first], idx[second]
        labels = [str(rows.labels[i]) for i in idx]
        counts = {label: labels.count(label) for label in set(labels)}
        stratify = labels if _kind(task, rows) == "classification" and min(counts.values()) >= 3 else None
        return train_test_split(idx, test_size=share, random_state=seed, stratify=stratify)

    train, held = cut(indices, held_share, split.seed)
    parts = {"train": train}
    if split.test:
        parts["dev"], parts["test"] = cut(held, split.test / held_share, split.seed + 1)
    else:
        parts["dev"] = held
    return {name: _subset(rows, sorted(idx)) for name, idx in parts.items()}


def _subset(rows: Rows, idx) -> Rows:
    pick = lambda values: None if values is None else [values[i] for i in idx]  # noqa: E731
    return Rows(rows.path, pick(rows.text_a), pick(rows.text_b), pick(rows.labels), pick(rows.where), pick(rows.groups))


def _kind(task: FileTaskConfig, train: Rows) -> str:
    if task.kind != "auto":
        return task.kind
    numbers = [_number(label) for label in train.labels]
    if all(n is not None for n in numbers) and any(not float(n).is_integer() for n in numbers):
        return "regression"
    return "classification"


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _class_names(task: FileTaskConfig, train: Rows) -> list[str]:
    if task.labels:
        return [str(label) for label in task.labels]
    seen = {str(label) for label in train.labels}
    numeric = all(_number(label) is not None for label in seen)
    return sorted(seen, key=(lambda label: float(label)) if numeric else None)


def _encode(rows: Rows, names, task: FileTaskConfig, split: str) -> list[int]:
    ids = {name: i for i, name in enumerate(names)}
    encoded = []
    for label, at in zip(rows.labels, rows.where):
        if str(label) not in ids:
            known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise DataError(
                f"{rows.path} {at}: label {label!r} in column {task.label!r} is not a class of task {task.name!r} "
                f"(the {'listed labels' if task.labels else 'labels of the train split'}: {known})"
            )
        encoded.append(ids[str(label)])
    return encoded


def _scores(rows: Rows, task: FileTaskConfig) -> list[float]:
    scores = []
    for label, at in zip(rows.labels, rows.where):
        number = _number(label)
        if number is None:
            raise DataError(f"{rows.path} {at}: column {task.label!r} holds {label!r}, not a number (kind: regression)")
        scores.append(number)
    return scores
