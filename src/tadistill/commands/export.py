"""Export a student to ONNX for onnxruntime, with dynamic batch and sequence axes, checked
against PyTorch on real text: the largest |difference| of the hidden states over non-padding
tokens and the cosine of the pooled sentence embeddings (a mismatch over the tolerance fails
the export). --quantize int8 adds a dynamically quantised graph and reports its deviation
from the fp32 one. With --task, STUDENT is a fine-tuned classifier (`tadistill finetune`'s
output): its logits are exported and the task is scored with PyTorch, fp32 and int8 ONNX.
Writes model.onnx (model_int8.onnx), the config, the tokenizer and export.json to --output."""

from __future__ import annotations

import argparse
from pathlib import Path

from tadistill.commands.arguments import positive

HELP = "export a student to ONNX (optionally int8), parity-checked against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("student", metavar="STUDENT", help="the student's model directory")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="(default: onnx)")
    parser.add_argument("--quantize", choices=("int8",), help="also write a dynamically quantised int8 graph")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 14-20 (default: 17)")
    parser.add_argument("--output", metavar="DIR", help="export directory (default: STUDENT/onnx)")
    parser.add_argument("--texts", metavar="FILE",
                        help="texts of the parity check, one a line (default: a few built-in sentences)")
    parser.add_argument("--max-texts", type=positive(int), default=64, help="texts used from --texts (default: 64)")
    parser.add_argument("--task", help="a GLUE task or a task file (TASK.yaml): score the fine-tuned classifier")
    parser.add_argument("--data-dir", metavar="DIR", help="local GLUE data for --task (default: the hub)")
    parser.add_argument("--max-task-examples", type=positive(int), help="examples per eval set of --task (default: all)")
    parser.add_argument("--max-seq-length", type=positive(int), default=128, help="tokens per text (default: 128)")
    parser.add_argument("--atol", type=positive(float), default=1e-3,
                        help="largest |difference| of hidden states (logits) allowed (default: 1e-3)")
    parser.add_argument("--min-cosine", type=positive(float), default=0.9999,
                        help="smallest cosine of pooled embeddings allowed (default: 0.9999)")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from tadistill.errors import DataError
    from tadistill.paths import resolve_path
    from tadistill.recipes.export import REPORT_FILE, export, format_report

    hf_logging.set_verbosity_error()  # an LM head left unused by the bare encoder is expected
    hf_logging.disable_progress_bar()
    texts = None
    if args.texts:
        path = Path(resolve_path(args.texts))
        if not path.is_file():
            raise DataError(f"--texts {args.texts}: no such file (one text a line)")
        texts = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if not texts:
            raise DataError(f"--texts {args.texts}: no non-empty line")
        texts = texts[: args.max_texts]
    report = export(
        args.student, output=args.output, quantize=args.quantize, opset=args.opset, texts=texts,
        task=args.task, data_dir=args.data_dir, max_task_examples=args.max_task_examples,
        max_seq_length=args.max_seq_length, atol=args.atol, min_cosine=args.min_cosine,
    )
    print(format_report(report))
    output = args.output or str(Path(args.student) / "onnx")
    print(f"\nwrote {output} ({', '.join(report['files'].values())}, {REPORT_FILE})")
    return 0
