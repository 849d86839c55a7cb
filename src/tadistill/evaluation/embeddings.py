"""How closely a student's sentence embeddings agree with its teacher's on held-out text.

A sentence embedding is the mean of the last hidden states over the non-padding tokens,
L2-normalised: the pooling sentence-transformers teachers such as all-MiniLM-L6-v2 were
trained with. Three numbers compare the two models:
- mean_cos: cosine between the teacher's and the student's embedding of the same text
  (needs equal widths);
- spearman: rank correlation of the two models' pairwise similarities over all text pairs,
  i.e. do they order "which texts are alike" the same way (any widths);
- nn_at_1: fraction of texts whose nearest other text is the same under both models (any widths).
And one number without the teacher: `pair_similarity`, the Spearman correlation of the
cosine of two texts' embeddings with a human score of how alike they are (STS-style
zero-shot similarity). The pooling is the one a sentence-transformers model declares
(`pooling_mode`), mean pooling otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from tadistill.errors import DataError, ModelError

# sentence-transformers pooling flags -> the pooling `embed` runs for them
_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
POOLING_MODULE = "sentence_transformers.models.Pooling"


def pooling_mode(model_dir: str | Path) -> str:
    """The pooling a sentence-transformers model dir declares (its Pooling module's config,
    found through modules.json); "mean" for a plain model directory."""
    model_dir = Path(model_dir)
    modules = model_dir / "modules.json"
    folders = [m["path"] for m in json.loads(modules.read_text()) if m.get("type") == POOLING_MODULE] if modules.is_file() else []
    config_path = model_dir / (folders[0] if folders else "1_Pooling") / "config.json"
    if not config_path.is_file():
        return "mean"
    config = json.loads(config_path.read_text())
    enabled = sorted(key for key, value in config.items() if key.startswith("pooling_mode") and value is True)
    if len(enabled) != 1 or enabled[0] not in _POOLING_FLAGS:
        raise ModelError(
            f"{config_path}: pooling {', '.join(enabled) or '(none)'} is not supported; "
            f"set exactly one of {', '.join(_POOLING_FLAGS)}"
        )
    return _POOLING_FLAGS[enabled[0]]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """(B, n, d) hidden states -> (B, d): mean or max over non-padding tokens, or the first ([CLS]) token."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf")).amax(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, n, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def embed(
    model: nn.Module,
    tokenizer,
    texts: list[str],
    batch_size: int = 64,
    max_seq_length: int = 128,
    device: str | torch.device | None = None,
    pooling: str = "mean",
) -> torch.Tensor:
    """(N, d) L2-normalised fp32 sentence embeddings on the CPU, from the last hidden states of
    `model`'s encoder (an LM head is not run). `device` defaults to the model's."""
    encoder = model.base_model
    device = device or next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    if not texts:
        return torch.zeros(0, encoder.config.hidden_size)
    # longest texts first (by characters, as sentence-transformers' encode sorts), so that each
    # batch pads to a length close to its own; the rows are put back in the input order at the end
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    [texts[i] for i in order[start : start + batch_size]],
                    padding=True,
                    truncation=True,
                    max_length=max_seq_length,
                    return_tensors="pt",
                ).to(device)
                hidden = encoder(**batch).last_hidden_state.float()  # (B, n, d)
                chunks.append(pool(hidden, batch["attention_mask"], pooling).cpu())
    finally:
        encoder.train(was_training)
    return F.normalize(torch.cat(chunks)[torch.argsort(torch.tensor(order, dtype=torch.long))], dim=-1)


def mean_cosine(teacher_emb: torch.Tensor, student_emb: torch.Tensor) -> float:
    """Mean cosine between the two embeddings of each text; needs one width."""
    if teacher_emb.shape[-1] != student_emb.shape[-1]:
        raise ModelError(
            f"mean cosine needs embeddings of one width: teacher {teacher_emb.shape[-1]}, "
            f"student {student_emb.shape[-1]} (spearman and nn_at_1 work across widths)"
        )
    return F.cosine_similarity(teacher_emb.float(), student_emb.float(), dim=-1).mean().item()


def agreement(teacher_emb: torch.Tensor, student_emb: torch.Tensor) -> dict[str, float | None]:
    """mean_cos (None when the widths differ), spearman and nn_at_1 of two (N, d) embeddings of the same texts."""
    n = teacher_emb.shape[0]
    if student_emb.shape[0] != n or n < 3:
        raise DataError(
            f"agreement needs the same N >= 3 texts embedded by both models; "
            f"got {n} teacher and {student_emb.shape[0]} student embeddings"
        )
    teacher_sim = _cosine_matrix(teacher_emb)  # (N, N)
    student_sim = _cosine_matrix(student_emb)  # (N, N)
    rows, cols = torch.triu_indices(n, n, offset=1)  # each pair once, no self-pairs
    spearman = spearmanr(teacher_sim[rows, cols].numpy(), student_sim[rows, cols].numpy()).statistic
    same_neighbour = _nearest_other(teacher_sim) == _nearest_other(student_sim)
    same_width = teacher_emb.shape[-1] == student_emb.shape[-1]
    return {
        "mean_cos": mean_cosine(teacher_emb, student_emb) if same_width else None,
        "spearman": float(spearman),
        "nn_at_1": same_neighbour.float().mean().item(),
    }


def pair_similarity(first: torch.Tensor, second: torch.Tensor, scores) -> float:
    """Spearman correlation between the cosines of paired embeddings (N, d) and their scores (N,)."""
    if first.shape[0] != second.shape[0] or first.shape[0] != len(scores) or len(scores) < 3:
        raise DataError(f"pair similarity needs N >= 3 pairs with a score each; got {first.shape[0]} and {len(scores)} scores")
    cosines = F.cosine_similarity(first.float(), second.float(), dim=-1)  # (N,)
    return float(spearmanr(cosines.numpy(), list(scores)).statistic)


def _cosine_matrix(emb: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(emb.float(), dim=-1)  # (N, d)
    return unit @ unit.T  # (N, N)


def _nearest_other(sim: torch.Tensor) -> torch.Tensor:
    """Index of each row's most similar other row (the diagonal, itself, excluded)."""
    return sim.clone().fill_diagonal_(float("-inf")).argmax(dim=1)
