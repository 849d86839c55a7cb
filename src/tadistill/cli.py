"""The `tadistill` command line: parses, calls a recipe, prints user errors in one place.

Each subcommand lives in `tadistill.commands.<name>` with `HELP`, `add_arguments(parser)`
and `run(args) -> int`. Command modules import torch & co. inside `run`, so `--help`
stays fast.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from tadistill import __version__
from tadistill.allocator import tune_cpu_allocator
from tadistill.errors import TadistillError

COMMANDS = {
    "validate": "tadistill.commands.validate",
    "distill": "tadistill.commands.distill",
    "bench": "tadistill.commands.bench",
    "finetune": "tadistill.commands.finetune",
    "evaluate": "tadistill.commands.evaluate",
    "quickstart": "tadistill.commands.quickstart",
    "agreement": "tadistill.commands.agreement",
    "study": "tadistill.commands.study",
    "fit-head": "tadistill.commands.fit_head",
    "export": "tadistill.commands.export",
    "trim-vocab": "tadistill.commands.trim_vocab",
    "report": "tadistill.commands.report",
    "analyze": "tadistill.commands.analyze",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tadistill",
        description="Task-agnostic distillation of Transformer language models (OD, HS, MHA transfer).",
    )
    parser.add_argument("--version", action="version", version=f"tadistill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_cpu_allocator()  # freed activations stay in the heap between steps (TADISTILL_MALLOC=default: off)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except TadistillError as error:
        print(f"tadistill {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tadistill {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        # leave the process group, then free what the command built (a DDP model holds its gloo
        # group) while the interpreter is alive: a gloo worker thread that frees a tensor during
        # interpreter finalisation cannot take the GIL and aborts the process ("terminate called
        # without an active exception"), and a group destroyed only by the collector, which holds
        # the GIL, can wait forever on a worker thread that needs it (seen once in CI)
        distributed = getattr(sys.modules.get("torch"), "distributed", None)
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            distributed.destroy_process_group()
        gc.collect()


if __name__ == "__main__":
    sys.exit(main())
