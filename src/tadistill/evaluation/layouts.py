"""Task data from the Hugging Face hub or from a local copy of the original distributions.

Every loader returns a `TaskData`: `datasets.Dataset`s with the columns `text_a`
(`text_b` for sentence pairs) and `label` (class id, or float score for STS-B).

Local layouts, detected from the files present:
- GLUE download (`glue_data/`): one folder per task (`CoLA/`, `SST-2/`, ...) holding
  `train.tsv` and `dev.tsv` (MNLI: `dev_matched.tsv`, `dev_mismatched.tsv`); DIR may be
  `glue_data/` or a task's folder. MRPC may also be the original `msr_paraphrase_train.txt`
  + `dev_ids.tsv`, split the way GLUE's download script splits it.
- XNLI: `XNLI-1.0/xnli.dev.tsv` and `xnli.test.tsv` (all languages in one file, column
  `language`), with English training data from MultiNLI (`multinli_1.0/multinli_1.0_train.txt`)
  or the GLUE download's `MNLI/train.tsv`.
All are tab-separated without quoting: a `"` in GLUE's files is text, not CSV quoting.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from tadistill.errors import DataError
from tadistill.evaluation.tasks import XNLI_LANGUAGES, Task

logger = logging.getLogger(__name__)

GLUE_HUB_ID = "nyu-mll/glue"
XNLI_HUB_ID = "facebook/xnli"
NO_GOLD_LABEL = "-"  # MultiNLI's mark for pairs whose annotators did not agree; never a class
XNLI_TRAIN_FILES = ("multinli_1.0/multinli_1.0_train.txt", "multinli_1.0_train.txt", "MNLI/train.tsv")
XNLI_EVAL_FILES = {
    "dev": ("XNLI-1.0/xnli.dev.tsv", "xnli.dev.tsv"),
    "test": ("XNLI-1.0/xnli.test.tsv", "xnli.test.tsv"),
}


@dataclass
class TaskData:
    train: Dataset
    evals: dict[str, Dataset]  # eval set name ("dev", "dev_matched", "test_fr", ...) -> examples


def load_task_data(task: Task, data_dir: str | Path | None = None) -> TaskData:
    """The task's train and eval sets: from `data_dir` when given, else from the hub."""
    if data_dir is None:
        return load_from_hub(task)
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"--data-dir {root} is not a directory")
    if task.suite == "xnli":
        return load_local_xnli(task, root)
    return load_local_glue(task, root)


# ---------------------------------------------------------------------------- local files


def read_tsv(path: Path, columns: Sequence[str | int], has_header: bool = True) -> list[list[str]]:
    """The given columns (header names, or positions) of a TSV file, one list per column.

    Rows with too few fields are skipped with a warning: GLUE's QQP train file has a few
    broken lines, which the reference GLUE readers skip too.
    """
    if not path.is_file():
        raise DataError(f"missing file {path}")
    with path.open(encoding="utf-8-sig", newline="") as file:  # -sig: MRPC's files start with a BOM
        rows = csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, []) if has_header else None
        positions = [_column_position(column, header, path) for column in columns]
        needed = max(positions) + 1
        values: list[list[str]] = [[] for _ in columns]
        skipped = 0
        for row in rows:
            if not row:
                continue
            if len(row) < needed:
                skipped += 1
                continue
            for column_values, position in zip(values, positions):
                column_values.append(row[position])
    if skipped:
        logger.warning("%s: skipped %d rows with fewer than %d fields", path, skipped, needed)
    if not values[0]:
        raise DataError(f"{path} has no data rows")
    return values


def _column_position(column: str | int, header: list[str] | None, path: Path) -> int:
    if header is None:
        return int(column)
    if column not in header:
        raise DataError(f"{path} has no column {column!r}; its header is {header}")
    return header.index(column)


def load_local_glue(task: Task, root: Path) -> TaskData:
    folder = _glue_task_folder(task, root)
    if task.name == "mrpc" and not (folder / "train.tsv").exists():
        return _load_original_mrpc(task, folder)
    return TaskData(
        train=_read_split(task, folder / "train.tsv"),
        evals={name: _read_split(task, folder / file) for name, file in task.eval_files},
    )


def _glue_task_folder(task: Task, root: Path) -> Path:
    """DIR/<Task>/ in the GLUE download layout, or DIR itself when it is that folder."""
    for folder in (root / task.title, root):
        if (folder / "train.tsv").is_file() or (folder / "msr_paraphrase_train.txt").is_file():
            return folder
    raise DataError(
        f"no {task.title} data in {root}: expected {root / task.title / 'train.tsv'} "
        f"(the GLUE download's layout, DIR = glue_data/) or {root / 'train.tsv'} (DIR = glue_data/{task.title}/)"
    )


def _read_split(task: Task, path: Path) -> Dataset:
    *texts, labels = read_tsv(path, [*task.text_columns, task.label_column], task.has_header)
    return _to_dataset(task, texts, labels, path)


