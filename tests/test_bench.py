"""`tadistill bench` and the measurement functions behind it, on tiny models (no timing assertions)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tadistill import cli
from tadistill.measure import count_parameters, load_encoder, random_inputs, summarize, time_forward
from tadistill.recipes.bench import run_bench
from tadistill.errors import ModelError


@pytest.fixture(scope="module")
def bert_student(tiny_teacher_factory):
    return tiny_teacher_factory("bert", layers=1, with_lm_head=False)


def test_parameter_counts_split_the_encoder(any_teacher):
    model = load_encoder(str(any_teacher), "cpu")
    counts = count_parameters(model)

    embeddings = sum(p.numel() for p in model.embeddings.parameters())
    blocks = sum(p.numel() for layer in model.encoder.layer for p in layer.parameters())
    pooler = sum(p.numel() for p in model.pooler.parameters())
    assert counts == {
        "embeddings": embeddings,
        "blocks": blocks,
        "other": pooler,
        "total": sum(p.numel() for p in model.parameters()),
    }
    assert embeddings + blocks + pooler == counts["total"]


def test_load_encoder_drops_the_lm_head(bert_teacher):
    model = load_encoder(str(bert_teacher), "cpu")
    assert type(model).__name__ == "BertModel"
    assert not model.training


def test_random_inputs_are_seeded_with_a_full_mask():
    a = random_inputs(100, batch=3, seq=7, seed=0, device="cpu")
    b = random_inputs(100, batch=3, seq=7, seed=0, device="cpu")
    c = random_inputs(100, batch=3, seq=7, seed=1, device="cpu")
    assert a["input_ids"].shape == (3, 7)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["input_ids"], c["input_ids"])
    assert a["input_ids"].min() >= 0 and a["input_ids"].max() < 100
    assert torch.equal(a["attention_mask"], torch.ones(3, 7, dtype=torch.long))


def test_summarize_against_hand_computed_values():
    stats = summarize([0.5, 0.1, 0.3, 0.2, 0.4], batch=2, seq=8)
    assert stats["median_ms"] == pytest.approx(300.0)
    assert stats["p90_ms"] == pytest.approx(460.0)  # linear interpolation: 0.4 + 0.6 * 0.1
    assert stats["sequences_per_s"] == pytest.approx(2 / 0.3)
    assert stats["tokens_per_s"] == pytest.approx(16 / 0.3)


def test_time_forward_returns_one_time_per_iteration(bert_teacher):
    model = load_encoder(str(bert_teacher), "cpu")
    inputs = random_inputs(model.config.vocab_size, batch=2, seq=8, seed=0, device="cpu")
    times = time_forward(model, inputs, autocast_dtype=torch.bfloat16, warmup=1, iters=3)
    assert len(times) == 3 and all(t > 0 for t in times)


def test_bench_cli_writes_table_and_json(bert_teacher, bert_student, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", str(bert_student), "--teacher", str(bert_teacher), "--batch", "1,2", "--seq", "8,16",
            "--dtype", "fp32,bf16", "--threads", "1", "--warmup", "1", "--iters", "2", "--output", str(out)]
    assert cli.main(argv) == 0

    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["threads"] == 1 and report["iters"] == 2
    assert set(report["models"]) == {str(bert_teacher), str(bert_student)}
    student = load_encoder(str(bert_student), "cpu")
    assert report["models"][str(bert_student)]["params"]["total"] == sum(p.numel() for p in student.parameters())
    assert report["models"][str(bert_student)]["shape"].startswith("1L x 64H")

    cells = report["cells"]
    assert len(cells) == 2 * 2 * 2 * 2  # models x batches x seqs x dtypes
    assert {(c["batch"], c["seq"], c["dtype"]) for c in cells} == {
        (b, s, d) for b in (1, 2) for s in (8, 16) for d in ("fp32", "bf16")
    }
    for cell in cells:
        for key in ("median_ms", "p90_ms", "sequences_per_s", "tokens_per_s", "speedup"):
            assert math.isfinite(cell[key]) and cell[key] > 0, (key, cell)
        assert cell["p90_ms"] >= cell["median_ms"]
        assert cell["tokens_per_s"] == pytest.approx(cell["sequences_per_s"] * cell["seq"])
    assert all(c["speedup"] == 1.0 for c in cells if c["model"] == str(bert_teacher))

    table = capsys.readouterr().out
    assert "median ms" in table and "speedup" in table
    assert table.count(bert_student.name) >= 1 + len(cells) // 2  # params row + one row per cell


def test_bench_without_teacher_has_no_speedup(bert_student, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["bench", str(bert_student), "--batch", "1", "--seq", "8", "--iters", "1", "--output", str(out)]
    assert cli.main(argv) == 0
    assert [c["speedup"] for c in json.loads(out.read_text())["cells"]] == [None]


def test_not_a_model_dir_is_one_clear_line(tmp_path, capsys):
    assert cli.main(["bench", str(tmp_path), "--output", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "not a model directory (no config.json)" in err and str(tmp_path) in err


def test_sequence_longer_than_the_positions_is_refused(roberta_teacher):
    # RoBERTa's positions start after the padding index: 258 position embeddings hold 256 tokens.
    model = load_encoder(str(roberta_teacher), "cpu")
    inputs = random_inputs(model.config.vocab_size, batch=1, seq=256, seed=0, device="cpu")
    assert len(time_forward(model, inputs, None, warmup=0, iters=1)) == 1
    with pytest.raises(ModelError, match="--seq 257 is longer"):
        run_bench([str(roberta_teacher)], seqs=(257,), iters=1)


def test_bench_onnxruntime_times_fp32_and_int8_graphs_beside_torch(bert_teacher, bert_student, tmp_path, capsys):
    bert_student = Path(shutil.copytree(bert_student, tmp_path / "student"))  # the shared fixture stays as it is
    assert cli.main(["export", str(bert_student), "--quantize", "int8"]) == 0  # into STUDENT/onnx, where bench looks
    out = tmp_path / "bench.json"
    argv = ["bench", str(bert_student), "--teacher", str(bert_teacher), "--runtime", "torch,onnxruntime",
            "--batch", "2", "--seq", "8", "--dtype", "fp32,bf16", "--threads", "1", "--warmup", "1", "--iters", "2",
            "--output", str(out)]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    rows = {(c["model"], c["runtime"], c["dtype"]): c for c in report["cells"]}
    assert set(rows) == {
        (str(bert_teacher), "torch", "fp32"), (str(bert_teacher), "torch", "bf16"),
        (str(bert_student), "torch", "fp32"), (str(bert_student), "torch", "bf16"),
        (str(bert_student), "onnxruntime", "fp32"), (str(bert_student), "onnxruntime", "int8"),
    }
    teacher_fp32 = rows[(str(bert_teacher), "torch", "fp32")]["median_ms"]
    for (model, runtime, dtype), row in rows.items():
        reference = rows[(str(bert_teacher), "torch", "fp32" if runtime == "onnxruntime" else dtype)]["median_ms"]
        assert row["speedup"] == pytest.approx(reference / row["median_ms"])
        assert row["p90_ms"] >= row["median_ms"] > 0
    # size on disk: the safetensors file for PyTorch, the graph file for onnxruntime
    weights = sum(f.stat().st_size for f in bert_student.glob("*.safetensors")) / 1e6
    assert rows[(str(bert_student), "torch", "fp32")]["disk_mb"] == pytest.approx(weights)
    int8_mb = (bert_student / "onnx" / "model_int8.onnx").stat().st_size / 1e6
    assert rows[(str(bert_student), "onnxruntime", "int8")]["disk_mb"] == pytest.approx(int8_mb)
    assert teacher_fp32 > 0 and "onnxruntime" in capsys.readouterr().out


def test_bench_onnxruntime_needs_an_export(bert_teacher, tmp_path, capsys):
    student = tmp_path / "plain"
    load_encoder(str(bert_teacher), "cpu").save_pretrained(student)
    argv = ["bench", str(student), "--runtime", "onnxruntime", "--output", str(tmp_path / "b.json")]
    assert cli.main(argv) == 2
    assert f"tadistill export {student}" in capsys.readouterr().err
