"""Score a model on GLUE, XNLI or tasks of your own files the way the distillation papers do.

Fine-tunes once per learning rate x epochs x seed for each task, picks each task's best
learning rate by its median dev score over seeds, and writes results.json and a
leaderboard-style results.md. Rerunning the same command skips the finished runs.
"""

from __future__ import annotations

import argparse

from tadistill.commands.arguments import number_list, positive
from tadistill.commands.finetune import add_training_arguments
from tadistill.errors import ConfigError, Problem

HELP = "fine-tune MODEL over a learning-rate x seed grid on GLUE, XNLI or your own tasks and tabulate the scores"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", choices=("glue", "xnli"))
    which.add_argument("--task", dest="task_files", action="append", metavar="TASK.yaml",
                       help="a task defined by your files (see docs/finetune.md); repeatable")
    parser.add_argument(
        "--tasks", help="with --suite glue: comma-separated tasks (default: mnli,qqp,qnli,sst2,cola,stsb,mrpc,rte; WNLI on request)"
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

    from tadistill.evaluation.file_tasks import load_file_task, read_file_task
    from tadistill.evaluation.layouts import load_task_data
    from tadistill.recipes.sweep import markdown_table, run_sweep, suite_tasks

    if args.task_files:
        if args.tasks:
            raise ConfigError([Problem("--tasks", args.tasks, "selects GLUE tasks of --suite glue; with --task files leave it out")])
        loaded = dict(load_file_task(read_file_task(path)) for path in args.task_files)
        suite, tasks, data = "file", list(loaded), {task.name: task_data for task, task_data in loaded.items()}
        load_data = lambda task: data[task.name]  # noqa: E731
    else:
        suite, tasks = args.suite, suite_tasks(args.suite, args.tasks.split(",") if args.tasks else None)
        load_data = lambda task: load_task_data(task, args.data_dir)  # noqa: E731
    output = args.output or f"{args.model.rstrip('/')}-eval/{suite}"
    results = run_sweep(
        args.model, output, suite=suite, tasks=tasks, load_data=load_data, lrs=args.lrs, epochs=args.epochs,
        seeds=args.seeds, batch_size=args.batch_size, max_seq_length=args.max_seq_length, precision=args.precision,
    )
    PartialState().print(markdown_table(results) + f"\nwrote {output}/results.json and results.md")
    return 0
