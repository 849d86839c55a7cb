"""Latency, throughput and parameter counts of encoders: what `tadistill bench` measures.

Every model is loaded as a bare encoder (`AutoModel`: no LM head, SDPA attention) and timed
on the same random token ids with a full attention mask, so teacher and students do the same
work in each cell (batch, sequence length, dtype). Cells are the outer loop and models the
inner one: on a noisy machine a slow spell then hits every model of a cell alike instead of
one whole model.

bf16 differs by device:
- cpu: fp32 weights under `torch.autocast`. The bf16 speed of a CPU comes from its oneDNN
  matmuls; autocast runs exactly those in bf16 and keeps softmax and layer norm in fp32,
  as accelerate's bf16 mixed precision does. A model cast wholesale to bf16 also runs its
  elementwise ops in bf16: less accurate, emulated on CPUs without native bf16 arithmetic,
  and in our measurements no faster than autocast.
- cuda: weights cast once to bf16 (`dtype=torch.bfloat16`), as a deployed bf16 model runs.
  Every op has a native bf16 kernel, and autocast would re-cast each weight on every call,
  an overhead that dominates small batches.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModel

from tadistill.arch import adapter_for
from tadistill.errors import ModelError
from tadistill.models import load_config

DTYPES = ("fp32", "bf16")
# Families whose position ids start after the padding index (RoBERTa's convention).
_POSITIONS_AFTER_PADDING = ("roberta", "xlm-roberta", "camembert")


def precision(device: str, dtype: str) -> tuple[torch.dtype, torch.dtype | None]:
    """(weight dtype, autocast dtype or None) that run `dtype` on `device`; see the module doc."""
    if dtype == "fp32":
        return torch.float32, None
    if device == "cpu":
        return torch.float32, torch.bfloat16
    return torch.bfloat16, None


def load_encoder(name_or_path: str, device: str, weight_dtype: torch.dtype = torch.float32) -> nn.Module:
    """The encoder of a saved model directory or Hugging Face id (an LM head is dropped), in eval mode."""
    path = Path(name_or_path)
    if path.exists() and not (path / "config.json").is_file():
        raise ModelError(
            f"{name_or_path}: not a model directory (no config.json); give a directory written by "
            "tadistill or save_pretrained, or a Hugging Face model id"
        )
    config = load_config(name_or_path)  # one-line errors for missing paths and unreachable hub ids
    try:
        model = AutoModel.from_pretrained(name_or_path, config=config, attn_implementation="sdpa", dtype=weight_dtype)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ModelError(f"cannot load {name_or_path!r} as an encoder: {reason}") from None
    return model.to(device).eval()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters of an encoder split into embeddings, Transformer blocks and the rest (pooler)."""
    adapter = adapter_for(model)
    embeddings = _numel(adapter.embedding_module(model))
    blocks = _numel(adapter.layer_list(model))
    total = _numel(model)
    return {"embeddings": embeddings, "blocks": blocks, "other": total - embeddings - blocks, "total": total}


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def max_sequence_length(config) -> int:
    """Longest input the position embeddings cover."""
    limit = config.max_position_embeddings
    if config.model_type in _POSITIONS_AFTER_PADDING:
        limit -= config.pad_token_id + 1
    return limit


