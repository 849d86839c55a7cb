"""Check a distillation config or a study without running anything: the config's structure,
the teacher's config and tokenizer, the student shape and initialisation, the objectives,
the data sources and the training budget; for a study, every cell and its evaluation.
Every problem is listed at once; exit code 2."""

from __future__ import annotations

import argparse

HELP = "check a distillation config or a study and list every problem at once"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config or study YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=100 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from tadistill.study.config import is_study

    if is_study(args.config):
        from tadistill.errors import ConfigError
        from tadistill.study.checks import check_study
        from tadistill.study.config import read_study_config

        study, problems = read_study_config(args.config, args.overrides)
        check = check_study(study)
        problems += check.problems
        if problems:
            raise ConfigError(problems, source=args.config)
        print(f"{args.config}: OK (study {study.name}: {len(check.cells)} cells, "
              f"{len(study.evaluation.tasks)} task(s))")
        return 0
    from tadistill.validation import checked_run_config

    config = checked_run_config(args.config, args.overrides)
    print(f"{args.config}: OK ({len(config.objectives)} objective(s): {', '.join(o.name for o in config.objectives)})")
    return 0
