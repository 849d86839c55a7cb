"""Packing: block lengths, each family's special tokens, separators, long documents, padding."""

from __future__ import annotations

import datasets
import pytest
from transformers import AutoConfig, AutoTokenizer

from tadistill.data import block_layout, pack_documents, pack_token_lists
from tadistill.errors import ConfigError
from tiny import make_sentences

FRAME = {"bert": ("[CLS]", "[SEP]"), "roberta": ("<s>", "</s>"), "xlm-roberta": ("<s>", "</s>")}


@pytest.fixture(scope="module")
def family_tokenizer(any_teacher):
    return AutoConfig.from_pretrained(any_teacher).model_type, AutoTokenizer.from_pretrained(any_teacher)


def packed(tokenizer, docs: list[str], max_seq_length: int) -> list[dict]:
    blocks = pack_documents(datasets.Dataset.from_dict({"text": docs}), tokenizer, max_seq_length)
    return list(blocks)


def content_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_layout_uses_each_familys_special_tokens(family_tokenizer):
    family, tokenizer = family_tokenizer
    layout = block_layout(tokenizer, 16)
    first, last = FRAME[family]
    assert tokenizer.convert_ids_to_tokens(list(layout.prefix)) == [first]
    assert tokenizer.convert_ids_to_tokens(list(layout.suffix)) == [last]
    assert tokenizer.convert_ids_to_tokens(list(layout.separator)) == [last]
    assert layout.content_length == 16 - tokenizer.num_special_tokens_to_add()


def test_one_short_document_is_what_the_tokenizer_itself_makes(family_tokenizer):
    _, tokenizer = family_tokenizer
    doc = make_sentences(1, seed=5)[0]
    [block] = packed(tokenizer, [doc], 64)
    reference = tokenizer(doc, padding="max_length", max_length=64)
    assert block["input_ids"] == reference["input_ids"]
    assert block["attention_mask"] == reference["attention_mask"]


def test_documents_are_joined_by_the_separator(family_tokenizer):
    family, tokenizer = family_tokenizer
    first, second = "the model is small.", "a teacher and a student."
    [block] = packed(tokenizer, [first, second], 48)
    sep = FRAME[family][1]
    sep_id = tokenizer.convert_tokens_to_ids(sep)
    cls_id = tokenizer.convert_tokens_to_ids(FRAME[family][0])
    expected = [cls_id, *content_ids(tokenizer, first), sep_id, *content_ids(tokenizer, second), sep_id]
    assert block["input_ids"][: len(expected)] == expected
    assert set(block["input_ids"][len(expected) :]) == {tokenizer.pad_token_id}
    assert block["attention_mask"] == [1] * len(expected) + [0] * (48 - len(expected))


def test_long_document_is_split_across_full_blocks(family_tokenizer):
    _, tokenizer = family_tokenizer
    doc = " ".join(make_sentences(40, seed=7))
    ids = content_ids(tokenizer, doc)
    blocks = packed(tokenizer, [doc], 32)
    size = 32 - tokenizer.num_special_tokens_to_add()
    assert len(blocks) == -(-len(ids) // size)
    assert all(len(b["input_ids"]) == 32 and len(b["attention_mask"]) == 32 for b in blocks)
    assert all(sum(b["attention_mask"]) == 32 for b in blocks[:-1])
    # Strip each block's frame and padding: the pieces put back together are the document.
    pieces = [b["input_ids"][1 : sum(b["attention_mask"]) - 1] for b in blocks]
    assert [t for piece in pieces for t in piece] == ids
    last = blocks[-1]
    real = sum(last["attention_mask"])
    assert real == len(ids) - size * (len(blocks) - 1) + 2
    assert last["input_ids"][real:] == [tokenizer.pad_token_id] * (32 - real)


def test_pack_token_lists_against_a_plain_reference():
    from tadistill.data.packing import BlockLayout

    layout = BlockLayout(length=6, prefix=(100,), suffix=(101,), separator=(102,), pad_id=0)
    docs = [[1, 2, 3], [], [4, 5, 6, 7, 8, 9], [10]]
    # Reference: the documents joined by the separator, cut every 4 tokens, framed, padded.
    stream = [1, 2, 3, 102, 4, 5, 6, 7, 8, 9, 102, 10]
    chunks = [stream[i : i + 4] for i in range(0, len(stream), 4)]
    expected_ids = [[100, *c, 101] + [0] * (4 - len(c)) for c in chunks]
    expected_mask = [[1] * (len(c) + 2) + [0] * (4 - len(c)) for c in chunks]
    result = pack_token_lists(docs, layout)
    assert result == {"input_ids": expected_ids, "attention_mask": expected_mask}


def test_without_packing_each_document_gets_blocks_of_its_own():
    from tadistill.data.packing import BlockLayout

    layout = BlockLayout(length=6, prefix=(100,), suffix=(101,), separator=(102,), pad_id=0)
    docs = [[1, 2, 3], [], [4, 5, 6, 7, 8, 9], [10]]
    # Reference: every non-empty document cut every 4 tokens on its own, framed, padded; no separator.
    chunks = [[1, 2, 3], [4, 5, 6, 7], [8, 9], [10]]
    expected_ids = [[100, *c, 101] + [0] * (4 - len(c)) for c in chunks]
    expected_mask = [[1] * (len(c) + 2) + [0] * (4 - len(c)) for c in chunks]
    assert pack_token_lists(docs, layout, packing=False) == {"input_ids": expected_ids, "attention_mask": expected_mask}


def test_num_proc_keeps_the_token_stream(bert_teacher):
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    docs = datasets.Dataset.from_dict({"text": make_sentences(200, seed=2)})
    single = pack_documents(docs, tokenizer, 32)
    double = pack_documents(docs, tokenizer, 32, num_proc=2)

    def text_tokens(blocks):
        specials = set(tokenizer.all_special_ids)
        return [t for b in blocks for t in b["input_ids"] if t not in specials]

    # Each process packs its half on its own: one more partial block, the same text otherwise.
    assert text_tokens(double) == text_tokens(single)
    assert len(single) <= len(double) <= len(single) + 1


def test_block_too_short_for_the_special_tokens(bert_teacher):
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    with pytest.raises(ConfigError, match="data.max_seq_length=2"):
        block_layout(tokenizer, 2)
