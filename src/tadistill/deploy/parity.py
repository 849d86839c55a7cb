"""Does a deployed graph compute what the PyTorch model computes? Both run on the same real
text, once as one padded batch and once text by text (each its own sequence length), and
their outputs are compared:

- hidden states: the largest |difference| over every non-padding position, and the cosine
  between the two models' pooled sentence embeddings (the model's own pooling);
- logits of a classifier: the largest |difference| and how often the predicted class agrees.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from tadistill.deploy.onnx_graph import HIDDEN
from tadistill.evaluation.embeddings import pool

# Real sentences of very different lengths, a few not English: a multilingual student
# meets other scripts, and a long text exercises positions a short one never reaches.
PARITY_TEXTS = (
    "Hello world.",
    "The student model is distilled from a larger teacher.",
    "Return the indices of the elements that are non-zero, grouped by element.",
    "Knowledge distillation trains a small network to reproduce the outputs and the internal "
    "representations of a large one, so that it can be deployed where the large one is too slow, "
    "too expensive or too big to fit, while losing as little accuracy as possible on the tasks it serves.",
    "Le modèle étudiant apprend les représentations de son enseignant.",
    "Das kleine Modell läuft schneller.",
    "学生模型更小，也更快。",
    "OK",
)

Forward = Callable[..., torch.Tensor]  # tokenizer tensors in, the model's one output tensor out


def compare_outputs(
    reference: Forward,
    candidate: Forward,
    tokenizer,
    texts: list[str],
    output: str = HIDDEN,
    pooling: str = "mean",
    max_seq_length: int = 128,
) -> dict[str, float]:
    """The differences between two models' outputs on `texts` (see the module doc)."""
    batches = [list(texts)] + [[text] for text in texts]  # one padded batch, then each text alone
    largest, cosines, agree, rows = 0.0, [], 0, 0
    with torch.inference_mode():
        for batch in batches:
            inputs = tokenizer(batch, padding=True, truncation=True, max_length=max_seq_length, return_tensors="pt")
            expected = reference(**inputs).float()
            got = candidate(**inputs).float()
            if output == HIDDEN:
                mask = inputs["attention_mask"].bool()  # (B, n)
                largest = max(largest, (expected - got).abs()[mask].max().item())  # over (tokens, d)
                cosines.append(F.cosine_similarity(pool(expected, mask, pooling), pool(got, mask, pooling), dim=-1))  # (B,)
            else:
                largest = max(largest, (expected - got).abs().max().item())
                agree += (expected.argmax(-1) == got.argmax(-1)).sum().item()
                rows += len(batch)
    if output == HIDDEN:
        cosine = torch.cat(cosines)
        return {"texts": len(texts), "max_abs_diff": largest,
                "min_cosine": cosine.min().item(), "mean_cosine": cosine.mean().item()}
    return {"texts": len(texts), "max_abs_diff": largest, "same_prediction": agree / rows}


def failures(numbers: dict[str, float], atol: float, min_cosine: float) -> list[str]:
    """What of `numbers` is outside the tolerance, as 'name value (limit)' strings."""
    found = []
    if not numbers["max_abs_diff"] <= atol:  # written so that a NaN fails too
        found.append(f"max |difference| {numbers['max_abs_diff']:.3e} > {atol:g}")
    if "min_cosine" in numbers and not numbers["min_cosine"] >= min_cosine:
        found.append(f"min cosine of pooled embeddings {numbers['min_cosine']:.6f} < {min_cosine:g}")
    if "same_prediction" in numbers and not numbers["same_prediction"] == 1.0:
        found.append(f"same predicted class on {numbers['same_prediction']:.1%} of the texts")
    return found
