"""Tiny teachers for tests: real tokenizers trained offline, 2-layer models from configs.

Every family tadistill supports gets a builder that writes a plain Hugging Face model
directory (config, safetensors, tokenizer) exactly like a downloaded teacher.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import SentencePieceUnigramTokenizer, models, pre_tokenizers, trainers, Tokenizer
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertTokenizer,
    CamembertConfig,
    CamembertForMaskedLM,
    CamembertTokenizer,
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertTokenizer,
    ElectraConfig,
    ElectraForPreTraining,
    ElectraTokenizer,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaTokenizer,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaTokenizer,
)

WORDS = (
    "the a of to and in is that for it as with was on be by this are from at or an "
    "which not have has one all can their more other were been when there its also "
    "model teacher student layer hidden state attention head query key value train "
    "data text token corpus loss step batch learn small fast large deep width depth "
    "distil compress transfer output distribution relation matrix vector language"
).split()


def make_sentences(n: int, seed: int = 0, min_words: int = 4, max_words: int = 20) -> list[str]:
    """Deterministic pseudo-English sentences from a small word list."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))).capitalize() + "."
        for _ in range(n)
    ]


def _wordpiece_vocab(corpus: list[str]) -> dict[str, int]:
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    wp.train_from_iterator([s.lower() for s in corpus], trainer)
    return wp.get_vocab()


def _bert_tokenizer(corpus: list[str]) -> BertTokenizer:
    return BertTokenizer(vocab=_wordpiece_vocab(corpus), do_lower_case=True)


def _electra_tokenizer(corpus: list[str]) -> ElectraTokenizer:
    return ElectraTokenizer(vocab=_wordpiece_vocab(corpus), do_lower_case=True)


def _distilbert_tokenizer(corpus: list[str]) -> DistilBertTokenizer:
    return DistilBertTokenizer(vocab=_wordpiece_vocab(corpus), do_lower_case=True)


def _roberta_tokenizer(corpus: list[str]) -> RobertaTokenizer:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer)
    vocab = bpe.get_vocab()
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in _bpe_merges(bpe)]
    return RobertaTokenizer(vocab=vocab, merges=merges)


def _bpe_merges(tok: Tokenizer) -> list:
    return json.loads(tok.to_str())["model"]["merges"]


def _unigram_vocab(corpus: list[str]) -> list[tuple[str, float]]:
    spm = SentencePieceUnigramTokenizer()
    spm.train_from_iterator(
        corpus, vocab_size=250, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>"
    )
    return [tuple(v) for v in json.loads(spm.to_str())["model"]["vocab"]]


def _xlmr_tokenizer(corpus: list[str]) -> XLMRobertaTokenizer:
    return XLMRobertaTokenizer(vocab=_unigram_vocab(corpus))


def _camembert_tokenizer(corpus: list[str]) -> CamembertTokenizer:
    return CamembertTokenizer(vocab=_unigram_vocab(corpus))


# family -> (config class, model class with the family's pretraining head, tokenizer builder)
FAMILIES = {
    "bert": (BertConfig, BertForMaskedLM, _bert_tokenizer),
    "roberta": (RobertaConfig, RobertaForMaskedLM, _roberta_tokenizer),
    "xlm-roberta": (XLMRobertaConfig, XLMRobertaForMaskedLM, _xlmr_tokenizer),
    "camembert": (CamembertConfig, CamembertForMaskedLM, _camembert_tokenizer),
    # ELECTRA's discriminator, as google/electra-*-discriminator ships it
    "electra": (ElectraConfig, ElectraForPreTraining, _electra_tokenizer),
    "distilbert": (DistilBertConfig, DistilBertForMaskedLM, _distilbert_tokenizer),
}
ROBERTA_STYLE = ("roberta", "xlm-roberta", "camembert")  # <s> ... </s>, positions after the padding index


def make_tiny_teacher(
    family: str,
    out_dir: str | Path,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    intermediate: int = 128,
    seed: int = 0,
    with_lm_head: bool = True,
) -> Path:
    """Write a tiny pretrained-looking teacher directory and return its path."""
    import torch

    config_cls, model_cls, tokenizer_fn = FAMILIES[family]
    tokenizer = tokenizer_fn(make_sentences(400, seed=1))
    extra = {"pad_token_id": tokenizer.pad_token_id}
    if family in ROBERTA_STYLE:
        extra.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, type_vocab_size=1)
    if family == "distilbert":
        shape = {"n_layers": layers, "dim": hidden, "n_heads": heads, "hidden_dim": intermediate}
    else:
        shape = {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
                 "intermediate_size": intermediate}
    if family == "electra":
        shape["embedding_size"] = hidden
    positions = 256 + (2 if family in ROBERTA_STYLE else 0)
    config = config_cls(vocab_size=len(tokenizer), max_position_embeddings=positions, **shape, **extra)
    torch.manual_seed(seed)
    model = model_cls(config)
    if not with_lm_head:
        model = model.base_model
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def objective_configs(entries) -> list:
    """(name, weight, options) entries as the run config's `objectives` list."""
    from tadistill.config import ObjectiveConfig

    return [ObjectiveConfig(name=name, weight=weight, options=dict(options)) for name, weight, options in entries]
