"""`tadistill trim-vocab` on tiny BERT (WordPiece) and XLM-R (Unigram) students: the trimmed
directory loads with plain transformers, its tokenizer gives the renumbered ids and the same
text back, and its outputs equal the original's on text made of kept tokens."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

from tadistill import cli
from tiny import make_sentences


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("trim-corpus") / "corpus.txt"
    path.write_text("\n".join(make_sentences(40, seed=5, max_words=8)) + "\n")
    return path


@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def trimmed(request, tiny_teacher_factory, corpus, tmp_path_factory):
    student = tiny_teacher_factory(request.param)
    out = tmp_path_factory.mktemp("trimmed") / "student"
    assert cli.main(["trim-vocab", str(student), "--data", str(corpus), "--min-count", "1", "--output", str(out)]) == 0
    return student, out


def test_trimmed_tokenizer_renumbers_and_round_trips(trimmed, corpus):
    student, out = trimmed
    before, after = AutoTokenizer.from_pretrained(student), AutoTokenizer.from_pretrained(out)
    assert len(after) == json.loads((out / "config.json").read_text())["vocab_size"] < len(before)
    assert set(after.all_special_tokens) == set(before.all_special_tokens)
    for text in corpus.read_text().splitlines():  # --min-count 1: every corpus token is kept
        old_ids, new_ids = before(text)["input_ids"], after(text)["input_ids"]
        # the plain reference: the same token strings, each at its id in the trimmed vocabulary
        assert after.convert_tokens_to_ids(before.convert_ids_to_tokens(old_ids)) == new_ids
        assert after.decode(new_ids, skip_special_tokens=True) == before.decode(old_ids, skip_special_tokens=True)


def test_trimmed_model_equals_the_original_on_kept_token_text(trimmed, corpus):
    student, out = trimmed
    texts = corpus.read_text().splitlines()[:8]
    before, after = AutoTokenizer.from_pretrained(student), AutoTokenizer.from_pretrained(out)
    old_batch = before(texts, padding=True, return_tensors="pt")
    new_batch = after(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        old = AutoModel.from_pretrained(student).eval()(**old_batch).last_hidden_state
        new = AutoModel.from_pretrained(out).eval()(**new_batch).last_hidden_state
        torch.testing.assert_close(new, old, atol=1e-6, rtol=0)
        # the masked-LM head keeps the kept tokens' columns, in the kept order
        old_logits = AutoModelForMaskedLM.from_pretrained(student).eval()(**old_batch).logits  # (B, n, V)
        new_logits = AutoModelForMaskedLM.from_pretrained(out).eval()(**new_batch).logits  # (B, n, K)
    kept = before.convert_tokens_to_ids(after.convert_ids_to_tokens(list(range(len(after)))))
    torch.testing.assert_close(new_logits, old_logits[..., kept], atol=1e-5, rtol=0)


def test_removed_tokens_become_unknown(trimmed):
    student, out = trimmed
    before, after = AutoTokenizer.from_pretrained(student), AutoTokenizer.from_pretrained(out)
    removed = [t for t in before.get_vocab() if t not in after.get_vocab() and t.strip("#▁").isalpha()]
    assert removed
    ids = after(removed[0].strip("#▁"), add_special_tokens=False)["input_ids"]
    assert after.unk_token_id in ids or after.convert_ids_to_tokens(ids) != [removed[0]]


def test_keep_sets_the_vocabulary_size_and_reports_savings(bert_teacher, corpus, tmp_path, capsys):
    out = tmp_path / "trimmed"
    assert cli.main(["trim-vocab", str(bert_teacher), "--data", str(corpus), "--keep", "40", "--output", str(out)]) == 0
    result = json.loads((out / "trim_vocab.json").read_text())
    assert result["vocab_after"] == 40 == len(AutoTokenizer.from_pretrained(out))
    hidden = AutoModel.from_pretrained(bert_teacher).config.hidden_size
    # the word embeddings (and the tied decoder's bias) lose one row per removed token
    assert result["params_before"] - result["params_after"] == (result["vocab_before"] - 40) * (hidden + 1)
    assert result["disk_mb_after"] < result["disk_mb_before"]
    assert "fewer" in capsys.readouterr().out


def test_bpe_tokenizers_are_refused_and_nothing_is_written(roberta_teacher, corpus, tmp_path, capsys):
    out = tmp_path / "trimmed"
    assert cli.main(["trim-vocab", str(roberta_teacher), "--data", str(corpus), "--keep", "40", "--output", str(out)]) == 2
    assert "BPE" in capsys.readouterr().err and not out.exists() and list(tmp_path.iterdir()) == []


def test_keep_below_the_special_tokens_is_refused(bert_teacher, corpus, tmp_path, capsys):
    assert cli.main(["trim-vocab", str(bert_teacher), "--data", str(corpus), "--keep", "3", "--output", str(tmp_path / "t")]) == 2
    assert "--keep=3: fewer than the 5 special tokens" in capsys.readouterr().err
