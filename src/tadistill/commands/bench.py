"""Measure encoders: median and p90 latency, throughput, parameter counts and the speedup
against a teacher, for every combination of batch size, sequence length and dtype.

Models are timed as bare encoders (no LM head) on random token ids with a full attention
mask. Prints a table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "latency, throughput, parameters and speedup of students against a teacher"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,32") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 1")
    return values


def _dtypes(text: str) -> tuple[str, ...]:
    from tadistill.bench import DTYPES

    values = tuple(text.split(","))
    unknown = [v for v in values if v not in DTYPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"{','.join(unknown)}: unknown dtype; choose from {','.join(DTYPES)}")
    return values


def _at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text}: must be at least {minimum}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="model directories or Hugging Face ids")
    parser.add_argument("--teacher", metavar="MODEL", help="reference model for the speedup column")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=_ints, default=(1, 32), help="batch sizes (default: 1,32)")
    parser.add_argument("--seq", type=_ints, default=(128,), help="sequence lengths (default: 128)")
    parser.add_argument(
        "--dtype", type=_dtypes, default=("fp32",),
        help="fp32 and/or bf16; bf16 is autocast on cpu, bf16 weights on cuda (default: fp32)",
    )
    parser.add_argument("--threads", type=_at_least(1), help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--warmup", type=_at_least(0), default=3, help="untimed passes per cell (default: 3)")
    parser.add_argument("--iters", type=_at_least(1), default=20, help="timed passes per cell (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random token ids (default: 0)")
    parser.add_argument("--output", type=Path, default=Path("bench.json"), help="JSON file (default: bench.json)")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from tadistill.bench import format_report, run_bench

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
    )
    print(format_report(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0
