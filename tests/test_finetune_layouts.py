"""Every task's original file layout parses to the texts and labels that were written."""

from __future__ import annotations

import logging

import pytest
from datasets import Dataset

from finetune_data import (
    write_glue_task,
    write_original_mrpc,
    write_task,
    write_tsv,
    write_xnli,
    make_examples,
)
from tadistill.errors import DataError
from tadistill.evaluation import layouts
from tadistill.evaluation.layouts import load_task_data
from tadistill.evaluation.tasks import SUITES, TASKS, XNLI_LANGUAGES, get_task

GLUE_TASKS = [name for name in TASKS.names() if get_task(name).suite == "glue"]


def assert_matches(split: Dataset, examples, pair: bool = True):
    assert split["text_a"] == [e.text_a for e in examples]
    if pair:
        assert split["text_b"] == [e.text_b for e in examples]
    assert split["label"] == pytest.approx([e.label_id for e in examples])


@pytest.mark.parametrize("name", GLUE_TASKS)
def test_glue_download_layout_parses_every_task(tmp_path, name):
    train, dev = make_examples(name, 12, seed=0), make_examples(name, 7, seed=1)
    write_glue_task(tmp_path, name, train, dev)
    task = get_task(name)

    data = load_task_data(task, tmp_path)

    pair = len(task.hub_text_columns) == 2
    assert set(data.train.column_names) == {"text_a", "label"} | ({"text_b"} if pair else set())
    assert_matches(data.train, train, pair)  # CoLA: no header row lost, none invented
    assert list(data.evals) == [set_name for set_name, _ in task.eval_files]
    for split in data.evals.values():
        assert_matches(split, dev, pair)


def test_glue_quotes_are_text_not_csv_quoting(tmp_path):
    write_tsv(tmp_path / "SST-2" / "train.tsv", ["sentence", "label"], [['a "b', "1"], ['c" d', "0"]])
    write_tsv(tmp_path / "SST-2" / "dev.tsv", ["sentence", "label"], [['"e"', "1"]])
    data = load_task_data(get_task("sst2"), tmp_path)
    assert data.train["text_a"] == ['a "b', 'c" d']
    assert data.evals["dev"]["text_a"] == ['"e"']


def test_data_dir_may_be_the_task_folder_itself(tmp_path):
    examples = make_examples("rte", 5)
    write_glue_task(tmp_path, "rte", examples, examples)
    data = load_task_data(get_task("rte"), tmp_path / "RTE")
    assert_matches(data.train, examples)


def test_stsb_scores_are_floats(tmp_path):
    write_task(tmp_path, "stsb", 6, 3)
    data = load_task_data(get_task("stsb"), tmp_path)
    assert data.train.features["label"].dtype in ("float32", "float64")


def test_original_mrpc_is_split_by_dev_ids(tmp_path):
    train, dev = make_examples("mrpc", 9, seed=0), make_examples("mrpc", 4, seed=1)
    write_original_mrpc(tmp_path / "MRPC", train, dev)  # the BOM-prefixed Microsoft file
    data = load_task_data(get_task("mrpc"), tmp_path)
    assert_matches(data.train, train)
    assert_matches(data.evals["dev"], dev)


def test_qqp_broken_rows_are_skipped_with_a_warning(tmp_path, caplog):
    write_task(tmp_path, "qqp", 6, 3)
    with (tmp_path / "QQP" / "train.tsv").open("a") as file:
        file.write("999\t1\t2\ta question cut by a newline\n")  # as in GLUE's QQP train.tsv
    with caplog.at_level(logging.WARNING, logger=layouts.__name__):
        data = load_task_data(get_task("qqp"), tmp_path)
    assert len(data.train) == 6
    assert "skipped 1 rows" in caplog.text


def test_missing_task_folder_names_the_expected_file(tmp_path):
    with pytest.raises(DataError, match=r"CoLA/train\.tsv"):
        load_task_data(get_task("cola"), tmp_path)


def test_missing_mnli_dev_file_is_named(tmp_path):
    write_task(tmp_path, "mnli", 6, 3)
    (tmp_path / "MNLI" / "dev_mismatched.tsv").unlink()
    with pytest.raises(DataError, match="dev_mismatched.tsv"):
        load_task_data(get_task("mnli"), tmp_path)


def test_missing_column_is_named_with_the_header(tmp_path):
    write_tsv(tmp_path / "STS-B" / "train.tsv", ["index", "sentence1", "sentence2", "similarity"], [["0", "a", "b", "1.0"]])
    with pytest.raises(DataError, match=r"no column 'score'.*similarity"):
        load_task_data(get_task("stsb"), tmp_path)


