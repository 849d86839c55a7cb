"""DistilBERT's frequency-smoothed MLM masking (`data.mlm_smoothing`) against plain references."""

from __future__ import annotations

import math
from collections import Counter

import datasets
import pytest
import torch
from transformers import AutoTokenizer

from tadistill.config import DataConfig, SourceConfig
from tadistill.data import build_corpus, corpus_problems
from tadistill.data.masking import FrequencySmoothedMasker, smoothed_token_weights, token_counts
from tiny import make_sentences

MASK_ID, VOCAB = 3, 10


def test_token_counts_count_real_tokens_only():
    rows = {"input_ids": [[1, 5, 5, 7, 2, 0], [1, 9, 2, 0, 0, 0]], "attention_mask": [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]}
    blocks = datasets.Dataset.from_dict(rows)
    expected = Counter(t for ids, mask in zip(rows["input_ids"], rows["attention_mask"]) for t, m in zip(ids, mask) if m)
    for source in (blocks, blocks.to_iterable_dataset()):
        assert token_counts(source, VOCAB).tolist() == [expected[i] for i in range(VOCAB)]


def test_weights_are_frequency_to_the_minus_smoothing_with_unseen_tokens_counted_once():
    counts = [0, 1, 4, 100]
    weights = smoothed_token_weights(torch.tensor(counts).numpy(), 0.7)
    assert weights.tolist() == pytest.approx([max(c, 1) ** -0.7 for c in counts])
    assert smoothed_token_weights(torch.tensor(counts).numpy(), 0.0).tolist() == [1.0] * 4  # 0: uniform


def masker(counts, smoothing=0.7, probability=0.15):
    return FrequencySmoothedMasker(smoothed_token_weights(torch.tensor(counts).numpy(), smoothing), probability, MASK_ID)


def test_draws_ceil_share_of_real_tokens_never_specials_or_padding():
    input_ids = torch.tensor([[1, 5, 6, 7, 8, 9, 4, 2], [1, 6, 6, 7, 2, 0, 0, 0]])  # (B, n): 1, 2 frame, 0 pad
    attention_mask = (input_ids != 0).long()
    never = (input_ids == 1) | (input_ids == 2) | (attention_mask == 0)
    counts = [1] * VOCAB
    for seed in range(20):
        masked, labels = masker(counts, probability=0.3).mask(input_ids, never, attention_mask, torch.Generator().manual_seed(seed))
        selected = labels != -100
        assert int(selected.sum()) == math.ceil(0.3 * int(attention_mask.sum()))  # DistilBERT's n_tgt
        assert not (selected & never).any()
        assert torch.equal(labels[selected], input_ids[selected])
        assert torch.equal(masked[~selected], input_ids[~selected])  # nothing else changes


def test_selection_follows_the_smoothed_frequencies():
    """With one position drawn per batch, position j is drawn with probability w_j / sum w."""
    counts = [1, 1, 1, 1, 1, 400, 20, 1, 1, 1]  # token 5 frequent, 6 medium, 7 rare
    input_ids = torch.tensor([[5, 6, 7, 5, 6]])  # (1, 5); ceil(0.15 * 5) = 1 draw
    attention_mask, never = torch.ones_like(input_ids), torch.zeros_like(input_ids, dtype=torch.bool)
    weights = [max(counts[t], 1) ** -0.7 for t in input_ids[0].tolist()]
    expected = torch.tensor(weights) / sum(weights)
    draws = torch.zeros(5)
    generator = torch.Generator().manual_seed(0)
    smoothed = masker(counts)
    for _ in range(4000):
        _, labels = smoothed.mask(input_ids, never, attention_mask, generator)
        draws += (labels[0] != -100).float()
    torch.testing.assert_close(draws / draws.sum(), expected, atol=0.025, rtol=0)
    assert expected[2] > 0.5  # the rare token is drawn most: that is the point of the smoothing


def test_replacements_are_mask_random_kept_80_10_10():
    input_ids = torch.full((64, 50), 5)  # (B, n)
    attention_mask, never = torch.ones_like(input_ids), torch.zeros_like(input_ids, dtype=torch.bool)
    masked, labels = masker([1] * VOCAB, probability=0.5).mask(input_ids, never, attention_mask, torch.Generator().manual_seed(1))
    chosen = masked[labels != -100]
    shares = [(chosen == MASK_ID).float().mean(), (chosen == 5).float().mean()]
    assert shares[0] == pytest.approx(0.8, abs=0.03) and shares[1] == pytest.approx(0.1 + 0.1 / VOCAB, abs=0.03)


def test_all_special_batch_masks_nothing():
    input_ids = torch.tensor([[1, 2, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 0, 0]])
    never = torch.ones_like(input_ids, dtype=torch.bool)
    masked, labels = masker([1] * VOCAB).mask(input_ids, never, attention_mask, torch.Generator().manual_seed(0))
    assert torch.equal(masked, input_ids) and (labels == -100).all()


def test_corpus_loader_masks_with_smoothing_reproducibly(bert_teacher, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    (tmp_path / "en.txt").write_text("\n".join(make_sentences(200, seed=3)))
    corpus = build_corpus([SourceConfig(path=str(tmp_path / "en.txt"))], tokenizer, 32, seed=2, cache_dir=str(tmp_path / "c"))

    def first(loader):
        return next(iter(loader))

    smoothed = first(corpus.dataloader(8, mlm_probability=0.15, mlm_smoothing=0.7))
    again = first(corpus.dataloader(8, mlm_probability=0.15, mlm_smoothing=0.7))
    assert all(torch.equal(smoothed[k], again[k]) for k in smoothed)
    real = int(smoothed["attention_mask"].sum())
    assert int((smoothed["labels"] != -100).sum()) == math.ceil(0.15 * real)
    special = torch.isin(smoothed["labels"], torch.tensor(tokenizer.all_special_ids))
    assert not special.any()


def test_mlm_smoothing_must_be_a_non_negative_number():
    sources = [SourceConfig(path="corpus.txt")]
    keys = {p.key: p.message for p in corpus_problems(DataConfig(sources=sources, mlm_smoothing=-0.5))}
    assert "0.7" in keys["data.mlm_smoothing"]
    assert "data.mlm_smoothing" not in {p.key for p in corpus_problems(DataConfig(sources=sources, mlm_smoothing=0.7))}
