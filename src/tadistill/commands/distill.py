"""Distil a student from a teacher on an unlabeled corpus, as the config says.

Runs on one CPU or GPU as is, and data-parallel under `accelerate launch` or `torchrun`.
The run directory gets the resolved config, metrics.jsonl, TensorBoard logs, resumable
checkpoints and `student/`, a plain Hugging Face model directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "distil a student from a teacher (resumable, multi-process via accelerate)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config YAML (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=100 (repeatable)")
    parser.add_argument("--output", type=Path, help="run directory (default: runs/<config file name>)")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue from the latest checkpoint of the run directory (auto) or from PATH")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume even though the config differs from the run's saved config")


def run(args: argparse.Namespace) -> int:
    from tadistill.recipes.distill import TrainingStopped, distill
    from tadistill.validation import checked_run_config

    config = checked_run_config(args.config, args.overrides)
    output = args.output or Path("runs") / Path(args.config).stem
    try:
        distill(config, output, resume=args.resume, allow_config_change=args.allow_config_change)
    except TrainingStopped as stopped:
        # one write per line: every rank prints this to the same pipe, and print's separate
        # write of the newline let two ranks' lines run together
        sys.stdout.write(f"tadistill distill: {stopped}\n")
        sys.stdout.flush()
        return stopped.exit_code
    return 0
