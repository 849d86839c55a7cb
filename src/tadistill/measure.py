"""Measuring encoders: parameter counts, and the one timing loop of forward latency that
`tadistill bench` and the quickstart share.

An encoder is loaded bare (`AutoModel`: no LM head, SDPA attention) and timed on random
token ids with a full attention mask, so that teacher and students do the same work.

bf16 differs by device (`precision`):
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
from tadistill.models import load_model_config

DTYPES = ("fp32", "bf16")


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
    config = load_model_config(name_or_path)  # one-line errors for missing paths and unreachable hub ids
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


def _device_of(model) -> torch.device:
    """Where a model runs: a PyTorch module's parameters, or the `device` of a runner such as
    `tadistill.deploy.onnx_graph.OnnxModel` (called like a module, with no parameters)."""
    if isinstance(model, nn.Module):
        return next(model.parameters()).device
    return model.device


def summarize(times: list[float], batch: int, seq: int) -> dict[str, float]:
    median = float(np.median(times))
    return {
        "median_ms": 1e3 * median,
        "p90_ms": 1e3 * float(np.percentile(times, 90)),
        "sequences_per_s": batch / median,
        "tokens_per_s": batch * seq / median,
    }


def time_cells(
    encoders: dict[str, nn.Module],
    batches: tuple[int, ...],
    seqs: tuple[int, ...],
    autocast_dtype: torch.dtype | None = None,
    *,
    warmup: int = 3,
    iters: int = 20,
    seed: int = 0,
) -> list[dict[str, dict]]:
    """Every encoder timed in every (batch, seq) cell, on the same random ids for all of them.

    An encoder is a PyTorch module or anything called like one on the token tensors that has
    a `config` (its vocabulary size) and a `device` (an ONNX graph under onnxruntime).

    One dict per cell, encoder name -> {model, batch, seq, median_ms, p90_ms, ...}. Cells are
    the outer loop and encoders the inner one, so that a slow spell of a shared machine hits
    every encoder of a cell alike instead of one whole encoder.
    """
    cells = []
    for batch in batches:
        for seq in seqs:
            cell = {}
            for name, model in encoders.items():
                inputs = random_inputs(model.config.vocab_size, batch, seq, seed, str(_device_of(model)))
                times = time_forward(model, inputs, autocast_dtype, warmup, iters)
                cell[name] = {"model": name, "batch": batch, "seq": seq, **summarize(times, batch, seq)}
            cells.append(cell)
    return cells