def _load_original_mrpc(task: Task, folder: Path) -> TaskData:
    """MRPC from Microsoft's files, with GLUE's dev set: the pairs listed in dev_ids.tsv."""
    path = folder / "msr_paraphrase_train.txt"
    id1, id2, *columns = read_tsv(path, ["#1 ID", "#2 ID", *task.text_columns, task.label_column])
    dev_ids = set(zip(*read_tsv(folder / "dev_ids.tsv", [0, 1], has_header=False)))
    in_dev = [pair in dev_ids for pair in zip(id1, id2)]
    *train_texts, train_labels = _select(columns, [not dev for dev in in_dev])
    *dev_texts, dev_labels = _select(columns, in_dev)
    return TaskData(
        train=_to_dataset(task, train_texts, train_labels, path),
        evals={"dev": _to_dataset(task, dev_texts, dev_labels, path)},
    )


def load_local_xnli(task: Task, root: Path) -> TaskData:
    train_path = _first_present(root, XNLI_TRAIN_FILES, "English MultiNLI training data")
    *texts, labels = read_tsv(train_path, ["sentence1", "sentence2", "gold_label"])
    evals = {}
    for split, candidates in XNLI_EVAL_FILES.items():
        path = _first_present(root, candidates, f"XNLI {split} data")
        languages, *columns = read_tsv(path, ["language", "sentence1", "sentence2", "gold_label"])
        missing = sorted(set(XNLI_LANGUAGES) - set(languages))
        if missing:
            raise DataError(f"{path} has no rows for the languages {missing}; XNLI-1.0 has all 15")
        for language in XNLI_LANGUAGES:
            *eval_texts, eval_labels = _select(columns, [lang == language for lang in languages])
            evals[f"{split}_{language}"] = _to_dataset(task, eval_texts, eval_labels, path)
    return TaskData(train=_to_dataset(task, texts, labels, train_path), evals=evals)


def _first_present(root: Path, candidates: Sequence[str], what: str) -> Path:
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    raise DataError(f"no {what} in {root}: expected one of {', '.join(str(root / c) for c in candidates)}")


def _select(columns: Sequence[list[str]], keep: Sequence[bool]) -> list[list[str]]:
    """Each column's values at the rows where `keep` is true."""
    return [[value for value, kept in zip(column, keep) if kept] for column in columns]


def _to_dataset(task: Task, texts: list[list[str]], labels: list[str], path: Path) -> Dataset:
    """Text columns + encoded labels as a Dataset; MultiNLI's label-less pairs dropped."""
    if not task.is_regression and NO_GOLD_LABEL in labels:
        *texts, labels = _select([*texts, labels], [label != NO_GOLD_LABEL for label in labels])
    columns = dict(zip(("text_a", "text_b"), texts))
    columns["label"] = _encode_labels(task, labels, path)
    return Dataset.from_dict(columns)


def _encode_labels(task: Task, labels: list[str], path: Path) -> list[int] | list[float]:
    if task.is_regression:
        try:
            return [float(label) for label in labels]
        except ValueError as error:
            raise DataError(f"{path}: {task.title} scores must be numbers ({error})") from None
    ids = {label: i for i, label in enumerate(task.file_labels)}
    unknown = sorted(set(labels) - ids.keys())
    if unknown:
        raise DataError(
            f"{path}: unknown {task.title} labels {unknown[:5]} in column {task.label_column!r}; "
            f"expected {list(task.file_labels)}"
        )
    return [ids[label] for label in labels]


# ---------------------------------------------------------------------------- the hub


def load_from_hub(task: Task) -> TaskData:
    """`nyu-mll/glue` or `facebook/xnli` (English train, 15 languages' validation and test)."""
    if task.suite == "xnli":
        train = _hub_split(XNLI_HUB_ID, "en", "train")
        evals = {
            f"{name}_{language}": _hub_split(XNLI_HUB_ID, language, split)
            for name, split in (("dev", "validation"), ("test", "test"))
            for language in XNLI_LANGUAGES
        }
    else:
        train = _hub_split(GLUE_HUB_ID, task.name, "train")
        # the hub names GLUE's dev files "validation" ("validation_matched" for MNLI)
        evals = {
            name: _hub_split(GLUE_HUB_ID, task.name, name.replace("dev", "validation")) for name, _ in task.eval_files
        }
    rename = dict(zip(task.hub_text_columns, ("text_a", "text_b")))
    return TaskData(
        train=_standard_columns(train, rename),
        evals={name: _standard_columns(split, rename) for name, split in evals.items()},
    )


def _hub_split(dataset_id: str, config: str, split: str) -> Dataset:
    from datasets import load_dataset

    try:
        return load_dataset(dataset_id, config, split=split)
    except ConnectionError as error:  # what `datasets` raises offline or when the hub is unreachable
        raise DataError(
            f"cannot load {dataset_id} ({config}, {split}) from the Hugging Face hub: {error}. "
            "Pass --data-dir with a local copy of the data (see docs/finetune.md)"
        ) from None


def _standard_columns(split: Dataset, rename: dict[str, str]) -> Dataset:
    keep = [*rename, "label"]
    return split.remove_columns([c for c in split.column_names if c not in keep]).rename_columns(rename)
