"""Vocabulary trimming: keep the tokens a corpus uses (and every special token), and cut the
embedding matrix and the fast tokenizer down to them.

Why the outputs on kept-token text do not change: kept tokens keep their relative order
(new id = rank of the old id among the kept ones), and a text whose original tokenization
uses only kept tokens is tokenized the same by the trimmed tokenizer:
- WordPiece (BERT) matches the longest vocabulary entry at each position; the entry it
  matched is still there, and no longer entry was there before either.
- Unigram (XLM-R's sentencepiece) picks the best-scoring segmentation; the trimmed
  vocabulary only removes candidates, and the best one uses kept pieces only.
BPE is refused: a kept token may be built through merges of tokens the corpus never shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch

from tadistill.errors import ModelError

SUPPORTED_MODELS = ("WordPiece", "Unigram")


def count_tokens(tokenizer, texts: Iterable[str], batch_size: int = 1000) -> Counter:
    """How often each token id occurs in `texts` (no special tokens added)."""
    counts: Counter = Counter()
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            counts.update(_ids(tokenizer, batch))
            batch = []
    if batch:
        counts.update(_ids(tokenizer, batch))
    return counts


def _ids(tokenizer, texts: list[str]) -> Iterable[int]:
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        yield from ids


def protected_ids(tokenizer, config) -> set[int]:
    """Ids no trimming may remove: the tokenizer's special and added tokens and every token id
    the model config names (pad, bos, eos, ...)."""
    ids = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    for key, value in config.to_dict().items():
        if key.endswith("_token_id") and isinstance(value, int):
            ids.add(value)
    return {i for i in ids if 0 <= i < config.vocab_size}


def choose_kept(counts: Counter, protected: set[int], keep: int | None = None, min_count: int | None = None) -> list[int]:
    """The old ids kept, ascending: the protected ones plus the corpus's tokens, either the
    most frequent up to `keep` in all or every one seen at least `min_count` times."""
    by_frequency = [i for i, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if i not in protected]
    if keep is not None:
        chosen = by_frequency[: max(keep - len(protected), 0)]
    else:
        chosen = [i for i in by_frequency if counts[i] >= min_count]
    return sorted(protected | set(chosen))


def trim_tokenizer_json(data: dict, kept: list[int]) -> dict:
    """tokenizer.json (parsed) for the kept ids: the model's vocabulary, the added tokens, the
    post-processor's special-token ids and the padding id, all renumbered."""
    model = data["model"]
    if model["type"] not in SUPPORTED_MODELS:
        raise ModelError(f"trimming a {model['type']} tokenizer is not supported (only {', '.join(SUPPORTED_MODELS)}): "
                         "a BPE vocabulary's merges can need tokens the corpus never shows")
    new_id = {old: new for new, old in enumerate(kept)}
    if model["type"] == "WordPiece":
        model["vocab"] = {token: new_id[old] for token, old in model["vocab"].items() if old in new_id}
    else:  # Unigram: a list of [piece, score] whose position is the id
        model["vocab"] = [model["vocab"][old] for old in kept]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    data["added_tokens"] = [dict(token, id=new_id[token["id"]]) for token in data["added_tokens"] if token["id"] in new_id]
    _renumber_post_processor(data.get("post_processor"), new_id)
    if data.get("padding") and "pad_id" in data["padding"]:
        data["padding"]["pad_id"] = new_id[data["padding"]["pad_id"]]
    return data


def _renumber_post_processor(processor: dict | None, new_id: dict[int, int]) -> None:
    if not processor:
        return
    if processor["type"] == "TemplateProcessing":
        for special in processor["special_tokens"].values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif processor["type"] in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            token, old = processor[key]
            processor[key] = [token, new_id[old]]
    elif processor["type"] == "Sequence":
        for inner in processor["processors"]:
            _renumber_post_processor(inner, new_id)


def trim_tokenizer_config(data: dict, kept: list[int]) -> dict:
    """tokenizer_config.json (parsed): its `added_tokens_decoder` keyed by the new ids."""
    if "added_tokens_decoder" in data:
        new_id = {old: new for new, old in enumerate(kept)}
        data["added_tokens_decoder"] = {
            str(new_id[int(old)]): token for old, token in data["added_tokens_decoder"].items() if int(old) in new_id
        }
    return data


def trim_state_dict(state: dict[str, torch.Tensor], vocab_size: int, kept: list[int]) -> dict[str, torch.Tensor]:
    """Every vocabulary-indexed tensor (word embeddings, a masked-LM decoder and its bias: the
    tensors whose first dimension is the vocabulary) cut to the kept rows, in the kept order."""
    index = torch.tensor(kept)
    trimmed = {}
    for name, tensor in state.items():
        if tensor.ndim in (1, 2) and tensor.shape[0] == vocab_size and "position" not in name:
            tensor = tensor.index_select(0, index)  # (V, ...) -> (K, ...)
        trimmed[name] = tensor
    return trimmed


def remap_config_ids(config, kept: list[int]) -> None:
    """The config's vocabulary size and every *_token_id it names, for the trimmed vocabulary."""
    new_id = {old: new for new, old in enumerate(kept)}
    for key, value in config.to_dict().items():
        if key.endswith("_token_id") and isinstance(value, int) and value in new_id:
            setattr(config, key, new_id[value])
    config.vocab_size = len(kept)
