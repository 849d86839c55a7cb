"""Turn distillation runs and studies into report.md with tables (also as CSV, JSON and
LaTeX) and plots: scores per task and the GLUE / XNLI averages, the share of the teacher's
score kept, parameters, latency and speedup, tokens and training time, score against
latency with its Pareto frontier, training curves, and the layer analysis when one exists.
The students' model cards (README.md) are refreshed with the scores and latency found."""

from __future__ import annotations

import argparse

HELP = "tables and plots over runs and studies (report.md, CSV, JSON, LaTeX, PNG/SVG)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="RUNS_OR_STUDY",
                        help="study directories (study.json), run directories or student directories")
    parser.add_argument("--out", metavar="DIR", help="where the report goes (default: STUDY/report for one study, else ./report)")
    parser.add_argument("--baseline", metavar="MODEL",
                        help="the teacher's evaluations: a directory with results.json files, or MODEL whose "
                             "`tadistill evaluate` output is MODEL-eval/ (default: a study's teacher)")
    parser.add_argument("--no-cards", action="store_true", help="leave the students' README.md model cards alone")


def run(args: argparse.Namespace) -> int:
    from tadistill.recipes.report import run_report

    report = run_report(args.paths, out=args.out, baseline=args.baseline, cards=not args.no_cards)
    print(report.read_text())
    print(f"wrote {report} (tables in {report.parent / 'tables'}, plots in {report.parent / 'plots'})")
    return 0
