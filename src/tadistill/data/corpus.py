"""The corpus of a run: every source read, tokenised, packed and mixed, ready for a DataLoader.

Local sources (the default) become one map-style dataset of blocks drawn by MixtureSampler:
deterministic for a seed, with `set_epoch`, and resumable with
`accelerator.skip_first_batches(loader, n)` (or `dataloader(..., epoch=, skip_batches=)`
without accelerate). Under `accelerator.prepare` every process gets its own batches.

When any source streams (hub datasets by default), every source streams: the blocks are
packed lazily, mixed with `datasets.interleave_datasets` (same probabilities, sizes counted
in documents since blocks are unknown before reading) and shuffled through a buffer.
Resuming a stream re-reads it up to the position (that is what skip_first_batches does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import datasets
import pyarrow.compute
import torch

from tadistill.data.loader import BlockCollator, PackedBlocks
from tadistill.data.mixture import MixtureSampler, check_mixture, mixture_probabilities
from tadistill.data.packing import pack_documents
from tadistill.data.sources import Documents, read_documents, resolve_format
from tadistill.errors import ConfigError, DataError, Problem

logger = logging.getLogger(__name__)

SHUFFLE_BUFFER = 10_000  # blocks held to shuffle a stream
READ_OPTIONS = ("path", "format", "text_field", "split", "subset", "documents", "streaming")
MIXTURE_OPTIONS = ("weight", "language")


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
        epoch: int = 0,
        skip_batches: int = 0,
    ) -> torch.utils.data.DataLoader:
        """Batches of input_ids / attention_mask (+ MLM input_ids and labels when mlm_probability is set).

        `epoch` and `skip_batches` resume without accelerate; under accelerate leave them at 0 and
        call `loader.set_epoch(epoch)` and `accelerator.skip_first_batches(loader, n)` instead.
        """
        collator = BlockCollator(self.tokenizer, mlm_probability, self.seed)
        if self.streaming:
            self.blocks.set_epoch(epoch)
            stream = self.blocks.skip(skip_batches * batch_size) if skip_batches else self.blocks
            return torch.utils.data.DataLoader(
                stream,
                batch_size=batch_size,
                collate_fn=collator,
                num_workers=num_workers,
                drop_last=drop_last,
                generator=torch.Generator().manual_seed(self.seed),  # see below
            )
        sampler = MixtureSampler(self.sizes, self.probabilities, self.seed)
        sampler.set_epoch(epoch, start=skip_batches * batch_size)
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
    sources: list[dict],
    tokenizer,
    max_seq_length: int = 128,
    seed: int = 0,
    sampling_alpha: float | None = None,
    on_decode_error: str = "skip",
    num_proc: int | None = None,
    cache_dir: str | None = None,
) -> Corpus:
    """Read, tokenise, pack and mix `sources` (dicts with SourceConfig's fields).

    `num_proc` processes tokenise local data (None: one process, whose fast tokenizer already
    uses every core); `cache_dir` is the datasets cache (None: the default one).
    """
    _check_sources(sources, sampling_alpha)
    streaming = any(_is_streamed(source) for source in sources)
    read = [
        read_documents(
            **{k: v for k, v in source.items() if k in READ_OPTIONS},
            on_decode_error=on_decode_error,
            cache_dir=cache_dir,
        )
        for source in sources
    ]
    weights = [source.get("weight", 1.0) for source in sources]
    languages = [source.get("language") for source in sources]
    if streaming:
        return _streaming_corpus(read, weights, languages, tokenizer, max_seq_length, seed, sampling_alpha)
    blocks = [pack_documents(docs.dataset, tokenizer, max_seq_length, num_proc) for docs in read]
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


def _check_sources(sources: list[dict], sampling_alpha: float | None) -> None:
    """Fail before any reading on an empty list, unknown keys, bad weights or alpha."""
    if not sources:
        raise DataError("data.sources is empty: give at least one corpus file, glob or dataset")
    known = READ_OPTIONS + MIXTURE_OPTIONS
    problems = [
        Problem(f"data.sources.{i}.{key}", value, f"unknown option; known: {', '.join(known)}")
        for i, source in enumerate(sources)
        for key, value in source.items()
        if key not in known
    ]
    problems += check_mixture([source.get("weight", 1.0) for source in sources], sampling_alpha)
    if problems:
        raise ConfigError(problems)


def _is_streamed(source: dict) -> bool:
    streaming = source.get("streaming")
    if streaming is not None:
        return streaming
    return resolve_format(source["path"], source.get("format", "auto")) == "hub"


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
    packed = [pack_documents(stream, tokenizer, max_seq_length) for stream in streams]
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
