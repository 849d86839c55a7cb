"""Run a study: every method x student cell distilled from the study's teacher, fine-tuned on
its tasks, compared with the teacher's embeddings and benchmarked, each cell an ordinary run
directory under the study directory, with a manifest (study.json) and a progress view.

Re-running the same command continues: finished steps are skipped, an interrupted
distillation resumes from its checkpoint, failed cells are retried. Exit code 0 when every
selected cell is done, 1 otherwise. --launcher slurm submits each cell as a job (submitit);
run the command again to collect and resubmit. See docs/study.md."""

from __future__ import annotations

import argparse

HELP = "run a comparison: methods x students -> distil, evaluate, bench (resumable; local or slurm)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tadistill.recipes.study import LAUNCHERS

    parser.add_argument("study", metavar="STUDY.yaml", help="the study file (see configs/study/)")
    parser.add_argument("--output", metavar="DIR", help="the study directory (default: runs/study-<name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the study file, e.g. --set train.max_steps=100 (repeatable)")
    parser.add_argument("--cells", metavar="PATTERN", help="only the cells matching these globs, e.g. 'hs-*,*-6x384'")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local",
                        help="local: one step after another here; slurm: a submitit job per cell; "
                             "submitit-local: the job path, run on this machine (default: local)")
    parser.add_argument("--wait", action="store_true", help="with a job launcher: wait for the jobs to finish")


def run(args: argparse.Namespace) -> int:
    from tadistill.recipes.study import run_study
    from tadistill.study.launch import StudyInterrupted

    try:
        done = run_study(args.study, args.output, overrides=args.overrides, cells=args.cells,
                         launcher=args.launcher, wait=args.wait)
    except StudyInterrupted as stopped:
        print(f"tadistill study: {stopped}")
        return stopped.exit_code
    return 0 if done else 1
