"""The corpus entry point: stats, batches, determinism, resume (plain and accelerate), sharding, masking."""

from __future__ import annotations

import pytest
import torch
from accelerate.data_loader import prepare_data_loader, skip_first_batches
from transformers import AutoTokenizer

from tadistill.config import DataConfig, SourceConfig
from tadistill.data import build_corpus, corpus_problems, mixture_probabilities
from tadistill.errors import DataError
from tiny import make_sentences


@pytest.fixture(scope="module")
def tokenizer(bert_teacher):
    return AutoTokenizer.from_pretrained(bert_teacher)


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    """Two small sources: English-like paragraphs and a line-per-document file."""
    root = tmp_path_factory.mktemp("corpus")
    sentences = make_sentences(600, seed=11)
    (root / "en.txt").write_text("\n\n".join(" ".join(sentences[i : i + 6]) for i in range(0, 480, 6)))
    (root / "fr.txt").write_bytes("\n".join(sentences[480:]).encode() + b"\n\xff broken line\n")
    return root


@pytest.fixture(scope="module")
def corpus(corpus_files, tokenizer, tmp_path_factory):
    sources = [
        SourceConfig(path=str(corpus_files / "en.txt"), language="en"),
        SourceConfig(path=str(corpus_files / "fr.txt"), language="fr", documents="line", weight=2.0),
    ]
    cache = tmp_path_factory.mktemp("cache")
    return build_corpus(sources, tokenizer, max_seq_length=32, seed=5, sampling_alpha=0.5, cache_dir=str(cache))


def batches(loader) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in batch.items()} for batch in loader]


