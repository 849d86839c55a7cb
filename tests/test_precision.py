"""train.mixed_precision auto: bf16 where the device has bf16 matrix kernels, fp32 elsewhere;
an explicit bf16 on a CPU without them is kept, with a warning naming the setting; the
distill CLI runs and reports what auto chose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tadistill import precision
from tadistill.cli import main
from tiny import make_sentences

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"
CPU = torch.device("cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_auto_is_bf16_only_where_bf16_is_fast(fast, monkeypatch):
    monkeypatch.setattr(precision, "fast_bf16", lambda device: fast)
    assert precision.resolve_precision("auto", CPU) == ("bf16" if fast else "no")
    for explicit in ("no", "bf16", "fp16"):  # an explicit choice is the user's
        assert precision.resolve_precision(explicit, CPU) == explicit


def test_the_cpu_check_agrees_with_onednn():
    assert precision.fast_bf16(CPU) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert precision.fast_bf16(torch.device("meta")) is False


def test_explicit_bf16_on_a_slow_cpu_warns_naming_the_key(monkeypatch):
    monkeypatch.setattr(precision, "fast_bf16", lambda device: False)
    warning = precision.slow_bf16_warning("bf16", CPU, "train.mixed_precision")
    assert "train.mixed_precision bf16" in warning and "auto" in warning
    assert precision.slow_bf16_warning("no", CPU, "train.mixed_precision") is None
    monkeypatch.setattr(precision, "fast_bf16", lambda device: True)
    assert precision.slow_bf16_warning("bf16", CPU, "train.mixed_precision") is None


@pytest.mark.parametrize("fast", [True, False])
def test_distill_with_auto_trains_in_what_auto_chose(fast, tiny_teacher_factory, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(precision, "fast_bf16", lambda device: fast)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_sentences(200, seed=5, min_words=8, max_words=30)) + "\n")
    run = tmp_path / "run"
    assert main(["distill", str(CONFIGS / "hs.yaml"), "--output", str(run),
                 "--set", f"teacher.path={tiny_teacher_factory('bert', layers=2)}",
                 "--set", f"data.sources.0.path={corpus}", "--set", "train.mixed_precision=auto",
                 "--set", "train.max_steps=4", "--set", "train.warmup_steps=1", "--set", "train.log_every=1"]) == 0
    chosen = "bf16" if fast else "no"
    assert f"precision {chosen} (train.mixed_precision auto)" in capsys.readouterr().out
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
