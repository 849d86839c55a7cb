"""Corpus sources: local files, globs, saved datasets and hub datasets -> a dataset of documents.

Every reader returns a `datasets` dataset with a single string column "text", one
document per row, empty and whitespace-only documents dropped.

Formats (`format="auto"` picks one from the path):
- text: `.txt`/`.text` (optionally `.gz`). `documents="blank-line"`: documents are
  separated by one or more blank (or whitespace-only) lines, the lines of a document
  joined with "\\n"; `documents="line"`: every non-blank line is a document.
- jsonl: `.jsonl`/`.json`, one object per line, the document in `text_field`.
- parquet: `.parquet`, the document in column `text_field`.
- saved: a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
- hub: a hub dataset name (`owner/name`), optionally with `subset`; streamed by default.

Undecodable bytes in text files: `on_decode_error="skip"` drops each line that is not
valid UTF-8 and counts it (`Documents.skipped_lines`, also logged as a warning);
`on_decode_error="fail"` raises DataError naming the file and the line number.
The policy covers text files, the only format read line by line here; invalid UTF-8 in
the text field of a record (jsonl, parquet, saved) is a DataError naming the source.
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import datasets

from tadistill.config import SourceConfig
from tadistill.errors import DataError, Problem

logger = logging.getLogger(__name__)

FORMATS = ("auto", "text", "jsonl", "parquet", "saved", "hub")
DOCUMENT_MODES = ("blank-line", "line")
DECODE_POLICIES = ("skip", "fail")
SUFFIX_FORMATS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Documents:
    """The documents of one source, as a dataset with one column "text"."""

    source: str
    dataset: datasets.Dataset | datasets.IterableDataset
    skipped_lines: int = 0
    num_documents: int | None = None  # None for a hub stream whose size the hub does not report


def read_documents(
    path: str,
    format: str = "auto",
    text_field: str = "text",
    split: str = "train",
    subset: str | None = None,
    documents: str = "blank-line",
    streaming: bool | None = None,
    on_decode_error: str = "skip",
    cache_dir: str | None = None,
) -> Documents:
    """Read one source into documents (see the module docstring for formats and policies).

    `streaming=None` streams hub datasets and reads local ones into a map-style dataset.
    """
    _check_choice("documents", documents, DOCUMENT_MODES)
    _check_choice("on_decode_error", on_decode_error, DECODE_POLICIES)
    fmt = resolve_format(path, format)
    if fmt == "hub" and streaming is not False:
        return _hub_stream(path, text_field, split, subset, cache_dir)
    if fmt == "hub":
        dataset = _load_hub(path, subset, split, False, cache_dir)
    elif fmt == "saved":
        dataset = _saved_dataset(path, split)
    elif fmt == "text":
        dataset = _text_dataset(path, expand_files(path), documents, on_decode_error, cache_dir)
    else:
        dataset = _load_builder(path, "json" if fmt == "jsonl" else fmt, expand_files(path), cache_dir)
    skipped = dataset.data.column("text").null_count if fmt == "text" else 0
    if skipped:
        logger.warning("%s: skipped %d line(s) that are not valid UTF-8 (on_decode_error=skip)", path, skipped)
    try:
        dataset = _keep_documents(_text_column(dataset, text_field, path))
    except UnicodeDecodeError as error:  # Arrow's JSON reader lets invalid UTF-8 through
        raise DataError(
            f"source {path!r}: field {text_field!r} holds bytes that are not valid UTF-8 ({error.reason}); "
            "fix the records (on_decode_error applies to text files)"
        ) from None
    if len(dataset) == 0:
        detail = f" ({skipped} undecodable line(s) skipped)" if skipped else ""
        raise DataError(f"source {path!r}: no usable documents{detail}")
    return Documents(path, dataset.to_iterable_dataset() if streaming else dataset, skipped, len(dataset))


def resolve_format(path: str, format: str = "auto") -> str:
    """The concrete format of a source; DataError when `auto` cannot tell or the path is missing."""
    _check_choice("format", format, FORMATS)
    if format != "auto":
        return format
    if glob.has_magic(path):
        return _files_format(path, expand_files(path))
    local = Path(path)
    if local.is_dir():
        if _is_saved_dataset(local):
            return "saved"
        raise DataError(
            f"source {path!r} is a directory but not a save_to_disk dataset; "
            f"to read the files in it use a glob such as '{path.rstrip('/')}/*.txt'"
        )
    if local.is_file():
        return _files_format(path, [path])
    if HUB_NAME.match(path) and _suffix(path) not in SUFFIX_FORMATS:
        return "hub"
    raise DataError(f"source {path!r}: no such file or directory")


def expand_files(path: str) -> list[str]:
    """The files a path or glob names, sorted; DataError when there are none."""
    if glob.has_magic(path):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise DataError(f"source {path!r}: the glob matches no files")
        return files
    if not os.path.isfile(path):
        raise DataError(f"source {path!r}: no such file")
    return [path]


def source_problems(source: SourceConfig, key: str) -> list[Problem]:
    """Cheap checks of one source for `tadistill validate`: path, format, text field, documents mode.

    Reads at most the first line of a jsonl file and the schema of a parquet file or saved
    dataset; hub names are not checked (that needs the network). `key` prefixes the
    problems' keys, e.g. "data.sources.0". The weight is the mixture's to check.
    """
    problems = []
    if source.documents not in DOCUMENT_MODES:
        problems.append(Problem(f"{key}.documents", source.documents, f"must be one of {', '.join(DOCUMENT_MODES)}"))
    try:
        fmt = resolve_format(source.path, source.format)
        if fmt in ("text", "jsonl", "parquet"):
            columns = _first_columns(expand_files(source.path)[0], fmt)
        elif fmt == "saved":
            columns = _saved_dataset(source.path, None).column_names
        else:
            columns = None
    except DataError as error:
        problems.append(Problem(f"{key}.path", source.path, str(error)))
        return problems
    if columns is not None and source.text_field not in columns:
        problems.append(
            Problem(f"{key}.text_field", source.text_field, f"not a field of {source.path!r}; fields: {', '.join(columns)}")
        )
    return problems


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DataError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _suffix(path: str) -> str:
    """The suffix that names the format: '.txt' for both 'a.txt' and 'a.txt.gz'."""
    suffixes = Path(path).suffixes
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1].lower() if suffixes else ""


def _files_format(path: str, files: list[str]) -> str:
    formats = {SUFFIX_FORMATS.get(_suffix(f)) for f in files}
    if len(formats) > 1:
        raise DataError(f"source {path!r} mixes file types; use one glob per format")
    fmt = formats.pop()
    if fmt is None:
        known = ", ".join(SUFFIX_FORMATS)
        raise DataError(f"source {path!r}: cannot tell the format from the suffix (known: {known}); set format")
    return fmt


def _is_saved_dataset(directory: Path) -> bool:
    return (directory / "state.json").is_file() or (directory / "dataset_dict.json").is_file()


def _text_dataset(
    path: str, files: list[str], documents: str, on_decode_error: str, cache_dir: str | None
) -> datasets.Dataset:
    # The fingerprint names the cache entry: the same files, unchanged, are read once.
    stamps = [(os.path.abspath(f), os.path.getsize(f), os.path.getmtime(f)) for f in files]
    fingerprint = datasets.fingerprint.Hasher.hash(["tadistill-text-v1", stamps, documents, on_decode_error])
    try:
        return datasets.Dataset.from_generator(
            _text_rows,
            features=datasets.Features({"text": datasets.Value("string")}),
            gen_kwargs={"files": files, "documents": documents, "on_decode_error": on_decode_error},
            cache_dir=cache_dir,
            fingerprint=fingerprint,
        )
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, DataError):
            raise error.__cause__ from None
        raise
    except ValueError:  # datasets refuses a generator that yields no row at all
        raise DataError(f"source {path!r}: no usable documents (only blank lines)") from None


def _text_rows(files: list[str], documents: str, on_decode_error: str):
    """One row per document; a row with text None for each undecodable line skipped (counted later)."""
    for file in files:
        opener = gzip.open if file.endswith(".gz") else open
        paragraph: list[str] = []
        with opener(file, "rb") as stream:
            for line_number, raw in enumerate(stream, start=1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as error:
                    if on_decode_error == "fail":
                        raise DataError(
                            f"{file}:{line_number}: not valid UTF-8 ({error.reason} at byte {error.start} of the "
                            "line); fix the file or set on_decode_error: skip"
                        ) from None
                    yield {"text": None}
                    continue
                if documents == "line":
                    yield {"text": line}
                elif line.strip():
                    paragraph.append(line)
                elif paragraph:
                    yield {"text": "\n".join(paragraph)}
                    paragraph = []
        if paragraph:
            yield {"text": "\n".join(paragraph)}


def _load_builder(path: str, builder: str, files: list[str], cache_dir: str | None) -> datasets.Dataset:
    try:
        return datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir)
    except (datasets.exceptions.DatasetGenerationError, OSError, ValueError) as error:
        cause = error.__cause__ or error
        raise DataError(f"source {path!r}: cannot read it as {builder}: {_first_line(cause)}") from None


def _saved_dataset(path: str, split: str | None) -> datasets.Dataset:
    try:
        saved = datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError) as error:
        raise DataError(f"source {path!r}: not a save_to_disk dataset: {_first_line(error)}") from None
    if isinstance(saved, datasets.DatasetDict):
        if split is None:  # only the columns are wanted
            return next(iter(saved.values()))
        if split not in saved:
            raise DataError(f"source {path!r} has no split {split!r}; splits: {', '.join(saved)}")
        return saved[split]
    return saved


def _load_hub(name: str, subset: str | None, split: str, streaming: bool, cache_dir: str | None):
    try:
        return datasets.load_dataset(name, subset, split=split, streaming=streaming, cache_dir=cache_dir)
    except (OSError, ValueError) as error:  # offline, unknown name, unknown subset or split
        raise DataError(
            f"source {name!r}: no local file of that name, and the hub dataset is not found or the hub is "
            f"unreachable: {_first_line(error)}"
        ) from None


def _hub_stream(name: str, text_field: str, split: str, subset: str | None, cache_dir: str | None) -> Documents:
    stream = _keep_documents(_text_column(_load_hub(name, subset, split, True, cache_dir), text_field, name))
    split_info = (stream.info.splits or {}).get(split)  # the size, when the hub reports it
    return Documents(name, stream, num_documents=split_info.num_examples if split_info else None)


def _text_column(dataset, text_field: str, source: str):
    columns = dataset.column_names
    if columns is not None and text_field not in columns:
        raise DataError(f"source {source!r} has no field text_field={text_field!r}; fields: {', '.join(columns)}")
    feature = dataset.features[text_field] if dataset.features else None
    if feature is not None and getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise DataError(f"source {source!r}: field {text_field!r} holds {feature}, not text")
    dataset = dataset.select_columns([text_field])
    return dataset if text_field == "text" else dataset.rename_column(text_field, "text")


def _keep_documents(dataset):
    """Drop missing, empty and whitespace-only documents."""
    return dataset.filter(_has_text, batched=True)


def _has_text(batch: dict) -> list[bool]:
    return [bool(text) and not text.isspace() for text in batch["text"]]


def _first_columns(file: str, fmt: str) -> list[str] | None:
    """The fields of a file's first record, read cheaply; None when the format has no fields."""
    if fmt == "text":
        return None
    if fmt == "parquet":
        import pyarrow.parquet

        return pyarrow.parquet.read_schema(file).names
    opener = gzip.open if file.endswith(".gz") else open
    with opener(file, "rt", encoding="utf-8", errors="replace") as stream:
        first = stream.readline()
    try:
        record = json.loads(first)
    except json.JSONDecodeError as error:
        raise DataError(f"{file}:1: not a JSON object ({error.msg})") from None
    if not isinstance(record, dict):
        raise DataError(f"{file}:1: not a JSON object")
    return list(record)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
