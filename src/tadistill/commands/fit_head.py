"""Fit a masked-LM head on a frozen teacher that ships without one (sentence-embedding
checkpoints), so that `od` can distil it; saves a plain *ForMaskedLM directory and prints
the held-out MLM loss and top-1 accuracy before and after."""

from __future__ import annotations

import argparse

from tadistill.commands.arguments import positive

HELP = "fit a masked-LM head on a frozen teacher that has none, for `od`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("teacher", metavar="TEACHER", help="the teacher (model directory or hub id)")
    parser.add_argument("--data", action="append", required=True, metavar="SOURCE",
                        help="corpus file, glob or dataset (as a run config's data.sources); repeatable")
    parser.add_argument("--documents", choices=("blank-line", "line"), default="blank-line",
                        help="text files: documents separated by blank lines, or one a line (default: blank-line)")
    parser.add_argument("--output", required=True, metavar="DIR", help="where the teacher with its head is written")
    parser.add_argument("--steps", type=positive(int), default=300, help="training steps (default: 300)")
    parser.add_argument("--learning-rate", type=positive(float), default=1e-3, help="peak learning rate (default: 1e-3)")
    parser.add_argument("--batch-size", type=positive(int), default=32, help="blocks per step (default: 32)")
    parser.add_argument("--max-seq-length", type=positive(int), default=128, help="tokens per block (default: 128)")
    parser.add_argument("--precision", choices=("auto", "bf16", "no"), default="auto",
                        help="autocast of the frozen encoder's forward; auto is bf16 where the CPU has "
                             "bf16 matrix kernels, else no (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="head init, held-out split and masks (default: 0)")


def run(args: argparse.Namespace) -> int:
    from tadistill.recipes.fit_head import fit_head

    fit_head(args.teacher, args.data, args.output, documents=args.documents, steps=args.steps,
             learning_rate=args.learning_rate, batch_size=args.batch_size, max_seq_length=args.max_seq_length,
             precision=args.precision, seed=args.seed)
    return 0
