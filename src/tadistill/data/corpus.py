"""The corpus of a run: every source read, tokenised, packed and mixed, ready for a DataLoader.

Local sources (the default) become one map-style dataset of blocks drawn by MixtureSampler:
deterministic for a seed, with `set_epoch`, and resumable with
`accelerator.skip_first_batches(loader, n)`. Under `accelerator.prepare` every process
gets its own batches.

When any source streams (hub datasets by default), every source streams: the blocks are
packed lazily, mixed with `datasets.interleave_datasets` (same probabilities, sizes counted
in documents since blocks are unknown before reading) and shuffled through a buffer.
Resuming a stream re-reads it up to the position (that is what skip_first_batches does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow.compute
import torch

from tadistill.config import DataConfig, SourceConfig
from tadistill.data.loader import BlockCollator, PackedBlocks
from tadistill.data.masking import smoothed_token_weights, token_counts
from tadistill.data.mixture import MixtureSampler, mixture_problems, mixture_probabilities
from tadistill.data.packing import pack_documents
from tadistill.data.sources import DECODE_POLICIES, Documents, read_documents, resolve_format, source_problems
from tadistill.errors import ConfigError, DataError, Problem
from tadistill.registry import did_you_mean

logger = logging.getLogger(__name__)

SHUFFLE_BUFFER = 10_000  # blocks held to shuffle a stream


@dataclass
class SourceStats:
    """What one source contributed; counts are None for a stream (unknown until read)."""

    path: str
    language: str | None
    probability: float
    documents: int | None
    blocks: int | None
    tokens: int | None
    skipped_lines: int

    def __str__(self) -> str:
        counts = [f"{self.documents:,} documents" if self.documents is not None else "streamed"]
        if self.blocks is not None:
            counts += [f"{self.blocks:,} blocks", f"{self.tokens:,} tokens"]
        if self.skipped_lines:
            counts.append(f"{self.skipped_lines:,} undecodable lines skipped")
        language = f" [{self.language}]" if self.language else ""
        return f"{self.path}{language}: {', '.join(counts)}; sampled with p={self.probability:.3f}"


@dataclass
class Corpus:
    """Packed blocks of every source, their mixture, and how to batch them."""

    blocks: datasets.Dataset | datasets.IterableDataset
    sizes: list[int]
    probabilities: list[float]
    sources: list[SourceStats]
    tokenizer: object
    seed: int

    @property
    def streaming(self) -> bool:
        return isinstance(self.blocks, datasets.IterableDataset)

    def totals(self) -> dict[str, int | None]:
        """Documents, blocks, tokens (non-padding, special tokens included) and skipped lines."""
        totals = {}
        for field in ("documents", "blocks", "tokens", "skipped_lines"):
            values = [getattr(source, field) for source in self.sources]
            totals[field] = None if None in values else sum(values)
        return totals

    def dataloader(
        self,
        batch_size: int,
        mlm_probability: float | None = None,
        num_workers: int = 0,
        drop_last: bool = False,
        mlm_smoothing: float | None = None,
        group_by_length: bool = False,
    ) -> torch.utils.data.DataLoader:
        """Batches of input_ids / attention_mask (+ MLM input_ids and labels when mlm_probability is set).

        `mlm_smoothing` draws the masked tokens with probability ∝ frequency^-smoothing
        (DistilBERT: 0.7; see tadistill.data.masking); None masks uniformly.
        `group_by_length` puts blocks of similar length in the same batch (MixtureSampler.grouped).

        Resume through accelerate: `loader.set_epoch(epoch)`, then
        `accelerator.skip_first_batches(loader, n)`.
        """
        token_weights = None
        if mlm_probability is not None and mlm_smoothing is not None:
            counts = token_counts(self.blocks, len(self.tokenizer))
            token_weights = smoothed_token_weights(counts, mlm_smoothing)
        collator = BlockCollator(self.tokenizer, mlm_probability, self.seed, token_weights)
        if self.streaming:
            return torch.utils.data.DataLoader(
                self.blocks,
                batch_size=batch_size,
                collate_fn=collator,
                num_workers=num_workers,
                drop_last=drop_last,
                generator=torch.Generator().manual_seed(self.seed),  # see below
            )
        if group_by_length and self.streaming:
            raise ConfigError([Problem("data.group_by_length", True, "needs sources that are not streamed")])
        group_lengths = (block_lengths(self.blocks), batch_size) if group_by_length else None
        sampler = MixtureSampler(self.sizes, self.probabilities, self.seed, group_lengths=group_lengths)
        return torch.utils.data.DataLoader(
            PackedBlocks(self.blocks),
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collator,
            num_workers=num_workers,
            drop_last=drop_last,
            # each new iterator draws a base seed; from its own generator it leaves the global
            # RNG (dropout) untouched, so a resumed run's RNG stream matches an uninterrupted one
            generator=torch.Generator().manual_seed(self.seed),
        )


def build_corpus(
    sources: list[SourceConfig],
    tokenizer,
    max_seq_length: int = 128,
    seed: int = 0,
    sampling_alpha: float | None = None,
    on_decode_error: str = "skip",
    num_proc: int | None = None,
    cache_dir: str | None = None,
    packing: bool = True,
) -> Corpus:
    """Read, tokenise, pack and mix `sources` (checked by `corpus_problems`); without `packing`
    each document gets blocks of its own (see `pack_token_lists`).

    `num_proc` processes tokenise local data (None: one process, whose fast tokenizer already
    uses every core); `cache_dir` is the datasets cache (None: the default one).
    """
    if not sources:
        raise DataError("data.sources is empty: give at least one corpus file, glob or dataset")
    streaming = any(_is_streamed(source) for source in sources)
    read = [
        read_documents(
            source.path,
            format=source.format,
            text_field=source.text_field,
            split=source.split,
            subset=source.subset,
            documents=source.documents,
            streaming=source.streaming,
            on_decode_error=on_decode_error,
            cache_dir=cache_dir,
        )
        for source in sources
    ]
    weights = [source.weight for source in sources]
    languages = [source.language for source in sources]
    if streaming:
        return _streaming_corpus(read, weights, languages, tokenizer, max_seq_length, seed, sampling_alpha, packing)
    blocks = [pack_documents(docs.dataset, tokenizer, max_seq_length, num_proc, packing) for docs in read]
    for docs, packed in zip(read, blocks):
        if len(packed) == 0:
            raise DataError(f"source {docs.source!r}: its documents produce no tokens with this tokenizer")
    sizes = [len(packed) for packed in blocks]
    probabilities = mixture_probabilities(sizes, weights, languages, sampling_alpha).tolist()
    stats = [
        SourceStats(
            docs.source, language, p, docs.num_documents, len(packed), _count_tokens(packed), docs.skipped_lines
        )
        for docs, packed, language, p in zip(read, blocks, languages, probabilities)
    ]
    for source in stats:
        logger.info("%s", source)
    return Corpus(datasets.concatenate_datasets(blocks), sizes, probabilities, stats, tokenizer, seed)


def corpus_problems(data: DataConfig) -> list[Problem]:
    """What is wrong with a run's `data` section: each source, the mixture, the block
    length, the masking rate and the decode policy. Reads no corpus."""
    problems = [problem for i, source in enumerate(data.sources) for problem in source_problems(source, f"data.sources.{i}")]
    problems += mixture_problems([source.weight for source in data.sources], data.sampling_alpha)
    if data.max_seq_length < 8:
        problems.append(Problem("data.max_seq_length", data.max_seq_length, "must be at least 8 tokens"))
    if not 0 < data.mlm_probability < 1:
        problems.append(Problem("data.mlm_probability", data.mlm_probability, "must be between 0 and 1 (typically 0.15)"))
    smoothing = data.mlm_smoothing
    if smoothing is not None and (isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or smoothing < 0):
        problems.append(Problem("data.mlm_smoothing", smoothing, "must be a number >= 0 (DistilBERT: 0.7) or null"))
    if data.group_by_length:
        streamed = [f"data.sources.{i}" for i, source in enumerate(data.sources) if _is_streamed(source)]
        if streamed:
            message = f"needs sources read whole; streamed: {', '.join(streamed)} (set streaming: false)"
            problems.append(Problem("data.group_by_length", True, message))
    if data.on_decode_error not in DECODE_POLICIES:
        hint = did_you_mean(data.on_decode_error, DECODE_POLICIES)
        problems.append(Problem("data.on_decode_error", data.on_decode_error, f"use 'skip' or 'fail'.{hint}"))
    return problems


def _is_streamed(source: SourceConfig) -> bool:
    if source.streaming is not None:
        return source.streaming
    return resolve_format(source.path, source.format) == "hub"


def block_lengths(blocks: datasets.Dataset) -> np.ndarray:
    """The real tokens of every block, (N,), read from the Arrow column a chunk at a time."""
    per_chunk = [
        np.asarray(pyarrow.compute.list_flatten(chunk)).reshape(len(chunk), -1).sum(1)  # (rows,)
        for chunk in blocks.data.column("attention_mask").chunks
        if len(chunk)
    ]
    return np.concatenate(per_chunk) if per_chunk else np.zeros(0, dtype=np.int64)


def _count_tokens(blocks: datasets.Dataset) -> int:
    mask = blocks.data.column("attention_mask")
    return int(pyarrow.compute.sum(pyarrow.compute.list_flatten(mask)).as_py())


def _streaming_corpus(
    read: list[Documents],
    weights: list[float],
    languages: list[str | None],
    tokenizer,
    max_seq_length: int,
    seed: int,
    sampling_alpha: float | None,
    packing: bool,
) -> Corpus:
    streams = [
        docs.dataset if isinstance(docs.dataset, datasets.IterableDataset) else docs.dataset.to_iterable_dataset()
        for docs in read
    ]
    sizes = [docs.num_documents for docs in read]
    if len(streams) > 1 and None in sizes:
        unknown = [docs.source for docs in read if docs.num_documents is None]
        raise DataError(
            f"cannot mix streamed sources of unknown size ({', '.join(unknown)}): the hub reports no "
            "number of examples for them; set streaming: false to download them"
        )
    packed = [pack_documents(stream, tokenizer, max_seq_length, packing=packing) for stream in streams]
    if len(packed) == 1:
        probabilities, mixed = [1.0], packed[0]
    else:
        probabilities = mixture_probabilities(sizes, weights, languages, sampling_alpha).tolist()
        # all_exhausted: the epoch ends once every source has been read through at least once.
        mixed = datasets.interleave_datasets(
            packed, probabilities=probabilities, seed=seed, stopping_strategy="all_exhausted"
        )
    blocks = mixed.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER).map(_add_mask_keys, with_indices=True, batched=True)
    stats = [
        SourceStats(docs.source, language, p, docs.num_documents, None, None, docs.skipped_lines)
        for docs, language, p in zip(read, languages, probabilities)
    ]
    return Corpus(blocks, sizes, probabilities, stats, tokenizer, seed)


def _add_mask_keys(batch: dict, indices: list[int]) -> dict:
    """A stream's mask key is its position in the stream (see BlockCollator)."""
    return {"mask_key": indices}
