"""`train.compile: true`: what is compiled (every largest tap-free part of the blocks), and a
real `tadistill distill` run with it on a tiny teacher that learns and exports the same
parameter names as an eager run."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM

from tadistill.compiling import compile_untapped
from tadistill.taps import Tap
from test_distill_cli import CONFIGS, corpus, teacher4  # noqa: F401  (fixtures)
from tadistill.cli import main


def test_compiles_the_largest_parts_no_tap_reads():
    config = BertConfig(num_hidden_layers=3, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    model = BertForMaskedLM(config)
    names = compile_untapped(model, {Tap("query", 2), Tap("hidden", 2)})
    assert names == [
        "bert.encoder.layer.0",  # nothing tapped: the whole block
        "bert.encoder.layer.1.attention.output",  # around the tapped query (the key and value
        "bert.encoder.layer.1.intermediate",  # Linears alone have nothing to fuse)
        "bert.encoder.layer.1.output",
        "bert.encoder.layer.2",
    ]
    assert all(not name.startswith("bert.embeddings") for name in names)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in BertForMaskedLM(config).named_parameters()]


def test_distill_with_compile_learns_and_exports_plain_weights(teacher4, corpus, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    args = ["distill", str(CONFIGS / "minilmv2.yaml"), "--output", str(run), "--set", f"teacher.path={teacher4}",
            "--set", f"data.sources.0.path={corpus}", "--set", "train.compile=true", "--set", "train.max_steps=10"]
    assert main(args) == 0
    curve = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(curve))) and curve[-1] < curve[0]
    weights = load_file(run / "student" / "model.safetensors")
    assert weights and not any("_orig_mod" in name for name in weights)  # in-place compile: names unchanged
