"""Measure encoders: median and p90 latency, throughput, parameter counts, size on disk and
the speedup against a teacher, for every combination of batch size, sequence length and dtype,
under PyTorch and/or onnxruntime.

Models are timed as bare encoders (no LM head) on random token ids with a full attention
mask. --runtime onnxruntime times each model's `tadistill export` graphs (MODEL/onnx/ or
MODEL itself: model.onnx in fp32, model_int8.onnx in int8) beside the PyTorch rows; the
speedup of those is against the teacher under PyTorch fp32. Prints a table and writes the
numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tadistill.commands.arguments import at_least, choice_list, number_list

HELP = "latency, throughput, parameters and speedup of students against a teacher"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="model directories or Hugging Face ids")
    parser.add_argument("--teacher", metavar="MODEL", help="reference model for the speedup column")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=number_list(int), default=(1, 32), help="batch sizes (default: 1,32)")
    parser.add_argument("--seq", type=number_list(int), default=(128,), help="sequence lengths (default: 128)")
    parser.add_argument(
        "--dtype", type=choice_list(("fp32", "bf16")), default=("fp32",),
        help="fp32 and/or bf16; bf16 is autocast on cpu, bf16 weights on cuda (default: fp32)",
    )
    parser.add_argument(
        "--runtime", type=choice_list(("torch", "onnxruntime")), default=("torch",),
        help="torch and/or onnxruntime (the exported fp32 and int8 graphs; cpu) (default: torch)",
    )
    parser.add_argument("--threads", type=at_least(1), help="CPU threads of torch and onnxruntime (default: torch's choice)")
    parser.add_argument("--warmup", type=at_least(0), default=3, help="untimed passes per cell (default: 3)")
    parser.add_argument("--iters", type=at_least(1), default=20, help="timed passes per cell (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random token ids (default: 0)")
    parser.add_argument("--output", type=Path, default=Path("bench.json"), help="JSON file (default: bench.json)")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from tadistill.recipes.bench import format_report, run_bench

    # Loading a masked-LM checkpoint as a bare encoder reports the LM head as unused: expected here.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_bench(
        args.models,
        teacher=args.teacher,
        batches=args.batch,
        seqs=args.seq,
        dtypes=args.dtype,
        device=args.device,
        warmup=args.warmup,
        iters=args.iters,
        seed=args.seed,
        runtimes=args.runtime,
    )
    print(format_report(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0
