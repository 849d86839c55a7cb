"""Tasks defined by the user's own files: formats, one file split by seed and group,
classification or regression, errors naming file, row and column, and the real CLI."""

from __future__ import annotations

import csv
import json

import datasets
import pyarrow
import pyarrow.parquet
import pytest
import yaml

from tadistill import cli
from tadistill.errors import ConfigError, DataError
from tadistill.evaluation.file_tasks import FileTaskConfig, SplitConfig, load_file_task, read_file_task
from tiny import make_sentences


def write_csv(path, rows, delimiter=","):
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def topic_rows(n, seed=0):
    """A keyword task: the label is which of three words the text contains."""
    topics = ["attention", "teacher", "corpus"]
    return [{"body": f"{s} {topics[i % 3]}", "subject": f"note {i}", "queue": topics[i % 3], "customer": i // 4}
            for i, s in enumerate(make_sentences(n, seed=seed))]


def test_train_dev_test_files_make_a_classification_task(tmp_path):
    rows = topic_rows(60)
    config = FileTaskConfig(
        name="tickets", train=write_csv(tmp_path / "train.csv", rows[:40]), dev=write_csv(tmp_path / "dev.csv", rows[40:50]),
        test=write_csv(tmp_path / "test.csv", rows[50:]), text="body", text_pair="subject", label="queue",
    )
    task, data = load_file_task(config)
    assert task.labels == ("attention", "corpus", "teacher") and task.metric == "classification"
    assert (task.select_on, task.report_on, task.shown) == ("dev", "test", ("dev", "test"))
    assert data.train.column_names == ["text_a", "text_b", "label"] and len(data.train) == 40
    assert data.evals["test"]["text_a"] == [row["body"] for row in rows[50:]]
    assert data.evals["dev"]["label"] == [task.labels.index(row["queue"]) for row in rows[40:50]]


def test_one_file_is_split_by_seed_and_group(tmp_path):
    rows = topic_rows(200)
    path = write_jsonl(tmp_path / "all.jsonl", rows)
    config = FileTaskConfig(name="t", data=path, split=SplitConfig(dev=0.2, test=0.1, seed=3, group="customer"),
                            text="body", label="queue")
    _, data = load_file_task(config)
    customers = {row["body"]: row["customer"] for row in rows}
    sides = [{customers[text] for text in split["text_a"]} for split in (data.train, data.evals["dev"], data.evals["test"])]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])  # no customer on two sides
    assert sum(len(s) for s in (data.train, data.evals["dev"], data.evals["test"])) == 200
    assert len(data.evals["dev"]) == pytest.approx(40, abs=8) and len(data.evals["test"]) == pytest.approx(20, abs=8)
    again = load_file_task(config)[1]
    assert again.evals["dev"]["text_a"] == data.evals["dev"]["text_a"]  # the seed decides
    other = load_file_task(FileTaskConfig(**{**config.__dict__, "split": SplitConfig(dev=0.2, test=0.1, seed=4, group="customer")}))[1]
    assert other.evals["dev"]["text_a"] != data.evals["dev"]["text_a"]


