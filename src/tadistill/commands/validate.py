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
    from tadistill.config import load_config
    from tadistill.errors import ConfigError
    from tadistill.validation import validate_run

    config = load_config(args.config, args.overrides)
    problems = validate_run(config)
    if problems:
        raise ConfigError(problems, source=args.config)
    print(f"{args.config}: OK ({len(config.objectives)} objective(s): {', '.join(o.name for o in config.objectives)})")
    return 0
