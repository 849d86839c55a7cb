"""Mixture probabilities (weights, XLM-R alpha) and the deterministic, resumable sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tadistill.data import MixtureSampler, mixture_probabilities
from tadistill.errors import ConfigError


def reference_probabilities(sizes, weights, languages, alpha):
    """XLM-R sampling written out: languages by (weighted size)^alpha, sources by share of their language."""
    effective = [w * n for w, n in zip(weights, sizes)]
    language_size = {}
    for language, m in zip(languages, effective):
        language_size[language] = language_size.get(language, 0.0) + m
    norm = sum(size**alpha for size in language_size.values())
    return [language_size[lang] ** alpha / norm * m / language_size[lang] for lang, m in zip(languages, effective)]


def test_without_alpha_weights_scale_natural_sizes():
    assert mixture_probabilities([300, 100]) == pytest.approx([0.75, 0.25])
    assert mixture_probabilities([300, 100], weights=[1.0, 3.0]) == pytest.approx([0.5, 0.5])


def test_alpha_matches_the_xlmr_formula():
    sizes, weights, languages = [900, 60, 40, 10], [1.0, 1.0, 1.0, 2.0], ["en", "fr", "fr", "sw"]
    for alpha in (0.0, 0.3, 0.7, 1.0):
        got = mixture_probabilities(sizes, weights, languages, alpha)
        assert got == pytest.approx(reference_probabilities(sizes, weights, languages, alpha))
        assert got.sum() == pytest.approx(1.0)
    # A worked case: en 900, fr 100, alpha 0.5 -> 30 : 10.
    assert mixture_probabilities([900, 100], languages=["en", "fr"], alpha=0.5) == pytest.approx([0.75, 0.25])
    # alpha = 1 is the natural proportion; alpha = 0 weighs languages equally.
    assert mixture_probabilities(sizes, weights, languages, 1.0) == pytest.approx(mixture_probabilities(sizes, weights))
    p0 = mixture_probabilities(sizes, weights, languages, 0.0)
    assert [p0[0], p0[1] + p0[2], p0[3]] == pytest.approx([1 / 3] * 3)


def test_untagged_sources_are_groups_of_their_own():
    got = mixture_probabilities([100, 100, 400], languages=["en", None, None], alpha=0.0)
    assert got == pytest.approx([1 / 3] * 3)


def test_bad_weights_and_alpha_name_the_keys():
    with pytest.raises(ConfigError) as caught:
        mixture_probabilities([10, 10], weights=[1.0, 0.0], alpha=-1)
    keys = [problem.key for problem in caught.value.problems]
    assert keys == ["data.sources.1.weight", "data.sampling_alpha"]


def test_sampler_is_deterministic_per_seed_and_epoch():
    sizes, p = [50, 30], [0.5, 0.5]
    first = list(MixtureSampler(sizes, p, seed=3))
    assert first == list(MixtureSampler(sizes, p, seed=3))
    assert first != list(MixtureSampler(sizes, p, seed=4))
    other_epoch = MixtureSampler(sizes, p, seed=3)
    other_epoch.set_epoch(1)
    assert [i for i, _ in first] != [i for i, _ in other_epoch]


def test_single_source_epoch_is_a_permutation():
    order = [index for index, _ in MixtureSampler([100], [1.0], seed=0)]
    assert sorted(order) == list(range(100)) and order != list(range(100))


def test_every_block_of_a_source_is_used_before_any_repeats():
    sampler = MixtureSampler([10, 1000], [0.5, 0.5], seed=1, num_samples=2000)
    small = [index for index, _ in sampler if index < 10]
    assert len(small) > 500  # ~1000 draws from 10 blocks
    for lap in range(len(small) // 10):
        assert sorted(small[lap * 10 : (lap + 1) * 10]) == list(range(10))
    large = [index for index, _ in sampler if index >= 10]
    assert len(set(large)) == len(large)  # fewer than 1000 draws: no repeats


def test_sampled_proportions_follow_alpha():
    sizes, languages, alpha = [6000, 600, 60], ["en", "de", "sw"], 0.3
    p = mixture_probabilities(sizes, languages=languages, alpha=alpha)
    n = 60_000
    sampler = MixtureSampler(sizes, p, seed=0, num_samples=n)
    offsets = np.cumsum([0, *sizes])
    counts = Counter(int(np.searchsorted(offsets, index, side="right")) - 1 for index, _ in sampler)
    for source, prob in enumerate(p):
        tolerance = 5 * np.sqrt(n * prob * (1 - prob))  # 5 binomial standard deviations
        assert abs(counts[source] - n * prob) < tolerance


def test_mask_keys_are_unique_across_epochs():
    sampler = MixtureSampler([40, 20], [0.6, 0.4], seed=9)
    keys = set()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        keys.update(key for _, key in sampler)
    assert len(keys) == 3 * 60
