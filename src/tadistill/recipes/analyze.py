"""The analyze recipe: how a student's layers relate to its teacher's, on held-out text.

Read top to bottom: check the two models and the options (one-line errors before any
compute), read the texts, then per batch run both encoders once with every hidden state
and Q/K/V projection tapped, and accumulate linear CKA for every layer pair, the MiniLMv2
relation KLs (Q-Q, K-K, V-V) and the attention KL of every head for every layer pair;
then the agreement
of pooled sentence embeddings; write analysis.json and the heatmaps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from tadistill.arch import adapter_for
from tadistill.data.sources import read_documents
from tadistill.errors import ConfigError, DataError, Problem
from tadistill.evaluation.embeddings import agreement, embed, pooling_mode
from tadistill.measure import load_encoder
from tadistill.models import load_model_config, shape_of
from tadistill.paths import resolve_path
from tadistill.report import plots
from tadistill.report.analysis import RELATIONS, CKAStatistics, WeightedMean, attention_kls_per_head, relation_kls
from tadistill.taps import Tap, forward_taps


def run_analysis(
    student: str,
    teacher: str,
    data: list[str],
    out: str | Path | None = None,
    *,
    max_texts: int = 512,
    max_seq_length: int = 128,
    batch_size: int = 16,
    relation_heads: int | None = None,
    heads: int | None = None,
    device: str = "cpu",
) -> dict:
    """Analyse `student` against `teacher` on the first `max_texts` documents of `data`;
    write `analysis.json` and the plots to `out` (default: the run's analysis/)."""
    s_shape = shape_of(load_model_config(student))
    t_shape = shape_of(load_model_config(teacher))
    relation_heads = relation_heads or math.gcd(s_shape.heads, t_shape.heads)
    heads = heads or math.gcd(s_shape.heads, t_shape.heads)
    problems = [Problem(option, value, f"must divide both widths (student {s_shape.hidden}, teacher {t_shape.hidden})")
                for option, value in (("--relation-heads", relation_heads), ("--heads", heads))
                if s_shape.hidden % value or t_shape.hidden % value]
    if problems:
        raise ConfigError(problems)
    texts = read_texts(data, max_texts)
    out = Path(out) if out else default_out(student)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher)  # a student speaks its teacher's tokenizer
    models = {"student": load_encoder(student, device), "teacher": load_encoder(teacher, device)}
    shapes = {"student": s_shape, "teacher": t_shape}
    taps = {name: [Tap("hidden", i) for i in range(shape.layers + 1)]
            + [Tap(kind, i) for kind in ("query", "key", "value") for i in range(1, shape.layers + 1)]
            for name, shape in shapes.items()}
    pairs = [(s, t) for s in range(1, s_shape.layers + 1) for t in range(1, t_shape.layers + 1)]

    cka, kl = CKAStatistics(), WeightedMean()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=max_seq_length, return_tensors="pt").to(device)
            tapped = {name: forward_taps(model, taps[name], batch) for name, model in models.items()}
            mask = batch["attention_mask"].bool()
            tokens = float(mask.sum())
            hidden = {name: [tapped[name][Tap("hidden", i)][mask].float() for i in range(shapes[name].layers + 1)]
                      for name in models}  # each (valid tokens, d)
            cka.add(hidden["student"], hidden["teacher"])
            qkv = {name: {letter: {i: tapped[name][Tap(kind, i)].float() for i in range(1, shapes[name].layers + 1)}
                          for letter, kind in zip("qkv", ("query", "key", "value"))} for name in models}
            for key, value in relation_kls(qkv["student"], qkv["teacher"], batch["attention_mask"], relation_heads).items():
                kl.add(key, value, tokens)
            for s, t in pairs:
                per_head = attention_kls_per_head(qkv["student"]["q"][s], qkv["student"]["k"][s], qkv["teacher"]["q"][t],
                                                  qkv["teacher"]["k"][t], batch["attention_mask"], heads)
                for h, value in enumerate(per_head):
                    kl.add(("head", s, t, h), value, tokens)
        pooling = pooling_mode(teacher) if Path(teacher).is_dir() else "mean"
        embeddings = {name: embed(model, tokenizer, texts, max_seq_length=max_seq_length, pooling=pooling)
                      for name, model in models.items()}

    s_layers, t_layers = range(1, s_shape.layers + 1), range(1, t_shape.layers + 1)
    cka_matrix = cka.matrix()  # (L_S + 1, L_T + 1), layer 0 = embeddings
    relations = {r: [[kl.mean((r, s, t)) for t in t_layers] for s in s_layers] for r in RELATIONS}
    relations["mean"] = [[sum(relations[r][s][t] for r in RELATIONS) / len(RELATIONS) for t in range(t_shape.layers)]
                         for s in range(s_shape.layers)]
    result = {
        "student": str(student), "teacher": str(teacher), "texts": len(texts), "tokens": cka.count,
        "max_seq_length": max_seq_length, "student_layers": s_shape.layers, "teacher_layers": t_shape.layers,
        "relation_heads": relation_heads, "attention_heads": heads,
        "cka": cka_matrix,
        "relation_kl": relations,
        # [student block][teacher block][head], and its mean over the heads
        "attention_kl_per_head": [[[kl.mean(("head", s, t, h)) for h in range(heads)] for t in t_layers] for s in s_layers],
        "attention_kl": [[sum(kl.mean(("head", s, t, h)) for h in range(heads)) / heads for t in t_layers] for s in s_layers],
        "embedding_agreement": {"pooling": pooling, **agreement(embeddings["teacher"], embeddings["student"])},
        # which teacher layer each student block (1..L_S) resembles most, by each measure
        "closest_teacher_layer": {
            "cka": [max(range(t_shape.layers + 1), key=lambda t: cka_matrix[s][t]) for s in s_layers],
            "relation_kl": [1 + min(range(t_shape.layers), key=lambda t: relations["mean"][s - 1][t]) for s in s_layers],
        },
    }
    write_analysis(result, out)
    return result


