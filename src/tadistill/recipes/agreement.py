"""The agreement recipe: how closely a student's sentence embeddings agree with its teacher's
on held-out text, and how well they rank scored text pairs (zero-shot similarity).

Read top to bottom: read the texts (one a line) and the scored pairs, load both encoders,
embed with the teacher's pooling (its sentence-transformers Pooling config, else mean),
take the teacher's embeddings from the cache when it holds exactly these texts, compare,
write the JSON. A study runs this for every cell with one cache for the teacher.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tadistill.errors import DataError
from tadistill.evaluation.embeddings import agreement, embed, pair_similarity, pooling_mode
from tadistill.evaluation.file_tasks import read_scored_pairs
from tadistill.measure import load_encoder
from tadistill.models import load_model_config
from tadistill.paths import resolve_path


@dataclass(frozen=True)
class ScoredPairs:
    """A file of text pairs with a similarity score each, and its column names."""

    path: str
    text: str = "sentence1"
    text_pair: str = "sentence2"
    score: str = "score"


def evaluate_agreement(
    student: str,
    teacher: str,
    texts_path: str,
    *,
    pairs: list[ScoredPairs] = (),
    max_texts: int = 1000,
    max_seq_length: int = 128,
    teacher_cache: str | Path | None = None,
    output: str | Path | None = None,
) -> dict:
    """Agreement of `student` with `teacher` on the first `max_texts` lines of `texts_path`,
    and each model's Spearman on every scored-pair file; written to `output` when given."""
    texts = _read_texts(resolve_path(texts_path), max_texts)
    scored = {Path(p.path).stem: (p, read_scored_pairs(resolve_path(p.path), p.text, p.text_pair, p.score)) for p in pairs}
    for model in (student, teacher):
        load_model_config(model)  # one-line errors for a wrong path before any model is built
    pooling = pooling_mode(teacher) if Path(teacher).is_dir() else "mean"

    @functools.cache  # each model loaded once, and the teacher not at all when its embeddings are cached
    def encoder(model_dir: str):
        from transformers import AutoTokenizer

        return load_encoder(model_dir, "cpu"), AutoTokenizer.from_pretrained(model_dir)

    def embeddings(model_dir: str, lines: list[str]) -> torch.Tensor:
        model, tokenizer = encoder(model_dir)
        return embed(model, tokenizer, lines, max_seq_length=max_seq_length, pooling=pooling)

    teacher_emb = _cached(teacher_cache, teacher, texts, pooling, max_seq_length, lambda: embeddings(teacher, texts))
    result = {"texts": len(texts), "pooling": pooling, **agreement(teacher_emb, embeddings(student, texts)), "similarity": {}}
    for name, (spec, (first, second, scores)) in scored.items():
        result["similarity"][name] = {
            "pairs": len(scores),
            "spearman": pair_similarity(embeddings(student, first), embeddings(student, second), scores),
            "teacher_spearman": pair_similarity(embeddings(teacher, first), embeddings(teacher, second), scores),
        }
    if output is not None:
        _write_json(Path(output), result)
    return result


def _read_texts(path: str, max_texts: int) -> list[str]:
    if not Path(path).is_file():
        raise DataError(f"--texts {path}: no such file (one text a line)")
    texts = [line.strip() for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if len(texts) < 3:
        raise DataError(f"{path}: {len(texts)} non-empty line(s); agreement needs at least 3 texts, one a line")
    return texts[:max_texts]


def _cached(cache: str | Path | None, teacher: str, texts: list[str], pooling: str, max_seq_length: int, compute):
    """The teacher's embeddings from `cache` when it was written for these texts and settings,
    else computed (and written there, atomically)."""
    key = hashlib.sha256(json.dumps([teacher, texts, pooling, max_seq_length]).encode()).hexdigest()
    if cache is not None and Path(cache).is_file():
        from safetensors import safe_open

        with safe_open(str(cache), framework="pt") as stored:
            if (stored.metadata() or {}).get("key") == key:
                return load_file(str(cache))["embeddings"]
    embeddings = compute()
    if cache is not None:
        cache = Path(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.partial-{os.getpid()}")
        save_file({"embeddings": embeddings.contiguous()}, str(partial), metadata={"key": key, "teacher": teacher})
        partial.replace(cache)
    return embeddings


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(path)
