"""Check a distillation config without running anything: the config's structure, the
teacher's config and tokenizer, the student shape and initialisation, the objectives,
the data sources and the training budget. Every problem is listed at once; exit code 2."""

from __future__ import annotations

import argparse

HELP = "check a distillation config and list every problem at once"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=100 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from tadistill.validation import checked_run_config

    config = checked_run_config(args.config, args.overrides)
    print(f"{args.config}: OK ({len(config.objectives)} objective(s): {', '.join(o.name for o in config.objectives)})")
    return 0
