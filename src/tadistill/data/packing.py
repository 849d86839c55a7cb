"""Tokenise documents with the teacher's tokenizer and pack them into blocks of max_seq_length.

A block, as BERT sees it (RoBERTa and XLM-R have <s> ... </s> in the same places):

    [CLS] d1 d1 d1 [SEP] d2 d2 ... d2 [SEP] [PAD] [PAD]
    attention_mask 1 ...                 1     0     0

- The frame of every block is the tokenizer's own: the prefix and suffix its post-processor
  adds to a single sequence (what `tokenizer(text)` returns), so each family gets its tokens.
- Documents are concatenated with the tokenizer's separator (sep_token, else eos_token)
  between them. It is the token each family ends a segment with, so a packed block looks
  like the multi-segment inputs the teacher was pretrained on (BERT: [SEP] between
  segments; RoBERTa FULL-SENTENCES: </s> between documents). Being a special token, it is
  never selected for masking.
- A document longer than a block continues in the next block.
- Each batch of DOCUMENTS_PER_BATCH documents is packed on its own, so `datasets.map` can
  spread the work over processes and cache it. Only the last block of a batch is partial:
  it is padded with attention_mask 0, which wastes less than one block per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets

from tadistill.errors import ConfigError, DataError, Problem

DOCUMENTS_PER_BATCH = 4096
BLOCK_FEATURES = datasets.Features(
    {"input_ids": datasets.List(datasets.Value("int32")), "attention_mask": datasets.List(datasets.Value("int8"))}
)


@dataclass(frozen=True)
class BlockLayout:
    """Where the special tokens of a block go, for one tokenizer and block length."""

    length: int
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    separator: tuple[int, ...]
    pad_id: int

    @property
    def content_length(self) -> int:
        return self.length - len(self.prefix) - len(self.suffix)


def block_layout(tokenizer, max_seq_length: int) -> BlockLayout:
    """Read the special-token frame off the tokenizer by encoding a one-word probe."""
    if not tokenizer.is_fast:
        raise DataError(f"{type(tokenizer).__name__} is not a fast tokenizer; packing needs one (tokenizer.json)")
    if tokenizer.pad_token_id is None:
        raise DataError(f"{type(tokenizer).__name__} has no pad token; packing needs one to pad the last block")
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    if max_seq_length <= specials:
        raise ConfigError(
            [Problem("data.max_seq_length", max_seq_length, f"must exceed the {specials} special tokens per block")]
        )
    probe = tokenizer("a", add_special_tokens=True)
    content = [i for i, sequence in enumerate(probe.sequence_ids(0)) if sequence is not None]
    ids = probe["input_ids"]
    separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return BlockLayout(
        length=max_seq_length,
        prefix=tuple(ids[: content[0]]),
        suffix=tuple(ids[content[-1] + 1 :]),
        separator=() if separator is None else (separator,),
        pad_id=tokenizer.pad_token_id,
    )


def pack_token_lists(token_lists: list[list[int]], layout: BlockLayout, packing: bool = True) -> dict[str, list[list[int]]]:
    """Concatenate tokenised documents (separator between them) and cut them into framed blocks;
    without `packing`, every document is cut into blocks of its own (each one text, padded), the
    shape of input a sentence encoder embeds."""
    streams: list[list[int]] = []
    for ids in token_lists:
        if not ids:
            continue
        if streams and packing:
            streams[-1].extend(layout.separator)
            streams[-1].extend(ids)
        else:
            streams.append(list(ids))
    prefix, suffix, size = list(layout.prefix), list(layout.suffix), layout.content_length
    input_ids, attention_mask = [], []
    for stream in streams:
        for start in range(0, len(stream), size):
            content = stream[start : start + size]
            padding = size - len(content)
            input_ids.append(prefix + content + suffix + [layout.pad_id] * padding)
            attention_mask.append([1] * (layout.length - padding) + [0] * padding)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def pack_documents(
    documents: datasets.Dataset | datasets.IterableDataset,
    tokenizer,
    max_seq_length: int,
    num_proc: int | None = None,
    packing: bool = True,
) -> datasets.Dataset | datasets.IterableDataset:
    """Documents (column "text") -> blocks (columns "input_ids", "attention_mask"), in order.

    A map-style dataset is processed eagerly with a batched, cached `datasets.map`
    (`num_proc` processes); a stream lazily, batch by batch as it is read.
    """
    layout = block_layout(tokenizer, max_seq_length)
    options = {
        "batched": True,
        "batch_size": DOCUMENTS_PER_BATCH,
        "remove_columns": ["text"],
        "features": BLOCK_FEATURES,
        "fn_kwargs": {"tokenizer": tokenizer, "layout": layout, "packing": packing},
    }
    if isinstance(documents, datasets.Dataset):
        # Name the cache entry by what decides the blocks: the documents, the tokenizer's full
        # definition and the layout (hashing the tokenizer object itself is slow and unstable).
        fingerprint = datasets.fingerprint.Hasher.hash(
            ["tadistill-pack-v1", documents._fingerprint, tokenizer.backend_tokenizer.to_str(), layout, packing]
        )
        options.update(num_proc=num_proc, desc="tokenising and packing", new_fingerprint=fingerprint)
    return documents.map(_tokenize_and_pack, **options)


def _tokenize_and_pack(batch: dict, tokenizer, layout: BlockLayout, packing: bool) -> dict:
    # verbose=False: documents longer than the model's max length are expected here, they get split.
    encoded = tokenizer(
        batch["text"], add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
    )
    return pack_token_lists(encoded["input_ids"], layout, packing)