def test_without_groups_the_split_is_stratified(tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", topic_rows(300))
    _, data = load_file_task(FileTaskConfig(name="t", data=path, split=SplitConfig(dev=0.2, test=0.0), text="body", label="queue"))
    assert "test" not in data.evals
    assert sorted(data.evals["dev"]["label"]) == sorted([0] * 20 + [1] * 20 + [2] * 20)


def test_float_labels_make_a_regression_task(tmp_path):
    rows = [{"a": s, "b": s[::-1], "score": round(i / 7, 3)} for i, s in enumerate(make_sentences(30))]
    config = FileTaskConfig(name="sts", train=write_csv(tmp_path / "t.tsv", rows[:20], "\t"),
                            dev=write_csv(tmp_path / "d.tsv", rows[20:], "\t"), text="a", text_pair="b", label="score")
    task, data = load_file_task(config)
    assert task.is_regression and task.metric == "pearson_spearman" and task.report_on == "dev"
    assert data.evals["dev"]["label"] == pytest.approx([row["score"] for row in rows[20:]])
    integer_ids = [{"a": s, "score": i % 2} for i, s in enumerate(make_sentences(30))]
    ids_task, _ = load_file_task(FileTaskConfig(name="ids", train=write_jsonl(tmp_path / "t.jsonl", integer_ids[:20]),
                                                dev=write_jsonl(tmp_path / "d.jsonl", integer_ids[20:]), text="a", label="score"))
    assert ids_task.labels == ("0", "1")  # integer ids are classes


def test_parquet_saved_dataset_and_class_folders(tmp_path):
    rows = topic_rows(30)
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows[:20]), tmp_path / "train.parquet")
    datasets.Dataset.from_list(rows[20:]).save_to_disk(str(tmp_path / "dev"))
    task, data = load_file_task(FileTaskConfig(name="p", train=str(tmp_path / "train.parquet"), dev=str(tmp_path / "dev"),
                                               text="body", label="queue"))
    assert len(data.train) == 20 and len(data.evals["dev"]) == 10

    for i, row in enumerate(topic_rows(60)):
        folder = tmp_path / "news" / row["queue"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.txt").write_text(row["body"] + "\n  with   spaces\n")
    task, data = load_file_task(FileTaskConfig(name="news", data=str(tmp_path / "news"), split=SplitConfig(dev=0.2, test=0.2)))
    assert task.labels == ("attention", "corpus", "teacher")
    assert len(data.train) + len(data.evals["dev"]) + len(data.evals["test"]) == 60
    assert all("  " not in text and text.endswith("with spaces") for text in data.train["text_a"])


def test_errors_name_the_file_the_row_and_the_column(tmp_path):
    rows = topic_rows(20)
    train = write_csv(tmp_path / "train.csv", rows[:15])
    bad_dev = write_csv(tmp_path / "dev.csv", rows[15:19] + [{**rows[19], "queue": "finance"}])
    with pytest.raises(DataError, match=r"dev.csv row 6: label 'finance' in column 'queue' is not a class.*attention, corpus, teacher"):
        load_file_task(FileTaskConfig(name="t", train=train, dev=bad_dev, text="body", label="queue"))
    (tmp_path / "broken.jsonl").write_text('{"body": "a", "queue": "x"}\n{"body": "b", queue: y}\n')
    with pytest.raises(DataError, match=r"broken.jsonl line 2: not a JSON object"):
        load_file_task(FileTaskConfig(name="t", data=str(tmp_path / "broken.jsonl"), text="body", label="queue"))
    (tmp_path / "ragged.csv").write_text("body,queue\nfine,x\ntoo,many,fields\n")
    with pytest.raises(DataError, match=r"ragged.csv row 3: 3 fields, the header has 2"):
        load_file_task(FileTaskConfig(name="t", train=str(tmp_path / "ragged.csv"), dev=train, text="body", label="queue"))
    empty = write_csv(tmp_path / "empty.csv", [{"body": "x", "queue": "y"}])
    (tmp_path / "empty.csv").write_text("body,queue\n")
    with pytest.raises(DataError, match=r"the dev split of .*empty.csv is empty"):
        load_file_task(FileTaskConfig(name="t", train=train, dev=empty, text="body", label="queue"))


def test_task_file_problems_are_reported_at_once_before_reading(tmp_path):
    write_csv(tmp_path / "train.csv", topic_rows(10))
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump({"train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "missing.csv"),
                                    "text": "content", "label": "queue", "kind": "classifcation", "fromat": "csv"}))
    with pytest.raises(ConfigError) as caught:
        read_file_task(path)
    found = {p.key: p.message for p in caught.value.problems}
    assert "Did you mean 'format'" in found["fromat"]
    assert "Did you mean 'classification'" in found["kind"]
    assert "no such file" in found["dev"]
    assert "no column 'content'; columns: body, subject, queue, customer" in found["text"]


def test_cli_finetune_and_evaluate_on_a_task_file(bert_teacher, tmp_path, capsys):
    rows = topic_rows(90)
    task_file = tmp_path / "tickets.yaml"
    task_file.write_text(yaml.safe_dump({
        "name": "tickets", "data": write_jsonl(tmp_path / "all.jsonl", rows), "split": {"dev": 0.2, "test": 0.2},
        "text": "body", "label": "queue",
    }))
    out = tmp_path / "ft"
    assert cli.main(["finetune", str(bert_teacher), "--task", str(task_file), "--epochs", "1", "--batch-size", "8",
                     "--max-seq-length", "32", "--precision", "no", "--no-save-model", "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"dev", "test"} and set(metrics["test"]) == {"accuracy", "macro_f1", "mcc", "score"}
    assert "tickets score (test)" in capsys.readouterr().out

    sweep = tmp_path / "eval"
    assert cli.main(["evaluate", str(bert_teacher), "--task", str(task_file), "--lrs", "1e-3", "--epochs", "1",
                     "--seeds", "1", "--batch-size", "8", "--max-seq-length", "32", "--precision", "no",
                     "--output", str(sweep)]) == 0
    results = json.loads((sweep / "results.json").read_text())
    assert results["suite"] == "file" and results["tasks"]["tickets"]["task"]["report_on"] == "test"
    score = results["tasks"]["tickets"]["score"]
    assert score == results["tasks"]["tickets"]["metrics"]["test"]["accuracy"]
    assert f"| {bert_teacher} | {100 * score:.1f}/" in (sweep / "results.md").read_text()
