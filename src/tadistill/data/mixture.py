"""Mixing several sources: sampling probabilities and a deterministic, resumable sampler.

How weights and alpha combine. Source i has n_i blocks and weight w_i; its effective size
is m_i = w_i * n_i (a weight is an up/down-sampling factor: 1 keeps the natural share,
2 doubles it).
- Without alpha: p_i = m_i / sum_j m_j. With all weights 1 this is plain concatenation.
- With alpha (XLM-R style multilingual sampling): sources are grouped by language (an
  untagged source forms a group of its own); a language L of effective size
  m_L = sum_{i in L} m_i is drawn with q_L = m_L^alpha / sum_K m_K^alpha, then a source
  within the language by its share of it: p_i = q_L * m_i / m_L. alpha = 1 gives back
  the natural proportions, alpha < 1 up-samples small languages (XLM-R: 0.3, mBERT: 0.7),
  alpha = 0 draws every language equally often.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from tadistill.errors import ConfigError, Problem


def mixture_probabilities(
    sizes: Sequence[int],
    weights: Sequence[float] | None = None,
    languages: Sequence[str | None] | None = None,
    alpha: float | None = None,
) -> np.ndarray:
    """Sampling probability of each source (see the module docstring)."""
    weights = [1.0] * len(sizes) if weights is None else list(weights)
    languages = [None] * len(sizes) if languages is None else list(languages)
    problems = mixture_problems(weights, alpha)
    if problems:
        raise ConfigError(problems)
    effective = np.asarray(weights, dtype=np.float64) * np.asarray(sizes, dtype=np.float64)
    if alpha is None:
        return effective / effective.sum()
    groups = [language if language is not None else f"untagged source {i}" for i, language in enumerate(languages)]
    group_size = {group: 0.0 for group in groups}
    for group, size in zip(groups, effective):
        group_size[group] += size
    group_weight = {group: size**alpha for group, size in group_size.items()}
    total = sum(group_weight.values())
    return np.array([group_weight[g] / total * m / group_size[g] for g, m in zip(groups, effective)])


def mixture_problems(weights: Sequence[float], alpha: float | None) -> list[Problem]:
    """Weights must be positive and alpha non-negative."""
    problems = [
        Problem(f"data.sources.{i}.weight", w, "must be a positive number") for i, w in enumerate(weights) if not w > 0
    ]
    if alpha is not None and not alpha >= 0:
        problems.append(Problem("data.sampling_alpha", alpha, "must be >= 0 (XLM-R uses 0.3)"))
    return problems


MEGABATCH = 50  # batches sorted by length together (transformers' LengthGroupedSampler: 50)


class MixtureSampler(torch.utils.data.Sampler):
    """Draws an epoch of (block index, mask key) pairs from concatenated sources.

    The blocks of source i occupy indices offsets[i] .. offsets[i] + sizes[i] - 1. For every
    position of the epoch a source is drawn with `probabilities`, then the next block of that
    source's own shuffled order: within a source, every block is used once before any
    repeats. Everything depends only on (seed, epoch), so an epoch can be replayed exactly.

    The mask key is unique per (epoch, position); the collator seeds MLM masking with it,
    which makes masks reproducible whatever the batches skipped on resume
    (`accelerator.skip_first_batches` skips them without loading them).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        probabilities: Sequence[float],
        seed: int,
        num_samples: int | None = None,
        group_lengths: tuple[np.ndarray, int] | None = None,
    ):
        """`group_lengths` (the real length of every block, the batch size) batches blocks of
        similar length together (see `grouped`)."""
        self.group_lengths = group_lengths
        self.sizes = [int(n) for n in sizes]
        self.probabilities = np.asarray(probabilities, dtype=np.float64)
        self.offsets = np.cumsum([0, *self.sizes[:-1]])
        self.seed = seed
        self.num_samples = sum(self.sizes) if num_samples is None else num_samples
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called through accelerate's loader at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        first_key = self.epoch * self.num_samples
        order = self.epoch_order(self.epoch)
        if self.group_lengths is not None:
            order = self.grouped(order, self.epoch)
        return zip(order.tolist(), range(first_key, first_key + self.num_samples))

    def grouped(self, order: np.ndarray, epoch: int) -> np.ndarray:
        """The epoch's order with similar lengths in the same batch: each run of MEGABATCH
        batches is sorted by block length, cut into batches, and those are shuffled (as
        transformers' LengthGroupedSampler does); the collator then cuts each batch to its
        longest block. Each block is still used as often as without grouping."""
        lengths, batch_size = self.group_lengths
        rng = np.random.default_rng([self.seed, epoch, 1])
        span = batch_size * MEGABATCH
        pieces = []
        for start in range(0, len(order), span):
            run = order[start : start + span]
            run = run[np.argsort(-lengths[run], kind="stable")]
            full = len(run) // batch_size * batch_size
            batches = run[:full].reshape(-1, batch_size)  # (batches, batch_size)
            pieces += [batches[rng.permutation(len(batches))].reshape(-1), run[full:]]  # a partial batch stays last
        return np.concatenate(pieces)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The block indices of one epoch, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        source_of_position = rng.choice(len(self.sizes), size=self.num_samples, p=self.probabilities)
        order = np.empty(self.num_samples, dtype=np.int64)
        for source, size in enumerate(self.sizes):
            positions = np.flatnonzero(source_of_position == source)
            laps = -(-len(positions) // size)  # passes over the source needed this epoch
            shuffled = rng.permuted(np.tile(np.arange(size), (laps, 1)), axis=1)  # (laps, size)
            order[positions] = self.offsets[source] + shuffled.reshape(-1)[: len(positions)]
        return order