def random_inputs(vocab_size: int, batch: int, seq: int, seed: int, device: str) -> dict[str, torch.Tensor]:
    """Token ids drawn uniformly from the vocabulary (fixed seed) and a full attention mask."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(vocab_size, (batch, seq), generator=generator)  # (B, n)
    return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device)}


def time_forward(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    autocast_dtype: torch.dtype | None,
    warmup: int,
    iters: int,
) -> list[float]:
    """Seconds taken by each of `iters` forward passes, after `warmup` untimed ones."""
    device_type = inputs["input_ids"].device.type

    def forward():
        # Entered per call: autocast caches cast weights until its outermost context exits,
        # so one context around the loop would skip the casts a real call pays for.
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            model(**inputs)

    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            forward()
        for _ in range(iters):
            _synchronize(device_type)
            start = time.perf_counter()
            forward()
            _synchronize(device_type)
            times.append(time.perf_counter() - start)
    return times


def _synchronize(device_type: str) -> None:
    if device_type == "cuda":
        torch.cuda.synchronize()


def summarize(times: list[float], batch: int, seq: int) -> dict[str, float]:
    median = float(np.median(times))
    return {
        "median_ms": 1e3 * median,
        "p90_ms": 1e3 * float(np.percentile(times, 90)),
        "sequences_per_s": batch / median,
        "tokens_per_s": batch * seq / median,
    }


def run_bench(
    models: list[str],
    teacher: str | None = None,
    batches: tuple[int, ...] = (1, 32),
    seqs: tuple[int, ...] = (128,),
    dtypes: tuple[str, ...] = ("fp32",),
    device: str = "cpu",
    warmup: int = 3,
    iters: int = 20,
    seed: int = 0,
) -> dict:
    """Time every model in every (batch, seq, dtype) cell; speedups are against `teacher` when given.

    Returns a JSON-ready dict: the settings, `models` (name -> shape and parameter counts) and
    `cells` (one row per model and cell).
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"--device cuda: CUDA is not available to this torch ({torch.__version__})")
    names = list(dict.fromkeys(([teacher] if teacher else []) + list(models)))
    report = {
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "warmup": warmup,
        "iters": iters,
        "seed": seed,
        "teacher": teacher,
        "models": {},
        "cells": [],
    }
    for dtype in dtypes:
        weight_dtype, autocast_dtype = precision(device, dtype)
        encoders = {name: load_encoder(name, device, weight_dtype) for name in names}
        for name, model in encoders.items():
            _check_lengths(name, model.config, seqs)
            report["models"].setdefault(name, _describe(model))
        for batch in batches:
            for seq in seqs:
                cell = {"batch": batch, "seq": seq, "dtype": dtype}
                rows = {}
                for name, model in encoders.items():
                    inputs = random_inputs(model.config.vocab_size, batch, seq, seed, device)
                    times = time_forward(model, inputs, autocast_dtype, warmup, iters)
                    rows[name] = {"model": name, **cell, **summarize(times, batch, seq)}
                for row in rows.values():
                    row["speedup"] = rows[teacher]["median_ms"] / row["median_ms"] if teacher else None
                report["cells"].extend(rows.values())
        del encoders  # before the next dtype's copies are loaded
    return report


def _check_lengths(name: str, config, seqs) -> None:
    limit = max_sequence_length(config)
    if max(seqs) > limit:
        raise ModelError(f"--seq {max(seqs)} is longer than {name} supports ({limit} tokens)")


def _describe(model: nn.Module) -> dict:
    return {"shape": str(adapter_for(model).shape(model.config)), "params": count_parameters(model)}


def format_report(report: dict) -> str:
    """Two plain-text tables: parameters per model, then latency and throughput per cell."""
    param_groups = ("embeddings", "blocks", "other", "total")
    params = [
        [_short(name), info["shape"], *(f"{info['params'][group] / 1e6:.2f}" for group in param_groups)]
        for name, info in report["models"].items()
    ]
    cells = [
        [
            _short(row["model"]), row["dtype"], row["batch"], row["seq"],
            f"{row['median_ms']:.2f}", f"{row['p90_ms']:.2f}",
            f"{row['sequences_per_s']:.1f}", f"{row['tokens_per_s']:.0f}",
            "-" if row["speedup"] is None else f"{row['speedup']:.2f}x",
        ]
        for row in report["cells"]
    ]
    return "\n\n".join([
        _render(["model", "shape", "emb M", "blocks M", "other M", "total M"], params),
        _render(["model", "dtype", "batch", "seq", "median ms", "p90 ms", "seq/s", "tok/s", "speedup"], cells),
    ])


def _short(name: str) -> str:
    """The last two components of a path: enough to tell run directories apart in a table."""
    return "/".join(Path(name).parts[-2:])


def _render(headers: list[str], rows: list[list]) -> str:
    table = [headers] + [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    # first column (names) left-aligned, numbers right-aligned
    lines = [
        "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
