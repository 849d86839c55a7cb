"""Fine-tune a model on one task and report its scores: a GLUE task or XNLI (dev; XNLI dev
and test), or a task defined by your own files (a task YAML: see docs/finetune.md).

GLUE/XNLI data comes from the Hugging Face hub unless --data-dir points to a local copy in
the original layout (the GLUE download's glue_data/, or XNLI-1.0 + MultiNLI). Writes
metrics.json and the fine-tuned model to --output.
"""

from __future__ import annotations

import argparse

from tadistill.commands.arguments import positive

HELP = "fine-tune MODEL on a GLUE task, XNLI or a task of your own files and report its scores"


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments `finetune` and `evaluate` share."""
    parser.add_argument(
        "model", metavar="MODEL", help="local model directory: a tadistill student or a Hugging Face encoder"
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help="local data in the original layout (default: the Hugging Face hub)"
    )
    parser.add_argument("--batch-size", type=positive(int), default=32, help="per process (default: 32)")
    parser.add_argument("--max-seq-length", type=positive(int), default=128, help="tokens per example (default: 128)")
    parser.add_argument(
        "--precision", choices=("auto", "bf16", "fp16", "no"), default="auto",
        help="mixed precision; auto is bf16 where the device has bf16 matrix kernels, else no (default: auto)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tadistill.evaluation.tasks import TASKS

    add_training_arguments(parser)
    parser.add_argument("--task", required=True, help=f"one of {', '.join(TASKS.names())}, or a task file (TASK.yaml)")
    parser.add_argument("--lr", type=positive(float), default=2e-5, help="peak learning rate (default: 2e-5)")
    parser.add_argument("--epochs", type=positive(int), default=3, help="(default: 3)")
    parser.add_argument("--seed", type=int, default=42, help="(default: 42)")
    parser.add_argument("--warmup-ratio", type=float, default=0.1, help="share of steps warming up (default: 0.1)")
    parser.add_argument(
        "--output", metavar="DIR", help="where metrics.json and the model go (default: MODEL-finetuned/TASK)"
    )
    parser.add_argument("--no-save-model", action="store_true", help="write only metrics.json")


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from tadistill.evaluation.file_tasks import is_task_file, load_file_task, read_file_task
    from tadistill.evaluation.layouts import load_task_data
    from tadistill.evaluation.tasks import get_task
    from tadistill.recipes.finetune import encode, finetune, load_tokenizer

    # cheapest checks first: the task's name (or task file), the model, then the data
    task_file = read_file_task(args.task) if is_task_file(args.task) else None
    task = None if task_file else get_task(args.task)
    tokenizer = load_tokenizer(args.model)
    if task_file:
        task, task_data = load_file_task(task_file)
    else:
        task_data = load_task_data(task, args.data_dir)
    output = args.output or f"{args.model.rstrip('/')}-finetuned/{task.name}"
    data = encode(task_data, tokenizer, args.max_seq_length)
    metrics = finetune(
        args.model, task, data, tokenizer, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
        seed=args.seed, warmup_ratio=args.warmup_ratio, precision=args.precision,
        output_dir=output, save_model=not args.no_save_model,
    )
    state = PartialState()
    for name, values in metrics.items():
        shown = ", ".join(f"{key} {100 * value:.2f}" for key, value in values.items() if key != "score")
        state.print(f"{task.name} {name}: {shown}")
    state.print(f"{task.name} score ({task.report_on}): {100 * metrics[task.report_on]['score']:.2f}")
    state.print(f"wrote {output}/metrics.json")
    return 0