def test_unknown_labels_are_reported_with_the_expected_ones(tmp_path):
    write_tsv(tmp_path / "RTE" / "train.tsv", ["index", "sentence1", "sentence2", "label"], [["0", "a", "b", "yes"]])
    with pytest.raises(DataError, match=r"\['yes'\].*'entailment', 'not_entailment'"):
        load_task_data(get_task("rte"), tmp_path)


def test_non_numeric_score_is_reported(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    write_tsv(tmp_path / "STS-B" / "train.tsv", header, [["0", "g", "f", "y", "0", "s", "s", "a", "b", "high"]])
    with pytest.raises(DataError, match="scores must be numbers"):
        load_task_data(get_task("stsb"), tmp_path)


def test_data_dir_must_exist(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        load_task_data(get_task("sst2"), tmp_path / "nowhere")


# ---------------------------------------------------------------------------- XNLI


def test_xnli_layout_gives_15_languages_of_dev_and_test(tmp_path):
    train, per_language = make_examples("xnli", 10, seed=0), make_examples("xnli", 4, seed=1)
    write_xnli(tmp_path, train, per_language, unlabeled_train=3)

    data = load_task_data(get_task("xnli"), tmp_path)

    assert_matches(data.train, train)  # MultiNLI's "-" (no gold label) rows dropped
    assert sorted(data.evals) == sorted(f"{s}_{lang}" for s in ("dev", "test") for lang in XNLI_LANGUAGES)
    for split in data.evals.values():
        assert_matches(split, per_language)


def test_xnli_trains_on_glue_mnli_when_multinli_is_absent(tmp_path):
    write_xnli(tmp_path, make_examples("xnli", 4), make_examples("xnli", 2))
    (tmp_path / "multinli_1.0" / "multinli_1.0_train.txt").unlink()
    mnli_train = make_examples("mnli", 5, seed=3)
    write_glue_task(tmp_path, "mnli", mnli_train, mnli_train)
    data = load_task_data(get_task("xnli"), tmp_path)
    assert_matches(data.train, mnli_train)


def test_xnli_missing_files_and_languages_are_named(tmp_path):
    write_xnli(tmp_path, make_examples("xnli", 4), make_examples("xnli", 2))
    test_file = tmp_path / "XNLI-1.0" / "xnli.test.tsv"
    lines = test_file.read_text().splitlines(keepends=True)
    test_file.write_text("".join(line for line in lines if not line.startswith("sw\t")))
    with pytest.raises(DataError, match=r"no rows for the languages \['sw'\]"):
        load_task_data(get_task("xnli"), tmp_path)
    test_file.unlink()
    with pytest.raises(DataError, match=r"XNLI test data.*XNLI-1.0/xnli\.test\.tsv"):
        load_task_data(get_task("xnli"), tmp_path)


# ---------------------------------------------------------------------------- the hub


def test_hub_offline_says_to_pass_data_dir():
    # conftest sets HF_DATASETS_OFFLINE=1: the same ConnectionError as an unreachable hub
    with pytest.raises(DataError, match="--data-dir"):
        load_task_data(get_task("sst2"))


@pytest.mark.parametrize("name", ["mnli", "qnli", "xnli"])
def test_hub_columns_and_splits_are_mapped(monkeypatch, name):
    task = get_task(name)
    requested = []

    def fake_load_dataset(dataset_id, config, split):
        requested.append((dataset_id, config, split))
        columns = {column: [f"{column} {split}"] for column in task.hub_text_columns}
        return Dataset.from_dict({**columns, "label": [2], "idx": [0]})

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    data = load_task_data(task)

    assert data.train.column_names == ["text_a", "text_b", "label"]
    assert data.train[0] == {"text_a": f"{task.hub_text_columns[0]} train",
                             "text_b": f"{task.hub_text_columns[1]} train", "label": 2}
    if name == "xnli":
        assert ("facebook/xnli", "en", "train") in requested
        assert ("facebook/xnli", "sw", "test") in requested
        assert len(data.evals) == 30
    else:
        splits = {split for _, _, split in requested}
        assert splits == {"train", *(s.replace("dev", "validation") for s, _ in task.eval_files)}
        assert {config for _, config, _ in requested} == {name}


def test_glue_suite_defaults_leave_out_wnli():
    assert "wnli" not in SUITES["glue"] and len(SUITES["glue"]) == 8