def assert_same(left: list[dict], right: list[dict]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_stats_and_probabilities(corpus):
    en, fr = corpus.sources
    assert (en.documents, fr.documents) == (80, 120)
    assert (en.skipped_lines, fr.skipped_lines) == (0, 1)
    assert corpus.sizes == [en.blocks, fr.blocks]
    assert [en.probability, fr.probability] == pytest.approx(
        mixture_probabilities(corpus.sizes, [1.0, 2.0], ["en", "fr"], 0.5)
    )
    mask_total = sum(int(row["attention_mask"].sum()) for row in corpus.blocks.with_format("torch"))
    assert en.tokens + fr.tokens == mask_total
    assert corpus.totals() == {"documents": 200, "blocks": sum(corpus.sizes), "tokens": mask_total, "skipped_lines": 1}
    assert str(fr).startswith(f"{fr.path} [fr]: 120 documents, {fr.blocks} blocks")
    assert "1 undecodable lines skipped" in str(fr)


def test_plain_batches_without_masking(corpus, tokenizer):
    [first, *_] = batches(corpus.dataloader(batch_size=8))
    assert set(first) == {"input_ids", "attention_mask"}
    assert first["input_ids"].shape == (8, 32) and first["input_ids"].dtype == torch.long
    assert (first["input_ids"][:, 0] == tokenizer.cls_token_id).all()


def test_deterministic_for_a_seed(corpus, corpus_files, tokenizer, tmp_path):
    assert_same(
        batches(corpus.dataloader(8, mlm_probability=0.15)), batches(corpus.dataloader(8, mlm_probability=0.15))
    )
    again = build_corpus([SourceConfig(path=str(corpus_files / "en.txt"))], tokenizer, 32, seed=5, cache_dir=str(tmp_path))
    other = build_corpus([SourceConfig(path=str(corpus_files / "en.txt"))], tokenizer, 32, seed=6, cache_dir=str(tmp_path))
    first, second = batches(again.dataloader(8))[0], batches(other.dataloader(8))[0]
    assert not torch.equal(first["input_ids"], second["input_ids"])


def epoch_batches(corpus, epoch: int, skip: int = 0) -> list[dict]:
    """What the distill recipe iterates: a prepared loader, set to the epoch, the first batches skipped.

    prepare_data_loader / skip_first_batches are what Accelerator.prepare / .skip_first_batches call.
    """
    loader = prepare_data_loader(corpus.dataloader(8, mlm_probability=0.15), put_on_device=False)
    loader.set_epoch(epoch)
    return batches(skip_first_batches(loader, skip) if skip else loader)


def test_epochs_differ_and_replay_exactly(corpus):
    assert_same(epoch_batches(corpus, 1), epoch_batches(corpus, 1))
    assert not torch.equal(epoch_batches(corpus, 0)[0]["input_ids"], epoch_batches(corpus, 1)[0]["input_ids"])


def test_resume_with_accelerate_skip_first_batches(corpus):
    full = epoch_batches(corpus, 2)
    # What a resumed run does: a fresh prepared loader, the saved epoch, skip the batches done.
    restarted = prepare_data_loader(corpus.dataloader(8, mlm_probability=0.15), put_on_device=False)
    restarted.set_epoch(2)
    resumed = batches(skip_first_batches(restarted, 4))
    assert len(resumed) == len(full) - 4 > 0
    assert_same(resumed, full[4:])


def test_accelerate_shards_batches_across_processes(corpus):
    def rows(process_index):
        loader = prepare_data_loader(
            corpus.dataloader(4), num_processes=2, process_index=process_index, put_on_device=False
        )
        return [tuple(row.tolist()) for batch in loader for row in batch["input_ids"]]

    whole = [tuple(row.tolist()) for batch in corpus.dataloader(4) for row in batch["input_ids"]]
    rank0, rank1 = rows(0), rows(1)
    # Batch b of the epoch goes to rank b % 2 (accelerate may pad the end with repeats to even ranks out).
    n = len(whole) // 8 * 8
    assert rank0[: n // 2] == [row for b in range(0, n // 4, 2) for row in whole[4 * b : 4 * b + 4]]
    assert rank1[: n // 2] == [row for b in range(1, n // 4, 2) for row in whole[4 * b : 4 * b + 4]]


def test_masking_rate_and_never_special_or_padding(corpus, tokenizer):
    plain = batches(corpus.dataloader(16))
    masked = batches(corpus.dataloader(16, mlm_probability=0.15))
    specials = torch.tensor(tokenizer.all_special_ids)
    selected = replaced = kept = candidates = 0
    for original, batch in zip(plain, masked):
        ids = original["input_ids"]
        chosen = batch["labels"] != -100  # (B, n)
        never = torch.isin(ids, specials) | (original["attention_mask"] == 0)
        assert not (chosen & never).any()
        assert torch.equal(batch["labels"][chosen], ids[chosen])
        assert torch.equal(batch["input_ids"][~chosen], ids[~chosen])
        candidates += int((~never).sum())
        selected += int(chosen.sum())
        replaced += int((batch["input_ids"][chosen] == tokenizer.mask_token_id).sum())
        kept += int((batch["input_ids"][chosen] == ids[chosen]).sum())
    assert candidates > 5000
    assert selected / candidates == pytest.approx(0.15, abs=0.02)
    assert replaced / selected == pytest.approx(0.8, abs=0.05)
    assert kept / selected == pytest.approx(0.1, abs=0.04)  # kept as is (a random pick may also equal it)


def test_streaming_sources(corpus_files, tokenizer, tmp_path):
    sources = [
        SourceConfig(path=str(corpus_files / "en.txt"), streaming=True),
        SourceConfig(path=str(corpus_files / "fr.txt"), documents="line", streaming=True),
    ]
    corpus = build_corpus(sources, tokenizer, max_seq_length=32, seed=1, cache_dir=str(tmp_path))
    assert corpus.streaming and corpus.sources[0].blocks is None
    assert corpus.probabilities == pytest.approx([80 / 200, 120 / 200])
    full = batches(corpus.dataloader(8, mlm_probability=0.15))
    assert full[0]["input_ids"].shape == (8, 32) and "labels" in full[0]
    assert_same(full, batches(corpus.dataloader(8, mlm_probability=0.15)))
    assert_same(epoch_batches(corpus, 0, skip=2), full[2:])


def test_bad_corpora_are_data_errors(corpus_files, tokenizer, tmp_path):
    (tmp_path / "blank.txt").write_text("\n   \n\n")
    with pytest.raises(DataError, match="blank.txt"):
        build_corpus([SourceConfig(path=str(tmp_path / "blank.txt"))], tokenizer, cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="data.sources is empty"):
        build_corpus([], tokenizer)
    with pytest.raises(DataError, match=r"nothing-\*\.txt.*matches no files"):
        build_corpus([SourceConfig(path=str(tmp_path / "nothing-*.txt"))], tokenizer)


def test_corpus_problems_report_every_mistake_without_reading(tmp_path):
    (tmp_path / "ok.txt").write_text("doc\n")
    data = DataConfig(
        sources=[SourceConfig(path=str(tmp_path / "ok.txt"), weight=-1), SourceConfig(path=str(tmp_path / "no.txt"))],
        sampling_alpha=-0.5, max_seq_length=4, mlm_probability=1.5, on_decode_error="ignore",
    )
    keys = [problem.key for problem in corpus_problems(data)]
    assert keys == ["data.sources.1.path", "data.sources.0.weight", "data.sampling_alpha", "data.max_seq_length",
                    "data.mlm_probability", "data.on_decode_error"]
