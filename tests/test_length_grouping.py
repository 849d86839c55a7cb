"""Batches cut to their longest block, and `data.group_by_length`: blocks of similar length
batched together, every block still used once an epoch, the same order per (seed, epoch), the
same batches under accelerate's resume, and the losses of a cut batch equal to the padded one's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate.data_loader import skip_first_batches
from transformers import AutoModel, AutoTokenizer

from tadistill.config import DataConfig, SourceConfig
from tadistill.data import MixtureSampler, build_corpus, corpus_problems
from tadistill.data.corpus import block_lengths
from tadistill.data.loader import BlockCollator
from tadistill.data.mixture import MEGABATCH
from tadistill.losses import hidden_mse
from tiny import make_sentences


@pytest.fixture(scope="module")
def tokenizer(bert_teacher):
    return AutoTokenizer.from_pretrained(bert_teacher)


@pytest.fixture(scope="module")
def unpacked(tokenizer, tmp_path_factory):
    """One document per line, lengths 2..60 words, each in blocks of its own."""
    root = tmp_path_factory.mktemp("docs")
    (root / "docs.txt").write_text("\n".join(make_sentences(300, seed=4, min_words=2, max_words=60)) + "\n")
    source = SourceConfig(path=str(root / "docs.txt"), documents="line")
    return build_corpus([source], tokenizer, max_seq_length=48, seed=2, packing=False,
                        cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_the_collator_cuts_a_batch_to_its_longest_block(tokenizer):
    rows = [[101, 7, 8, 102, 0, 0, 0, 0], [101, 5, 6, 9, 11, 102, 0, 0]]
    examples = [{"input_ids": np.array(r), "attention_mask": (np.array(r) != 0).astype(np.int64), "mask_key": k}
                for k, r in enumerate(rows)]
    batch = BlockCollator(tokenizer, None, seed=0)(examples)
    assert batch["input_ids"].tolist() == [r[:6] for r in rows]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
    masked = BlockCollator(tokenizer, 0.5, seed=0)(examples)
    assert masked["labels"].shape == (2, 6) and (masked["labels"][0, 4:] == -100).all()


def test_a_cut_batch_gives_the_padded_batchs_hidden_loss(bert_teacher):
    model = AutoModel.from_pretrained(bert_teacher).eval()
    ids = torch.tensor([[101, 7, 8, 9, 102, 0, 0, 0, 0, 0], [101, 5, 6, 102, 0, 0, 0, 0, 0, 0]])  # (2, 10)
    mask = (ids != 0).long()
    target = torch.randn(2, 10, model.config.hidden_size)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).last_hidden_state
        cut = model(input_ids=ids[:, :5], attention_mask=mask[:, :5]).last_hidden_state
    full = hidden_mse(student=padded, teacher=target, attention_mask=mask)
    shorter = hidden_mse(student=cut, teacher=target[:, :5], attention_mask=mask[:, :5])
    assert shorter.item() == pytest.approx(full.item(), rel=1e-5)


def test_grouped_epochs_use_every_block_once_in_batches_of_similar_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 129, size=1000)
    batch = 8
    plain = MixtureSampler([1000], [1.0], seed=1)
    grouped = MixtureSampler([1000], [1.0], seed=1, group_lengths=(lengths, batch))
    order = [index for index, _ in grouped]
    assert sorted(order) == sorted(index for index, _ in plain) == list(range(1000))
    assert [key for _, key in grouped] == [key for _, key in plain]  # mask keys stay per position
    assert order == [index for index, _ in MixtureSampler([1000], [1.0], seed=1, group_lengths=(lengths, batch))]
    batches = [lengths[order[i : i + batch]] for i in range(0, len(order), batch)]  # a partial batch last
    span = batch * MEGABATCH
    for start in range(0, len(order), span):  # within a run, the batches are slices of its sorted lengths
        run = sorted(batches[start // batch : (start + span) // batch], key=lambda b: -b.max())
        assert all(a.min() >= b.max() for a, b in zip(run, run[1:]))
    padded = sum(b.max() * len(b) for b in batches)
    plain_batches = [lengths[[i for i, _ in plain][s : s + batch]] for s in range(0, 1000, batch)]
    assert padded < 0.7 * sum(b.max() * len(b) for b in plain_batches)


def test_group_by_length_in_the_loader_cuts_batches_and_resumes(unpacked):
    lengths = block_lengths(unpacked.blocks)
    assert lengths.tolist() == [sum(row) for row in unpacked.blocks["attention_mask"]]
    loader = unpacked.dataloader(batch_size=8, group_by_length=True)
    widths = [batch["input_ids"].shape[1] for batch in loader]
    assert min(widths) < 20 and max(widths) == 48  # short documents share short batches
    plain_widths = [batch["input_ids"].shape[1] for batch in unpacked.dataloader(batch_size=8)]
    assert sum(widths) < 0.8 * sum(plain_widths)
    batches = [batch["input_ids"] for batch in loader]
    resumed = [batch["input_ids"] for batch in skip_first_batches(loader, 3)]
    assert all(torch.equal(a, b) for a, b in zip(batches[3:], resumed, strict=True))


def test_group_by_length_needs_sources_read_whole(tmp_path):
    (tmp_path / "ok.txt").write_text("doc\n")
    data = DataConfig(sources=[SourceConfig(path=str(tmp_path / "ok.txt")), SourceConfig(path="org/corpus")],
                      group_by_length=True)
    problems = [p for p in corpus_problems(data) if p.key == "data.group_by_length"]
    assert len(problems) == 1 and "data.sources.1" in problems[0].message
