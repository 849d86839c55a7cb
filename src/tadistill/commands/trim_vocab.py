"""Trim a student's vocabulary to the tokens a corpus uses (plus every special token): the
embedding matrix (and a masked-LM decoder) keeps only those rows, and the fast tokenizer
(tokenizer.json: WordPiece or Unigram) is rewritten so that AutoTokenizer loads the trimmed
model without tadistill. Texts made only of kept tokens give identical ids (renumbered),
decoded text and hidden states, which is checked before anything is written; text with
other tokens now meets [UNK]. See docs/export.md for what that costs a multilingual student."""

from __future__ import annotations

import argparse

from tadistill.commands.arguments import positive

HELP = "keep only the tokens a corpus uses: smaller embeddings, tokenizer rewritten"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("student", metavar="STUDENT", help="the student's model directory")
    parser.add_argument("--data", action="append", required=True, metavar="SOURCE",
                        help="corpus, one document a line: files, globs, jsonl/parquet, docstrings:train; repeatable")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--keep", type=positive(int), metavar="N", help="keep the N most frequent tokens (specials included)")
    group.add_argument("--min-count", type=positive(int), metavar="C", help="keep every token seen at least C times")
    parser.add_argument("--max-documents", type=positive(int), help="read at most this many documents (default: all)")
    parser.add_argument("--output", metavar="DIR", help="trimmed model directory (default: STUDENT-trimmed)")


def run(args: argparse.Namespace) -> int:
    import datasets
    from transformers.utils import logging as hf_logging

    from tadistill.recipes.trim_vocab import format_result, trim_vocab

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    result = trim_vocab(args.student, args.data, keep=args.keep, min_count=args.min_count, output=args.output,
                        max_documents=args.max_documents)
    print(format_result(result))
    print(f"wrote {result['output']}")
    return 0
