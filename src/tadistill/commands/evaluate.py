"""Score a model on GLUE or XNLI the way the distillation papers do.

Fine-tunes once per learning rate x epochs x seed for each task, picks each task's best
learning rate by its median dev score over seeds, and writes results.json and a
leaderboard-style results.md. Rerunning the same command skips the finished runs.
"""

from __future__ import annotations

import argparse

from tadistill.commands.arguments import number_list, positive
from tadistill.commands.finetune import add_training_arguments

HELP = "fine-tune MODEL over a learning-rate x seed grid on GLUE or XNLI and tabulate the scores"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--suite", required=True, choices=("glue", "xnli"))
    parser.add_argument(
        "--tasks", help="comma-separated GLUE tasks (default: mnli,qqp,qnli,sst2,cola,stsb,mrpc,rte; WNLI on request)"
    )
    parser.add_argument("--lrs", type=number_list(float), default=(1e-5, 2e-5, 3e-5, 5e-5),
                        help="learning rates to try (default: 1e-5,2e-5,3e-5,5e-5)")
    parser.add_argument("--epochs", type=number_list(int), default=(3,), help="epoch counts to try (default: 3)")
    parser.add_argument(
        "--seeds", type=positive(int), default=3, help="runs per setting, seeds 42, 43, ... (default: 3)"
    )
    parser.add_argument("--output", metavar="DIR", help="where runs and results go (default: MODEL-eval/SUITE)")


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from tadistill.recipes.sweep import markdown_table, run_sweep

    output = args.output or f"{args.model.rstrip('/')}-eval/{args.suite}"
    results = run_sweep(
        args.model, args.suite, output,
        tasks=args.tasks.split(",") if args.tasks else None,
        data_dir=args.data_dir, lrs=args.lrs, epochs=args.epochs, seeds=args.seeds,
        batch_size=args.batch_size, max_seq_length=args.max_seq_length, precision=args.precision,
    )
    PartialState().print(markdown_table(results) + f"\nwrote {output}/results.json and results.md")
    return 0
