"""The bench recipe: latency, throughput, parameters, size on disk and speedup of encoders
against a teacher, under PyTorch and onnxruntime.

Read top to bottom: find each model's ONNX export when onnxruntime is asked for, then for
each PyTorch dtype load every model as a bare encoder (the fp32 pass also takes the
onnxruntime graphs, fp32 and int8, so that they share its cells), time each one in every
(batch, sequence length) cell on the same random token ids, and compute the speedup against
the teacher's PyTorch row of the same dtype (fp32 for the onnxruntime rows). Cells are the
outer loop and models the inner one: on a noisy machine a slow spell then hits every model
of a cell alike instead of one whole model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig

from tadistill.arch import adapter_for
from tadistill.errors import ConfigError, ModelError, Problem
from tadistill.measure import count_parameters, load_encoder, precision, time_cells
from tadistill.tables import render_text

RUNTIMES = ("torch", "onnxruntime")
# the files `tadistill export` writes, by the dtype they run in
ONNX_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


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
    runtimes: tuple[str, ...] = ("torch",),
) -> dict:
    """Time every model in every (batch, seq, dtype) cell and runtime; speedups are against `teacher`.

    Returns a JSON-ready dict: the settings, `models` (name -> shape and parameter counts) and
    `cells` (one row per model, runtime, dtype and cell).
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"--device cuda: CUDA is not available to this torch ({torch.__version__})")
    names = list(dict.fromkeys(([teacher] if teacher else []) + list(models)))
    graphs = _onnx_graphs(names, teacher, device) if "onnxruntime" in runtimes else {}
    # a teacher is timed under PyTorch even for an onnxruntime-only bench: it is the speedup's reference
    torch_names = [n for n in names if _has_torch_weights(n) and ("torch" in runtimes or n == teacher)]
    torch_dtypes = list(dtypes) if "torch" in runtimes else ["fp32"]
    if graphs and "fp32" not in torch_dtypes:
        torch_dtypes.append("fp32")  # the onnxruntime graphs are timed in the fp32 pass
    report = {
        "device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "runtimes": list(runtimes), "warmup": warmup, "iters": iters, "seed": seed, "teacher": teacher,
        "models": {}, "cells": [],
    }
    for dtype in torch_dtypes:
        weight_dtype, autocast_dtype = precision(device, dtype)
        encoders, rows = {}, {}
        for name in torch_names:
            encoders[name] = load_encoder(name, device, weight_dtype)
            rows[name] = {"model": name, "runtime": "torch", "dtype": dtype, "disk_mb": _torch_disk_mb(name)}
            _check_lengths(name, encoders[name].config, seqs)
            report["models"].setdefault(name, _describe(encoders[name]))
        if dtype == "fp32":
            for (name, graph_dtype), path in graphs.items():
                label = f"{name} [onnxruntime {graph_dtype}]"
                encoders[label] = _onnx_model(path)
                rows[label] = {"model": name, "runtime": "onnxruntime", "dtype": graph_dtype, "disk_mb": path.stat().st_size / 1e6}
                _check_lengths(name, encoders[label].config, seqs)
                report["models"].setdefault(name, _describe_config(encoders[label].config))
        for cell in time_cells(encoders, batches, seqs, autocast_dtype, warmup=warmup, iters=iters, seed=seed):
            reference = cell.get(teacher)
            for label, row in cell.items():
                row.update(rows[label])
                row["speedup"] = reference["median_ms"] / row["median_ms"] if reference else None
            report["cells"].extend(row for label, row in cell.items() if _shown(rows[label], runtimes, dtypes))
        del encoders  # before the next dtype's copies are loaded
    return report


def _onnx_graphs(names: list[str], teacher: str | None, device: str) -> dict[tuple[str, str], Path]:
    """(model, "fp32"/"int8") -> ONNX file, from each model's export: the model directory
    itself or its `onnx/` folder. Every student must have one; the teacher may not."""
    if device != "cpu":
        raise ConfigError([Problem("--device", device, "onnxruntime is timed on cpu (its CPU execution provider)")])
    graphs, problems = {}, []
    for name in names:
        folder = next((f for f in (Path(name), Path(name) / "onnx") if (f / ONNX_FILES["fp32"]).is_file()), None)
        if folder is None:
            if name != teacher:
                problems.append(Problem("MODEL", name, f"no ONNX export in it or in {Path(name) / 'onnx'}; "
                                        f"run: tadistill export {name} --quantize int8"))
            continue
        graphs.update({(name, dtype): folder / file for dtype, file in ONNX_FILES.items() if (folder / file).is_file()})
    if problems:
        raise ConfigError(problems)
    return graphs


def _onnx_model(path: Path):
    from tadistill.deploy.onnx_graph import OnnxModel

    return OnnxModel(path, config=AutoConfig.from_pretrained(path.parent), threads=torch.get_num_threads())


def _shown(row: dict, runtimes: tuple[str, ...], dtypes: tuple[str, ...]) -> bool:
    """Whether a timed row was asked for (a teacher's or an fp32 reference row may not have been)."""
    if row["runtime"] == "onnxruntime":
        return True
    return "torch" in runtimes and row["dtype"] in dtypes or ("torch" not in runtimes and row["dtype"] == "fp32")


def _has_torch_weights(name: str) -> bool:
    """False only for an export directory: ONNX graphs and no PyTorch weight files."""
    path = Path(name)
    if not (path / ONNX_FILES["fp32"]).is_file():
        return True  # a model directory or hub id (load_encoder says what is wrong with anything else)
    return any(f.suffix in _WEIGHT_SUFFIXES for f in path.iterdir())


def _torch_disk_mb(name: str) -> float | None:
    path = Path(name)
    if not path.is_dir():
        return None  # a hub id: its size is the cache's business
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in _WEIGHT_SUFFIXES) / 1e6


def _check_lengths(name: str, config, seqs) -> None:
    limit = adapter_for(config).max_positions(config)
    if max(seqs) > limit:
        raise ModelError(f"--seq {max(seqs)} is longer than {name} supports ({limit} tokens)")


def _describe(model: torch.nn.Module) -> dict:
    return {"shape": str(adapter_for(model).shape(model.config)), "params": count_parameters(model)}


def _describe_config(config) -> dict:
    return {"shape": str(adapter_for(config).shape(config)), "params": None}


def format_report(report: dict) -> str:
    """Two plain-text tables: parameters per model, then latency, throughput and size per cell."""
    param_groups = ("embeddings", "blocks", "other", "total")
    params = [
        [_short(name), info["shape"],
         *(f"{info['params'][group] / 1e6:.2f}" if info["params"] else "-" for group in param_groups)]
        for name, info in report["models"].items()
    ]
    cells = [
        [
            _short(row["model"]), row["runtime"], row["dtype"], row["batch"], row["seq"],
            f"{row['median_ms']:.2f}", f"{row['p90_ms']:.2f}",
            f"{row['sequences_per_s']:.1f}", f"{row['tokens_per_s']:.0f}",
            "-" if row["speedup"] is None else f"{row['speedup']:.2f}x",
            "-" if row["disk_mb"] is None else f"{row['disk_mb']:.1f}",
        ]
        for row in report["cells"]
    ]
    return "\n\n".join([
        render_text(["model", "shape", "emb M", "blocks M", "other M", "total M"], params),
        render_text(["model", "runtime", "dtype", "batch", "seq", "median ms", "p90 ms", "seq/s", "tok/s",
                     "speedup", "disk MB"], cells),
    ])


def _short(name: str) -> str:
    """The last two components of a path: enough to tell run directories apart in a table."""
    return "/".join(Path(name).parts[-2:])
