"""Why a student works: linear CKA between every student and every teacher layer, the
MiniLMv2 relation agreement (KL of the Q-Q, K-K, V-V relations) for every layer pair, the
attention-distribution KL per head, and the agreement of pooled sentence embeddings, on
held-out text. Writes analysis.json and heatmaps (PNG, SVG); `tadistill report` shows them."""

from __future__ import annotations

import argparse
import json

from tadistill.commands.arguments import positive

HELP = "layer-wise comparison of a student with its teacher: CKA, relation and attention KL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("student", metavar="STUDENT", help="the student's model directory")
    parser.add_argument("--teacher", required=True, metavar="MODEL", help="the teacher (model directory or hub id)")
    parser.add_argument("--data", required=True, action="append", metavar="SOURCE",
                        help="held-out text (text files one document a line, jsonl, parquet, docstrings:heldout); repeatable")
    parser.add_argument("--out", metavar="DIR", help="where analysis.json and the plots go (default: RUN/analysis)")
    parser.add_argument("--max-texts", type=positive(int), default=512, help="texts used (default: 512)")
    parser.add_argument("--max-seq-length", type=positive(int), default=128, help="tokens per text (default: 128)")
    parser.add_argument("--batch-size", type=positive(int), default=16, help="texts per forward (default: 16)")
    parser.add_argument("--relation-heads", type=positive(int),
                        help="relation heads for the Q/K/V relations (default: the common divisor of the head counts)")
    parser.add_argument("--heads", type=positive(int), help="heads the attention KL splits into (default: likewise)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from tadistill.recipes.analyze import default_out, run_analysis

    # loading a masked-LM checkpoint as a bare encoder reports the LM head as unused: expected here
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    result = run_analysis(args.student, args.teacher, args.data, args.out, max_texts=args.max_texts,
                          max_seq_length=args.max_seq_length, batch_size=args.batch_size,
                          relation_heads=args.relation_heads, heads=args.heads, device=args.device)
    out = args.out or default_out(args.student)
    summary = {key: result[key] for key in ("texts", "tokens", "closest_teacher_layer", "embedding_agreement")}
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}/analysis.json and cka, relation_kl, attention_kl_per_head (.png, .svg)")
    return 0
