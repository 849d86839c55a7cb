"""Reading corpus sources: every format, globs, saved datasets, hub errors, decode policy, checks."""

from __future__ import annotations

import gzip
import json
import logging

import datasets
import pyarrow
import pyarrow.parquet
import pytest

from tadistill.config import SourceConfig
from tadistill.data import read_documents, resolve_format, source_problems
from tadistill.errors import DataError


def texts(docs) -> list[str]:
    return list(docs.dataset["text"])


@pytest.fixture
def read(tmp_path):
    """read_documents with a per-test datasets cache."""
    return lambda path, **options: read_documents(str(path), cache_dir=str(tmp_path / "cache"), **options)


def test_text_blank_line_documents(tmp_path, read):
    path = tmp_path / "corpus.txt"
    path.write_text("first doc line one\nline two\n\n\n  \nsecond doc\n\nthird doc\n")
    docs = read(path)
    assert texts(docs) == ["first doc line one\nline two", "second doc", "third doc"]
    assert docs.num_documents == 3 and docs.skipped_lines == 0


def test_text_line_documents(tmp_path, read):
    path = tmp_path / "corpus.txt"
    path.write_text("one\ntwo\n\n   \nthree\r\n")
    assert texts(read(path, documents="line")) == ["one", "two", "three"]


def test_gzipped_text(tmp_path, read):
    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wt") as stream:
        stream.write("a doc\n\nanother doc\n")
    assert resolve_format(str(path)) == "text"
    assert texts(read(path)) == ["a doc", "another doc"]


def test_jsonl_text_field(tmp_path, read):
    path = tmp_path / "corpus.jsonl"
    rows = [{"body": "hello there", "id": 1}, {"body": "", "id": 2}, {"body": None, "id": 3}, {"body": "bye", "id": 4}]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    docs = read(path, text_field="body")
    assert texts(docs) == ["hello there", "bye"]
    assert docs.dataset.column_names == ["text"]


def test_jsonl_missing_text_field_names_the_fields(tmp_path, read):
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match=r"text_field='text'.*fields: body"):
        read(path)


def test_bad_jsonl_records_name_the_source(tmp_path, read):
    (tmp_path / "bytes.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "bad \xff here"}\n')
    with pytest.raises(DataError, match=r"bytes.jsonl.*field 'text' holds bytes that are not valid UTF-8"):
        read(tmp_path / "bytes.jsonl")
    (tmp_path / "syntax.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"syntax.jsonl.*cannot read it as json"):
        read(tmp_path / "syntax.jsonl")


def test_explicit_format_overrides_the_suffix(tmp_path, read):
    path = tmp_path / "corpus.log"
    path.write_text("a log line\nanother\n")
    assert texts(read(path, format="text", documents="line")) == ["a log line", "another"]


def test_parquet(tmp_path, read):
    path = tmp_path / "corpus.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"text": ["a parquet doc", "  ", "second"], "n": [1, 2, 3]}), path)
    assert texts(read(path)) == ["a parquet doc", "second"]


def test_glob_reads_every_file_in_order(tmp_path, read):
    (tmp_path / "b.txt").write_text("from b\n")
    (tmp_path / "a.txt").write_text("from a\n\nalso a\n")
    assert texts(read(tmp_path / "*.txt")) == ["from a", "also a", "from b"]


def test_saved_dataset_and_dataset_dict(tmp_path, read):
    datasets.Dataset.from_dict({"content": ["saved one", "saved two"]}).save_to_disk(tmp_path / "plain")
    assert texts(read(tmp_path / "plain", text_field="content")) == ["saved one", "saved two"]
    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"text": ["train doc"]}),
        validation=datasets.Dataset.from_dict({"text": ["valid doc"]}),
    )
    splits.save_to_disk(tmp_path / "dict")
    assert resolve_format(str(tmp_path / "dict")) == "saved"
    assert texts(read(tmp_path / "dict", split="validation")) == ["valid doc"]
    with pytest.raises(DataError, match=r"no split 'test'; splits: train, validation"):
        read(tmp_path / "dict", split="test")


