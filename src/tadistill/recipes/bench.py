"""The bench recipe: latency, throughput, parameters and speedup of encoders against a teacher.

Read top to bottom: for each dtype load every model as a bare encoder, then for every
(batch, sequence length) cell time each model on the same random token ids, and compute
the speedup against the teacher. Cells are the outer loop and models the inner one: on a
noisy machine a slow spell then hits every model of a cell alike instead of one whole model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tadistill.arch import adapter_for
from tadistill.errors import ModelError
from tadistill.measure import count_parameters, load_encoder, precision, time_cells
from tadistill.tables import render_text


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
        for cell in time_cells(encoders, batches, seqs, autocast_dtype, warmup=warmup, iters=iters, seed=seed):
            for row in cell.values():
                row["dtype"] = dtype
                row["speedup"] = cell[teacher]["median_ms"] / row["median_ms"] if teacher else None
            report["cells"].extend(cell.values())
        del encoders  # before the next dtype's copies are loaded
    return report


def _check_lengths(name: str, config, seqs) -> None:
    limit = adapter_for(config).max_positions(config)
    if max(seqs) > limit:
        raise ModelError(f"--seq {max(seqs)} is longer than {name} supports ({limit} tokens)")


def _describe(model: torch.nn.Module) -> dict:
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
        render_text(["model", "shape", "emb M", "blocks M", "other M", "total M"], params),
        render_text(["model", "dtype", "batch", "seq", "median ms", "p90 ms", "seq/s", "tok/s", "speedup"], cells),
    ])


def _short(name: str) -> str:
    """The last two components of a path: enough to tell run directories apart in a table."""
    return "/".join(Path(name).parts[-2:])
