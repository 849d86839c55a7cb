"""Evaluate a student's sentence embeddings: agreement with its teacher on held-out text (mean
cosine, Spearman of pairwise similarities, nearest-neighbour agreement) and, with --pairs,
zero-shot similarity on files of scored text pairs (Spearman, for student and teacher).
Embeddings use the teacher's pooling (its sentence-transformers config, else mean pooling)."""

from __future__ import annotations

import argparse
import json

from tadistill.commands.arguments import positive

HELP = "agreement of a student's sentence embeddings with its teacher's, and zero-shot similarity"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("student", metavar="STUDENT", help="the student's model directory")
    parser.add_argument("--teacher", required=True, metavar="MODEL", help="the teacher (model directory or hub id)")
    parser.add_argument("--texts", required=True, metavar="FILE",
                        help="held-out texts, one a line (or docstrings:heldout, the offline corpus)")
    parser.add_argument("--max-texts", type=positive(int), default=1000, help="texts used (default: 1000)")
    parser.add_argument("--pairs", action="append", default=[], metavar="FILE",
                        help="scored text pairs (csv/tsv/jsonl/parquet); repeatable")
    parser.add_argument("--pair-columns", default="sentence1,sentence2,score", metavar="A,B,SCORE",
                        help="the pair files' columns (default: sentence1,sentence2,score)")
    parser.add_argument("--max-seq-length", type=positive(int), default=128, help="tokens per text (default: 128)")
    parser.add_argument("--teacher-cache", metavar="FILE", help="reuse the teacher's embeddings across students")
    parser.add_argument("--output", metavar="FILE", help="write the numbers as JSON")


def run(args: argparse.Namespace) -> int:
    from tadistill.errors import ConfigError, Problem
    from tadistill.recipes.agreement import ScoredPairs, evaluate_agreement

    columns = args.pair_columns.split(",")
    if len(columns) != 3:
        raise ConfigError([Problem("--pair-columns", args.pair_columns, "give three columns: first text, second text, score")])
    result = evaluate_agreement(
        args.student, args.teacher, args.texts,
        pairs=[ScoredPairs(path, *columns) for path in args.pairs], max_texts=args.max_texts,
        max_seq_length=args.max_seq_length, teacher_cache=args.teacher_cache, output=args.output,
    )
    print(json.dumps(result, indent=2))
    return 0