def test_streaming_local_source_yields_the_same_documents(tmp_path, read):
    path = tmp_path / "corpus.txt"
    path.write_text("one\n\ntwo\n\nthree\n")
    docs = read(path, streaming=True)
    assert isinstance(docs.dataset, datasets.IterableDataset)
    assert [row["text"] for row in docs.dataset] == ["one", "two", "three"]
    assert docs.num_documents == 3


@pytest.mark.parametrize("path", ["missing.txt", "missing/*.jsonl"])
def test_missing_file_or_empty_glob_names_the_path(tmp_path, read, path):
    with pytest.raises(DataError, match="missing"):
        read(tmp_path / path)


def test_unknown_suffix_and_plain_directory(tmp_path, read):
    (tmp_path / "corpus.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"corpus.csv.*cannot tell the format"):
        read(tmp_path / "corpus.csv")
    (tmp_path / "dir").mkdir()
    with pytest.raises(DataError, match=r"not a save_to_disk dataset.*dir/\*\.txt"):
        read(tmp_path / "dir")


def test_hub_name_offline_is_one_line_naming_the_source(read):
    with pytest.raises(DataError) as caught:
        read("tadistill-test-org/no-such-dataset")
    message = str(caught.value)
    assert "tadistill-test-org/no-such-dataset" in message and "hub" in message
    assert "\n" not in message


def test_empty_corpus_names_the_source(tmp_path, read):
    path = tmp_path / "blank.txt"
    path.write_text("\n\n   \n")
    with pytest.raises(DataError, match=r"blank.txt.*no usable documents"):
        read(path)


def test_decode_errors_skipped_and_counted(tmp_path, read, caplog):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"good one\nbad \xff line\nstill doc one\n\n\xc3\x28\n\ndoc two\n")
    with caplog.at_level(logging.WARNING, logger="tadistill.data.sources"):
        docs = read(path)
    assert texts(docs) == ["good one\nstill doc one", "doc two"]
    assert docs.skipped_lines == 2
    assert "skipped 2 line(s)" in caplog.text and "mixed.txt" in caplog.text


def test_decode_error_fail_names_file_and_line(tmp_path, read):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"good one\n\nstill good\nbad \xff line\n")
    with pytest.raises(DataError, match=r"mixed.txt:4: not valid UTF-8"):
        read(path, on_decode_error="fail")


def test_all_undecodable_is_an_empty_corpus(tmp_path, read):
    path = tmp_path / "binary.txt"
    path.write_bytes(b"\xff\xfe\n\x80\x81\n")
    with pytest.raises(DataError, match=r"binary.txt.*no usable documents \(2 undecodable"):
        read(path)


def test_bad_options_are_rejected(tmp_path, read):
    path = tmp_path / "corpus.txt"
    path.write_text("doc\n")
    with pytest.raises(DataError, match="documents='paragraph' is not one of blank-line, line"):
        read(path, documents="paragraph")
    with pytest.raises(DataError, match="on_decode_error='ignore'"):
        read(path, on_decode_error="ignore")


def test_source_problems_report_without_reading(tmp_path):
    (tmp_path / "ok.txt").write_text("doc\n")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"body": "x"}) + "\n" + "not json at all\n")
    pyarrow.parquet.write_table(pyarrow.table({"content": ["x"]}), tmp_path / "t.parquet")

    def problems(path, **options):
        return source_problems(SourceConfig(path=str(path), **options), "data.sources.0")

    assert problems(tmp_path / "ok.txt") == []
    assert problems(tmp_path / "rows.jsonl", text_field="body") == []
    assert problems("some-org/some-dataset") == []  # hub names need the network

    [missing] = problems(tmp_path / "nope.txt")
    assert missing.key == "data.sources.0.path" and "no such file" in missing.message
    [field] = problems(tmp_path / "rows.jsonl")
    assert field.key == "data.sources.0.text_field" and "fields: body" in field.message
    [column] = problems(tmp_path / "t.parquet")
    assert "fields: content" in column.message
    [fmt] = problems(tmp_path / "ok.txt", format="csv")
    assert fmt.key == "data.sources.0.path" and "format='csv'" in fmt.message
    [mode] = problems(tmp_path / "ok.txt", documents="para")
    assert mode.key == "data.sources.0.documents"
    assert problems(tmp_path / "ok.txt", weight=0.0) == []  # the mixture's to check, once