def default_out(student: str) -> Path:
    """A run's student (RUN/student) is analysed into RUN/analysis; any other model into MODEL-analysis."""
    path = Path(student)
    if path.name == "student" and ((path.parent / "metrics.jsonl").is_file() or (path / "tadistill.json").is_file()):
        return path.parent / "analysis"
    return path.with_name(f"{path.name}-analysis")


def read_texts(sources: list[str], max_texts: int) -> list[str]:
    """The first `max_texts` documents of the sources (text files: one a line)."""
    texts: list[str] = []
    for source in sources:
        documents = read_documents(resolve_path(source), documents="line")
        texts += [row["text"] for row in documents.dataset.select(range(min(len(documents.dataset), max_texts - len(texts))))]
        if len(texts) >= max_texts:
            break
    if len(texts) < 3:
        raise DataError(f"--data {', '.join(sources)}: {len(texts)} text(s); the analysis needs at least 3")
    return texts


def write_analysis(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "analysis.json.partial"
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(out / "analysis.json")
    s_layers, t_layers = result["student_layers"], result["teacher_layers"]
    plots.heatmap(result["cka"], row_title="student layer (0 = embeddings)", column_title="teacher layer (0 = embeddings)",
                  value_title="linear CKA (1 = same up to rotation and scale)",
                  title=f"Linear CKA on {result['tokens']:,} tokens", out_dir=out, name="cka")
    plots.heatmap(result["relation_kl"]["mean"], row_title="student layer", column_title="teacher layer",
                  value_title="KL(teacher || student), nats per token", out_dir=out, name="relation_kl",
                  title=f"MiniLMv2 relation KL, mean of Q-Q, K-K, V-V ({result['relation_heads']} relation heads)",
                  row_labels=[str(s) for s in range(1, s_layers + 1)], column_labels=[str(t) for t in range(1, t_layers + 1)])
    # per head, each student block against the teacher block whose relations it matches best
    closest = result["closest_teacher_layer"]["relation_kl"]
    plots.heatmap([result["attention_kl_per_head"][s][t - 1] for s, t in enumerate(closest)],
                  row_title="student block -> closest teacher block (relation KL)", column_title="head",
                  value_title="attention KL(teacher || student), nats per token", out_dir=out, name="attention_kl_per_head",
                  title="Attention-distribution KL per head",
                  row_labels=[f"{s} -> {t}" for s, t in enumerate(closest, start=1)],
                  column_labels=[str(h) for h in range(result["attention_heads"])])
