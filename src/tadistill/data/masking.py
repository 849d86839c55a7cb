"""Frequency-smoothed MLM masking, as DistilBERT (Sanh et al. 2019, arXiv 1910.01108) draws it.

DistilBERT does not select each token with probability 15% independently: per batch it
draws exactly ceil(0.15 * real tokens) positions without replacement, a position holding
token w being drawn with probability proportional to max(count(w), 1)^-smoothing
(`mlm_smoothing`, 0.7 in its training script), so rare tokens are masked more often than
frequent ones; special tokens and padding are never drawn. The drawn positions then get
[MASK] / a uniformly random token / themselves with probabilities 0.8 / 0.1 / 0.1, and
the labels are -100 elsewhere.

The counts are taken over the corpus's blocks; for a streamed corpus, over its first
`STREAM_COUNT_BLOCKS` blocks (the whole stream is not known before training).
"""

from __future__ import annotations

import math

import datasets
import numpy as np
import torch

from tadistill.losses import IGNORE_INDEX

STREAM_COUNT_BLOCKS = 10_000  # ~1.3M tokens at 128 per block: enough to rank the frequent tokens
COUNT_BATCH = 10_000  # blocks counted at a time
REPLACE_PROBABILITIES = (0.8, 0.1, 0.1)  # [MASK], random token, kept


def token_counts(blocks: datasets.Dataset | datasets.IterableDataset, vocab_size: int) -> np.ndarray:
    """(V,) occurrences of each token id among the real (non-padding) tokens of the blocks."""
    if isinstance(blocks, datasets.IterableDataset):
        rows = blocks.take(STREAM_COUNT_BLOCKS)
    else:  # a batch at a time: a full corpus flattened at once would not fit in memory
        rows = blocks.select_columns(["input_ids", "attention_mask"]).with_format("numpy").iter(batch_size=COUNT_BATCH)
    counts = np.zeros(vocab_size, dtype=np.int64)
    for row in rows:
        ids, mask = np.asarray(row["input_ids"]), np.asarray(row["attention_mask"])  # (n,) or (rows, n)
        counts += np.bincount(ids[mask == 1].astype(np.int64), minlength=vocab_size)[:vocab_size]
    return counts


def smoothed_token_weights(counts: np.ndarray, smoothing: float) -> torch.Tensor:
    """(V,) unnormalised selection weight of each token: max(count, 1)^-smoothing."""
    return torch.as_tensor(np.maximum(counts, 1).astype(np.float64) ** -smoothing, dtype=torch.float64)


class FrequencySmoothedMasker:
    """`mask(input_ids, never_masked, attention_mask, generator) -> (masked input_ids, labels)`,
    all (B, n), DistilBERT's way."""

    def __init__(self, token_weights: torch.Tensor, mlm_probability: float, mask_token_id: int):
        self.token_weights = token_weights
        self.mlm_probability = mlm_probability
        self.mask_token_id = mask_token_id

    def mask(
        self, input_ids: torch.Tensor, never_masked: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.where(never_masked, 0.0, self.token_weights[input_ids]).flatten()  # (B * n,)
        # as DistilBERT: a share of every real token, special tokens included, drawn among the maskable ones
        count = min(math.ceil(self.mlm_probability * int(attention_mask.sum())), int((weights > 0).sum()))
        if count == 0:
            return input_ids.clone(), torch.full_like(input_ids, IGNORE_INDEX)
        selected = torch.zeros_like(weights, dtype=torch.bool)
        selected[torch.multinomial(weights, count, replacement=False, generator=generator)] = True
        selected = selected.view(input_ids.shape)  # (B, n)
        choice = torch.multinomial(torch.tensor(REPLACE_PROBABILITIES), count, replacement=True, generator=generator)
        random_ids = torch.randint(len(self.token_weights), (count,), generator=generator)
        originals = input_ids[selected]  # (count,)
        masked = input_ids.clone()
        masked[selected] = torch.where(choice == 0, self.mask_token_id, torch.where(choice == 1, random_ids, originals))
        return masked, torch.where(selected, input_ids, IGNORE_INDEX)
