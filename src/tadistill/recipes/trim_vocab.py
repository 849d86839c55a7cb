"""The trim-vocab recipe: a student cut down to the tokens a corpus uses.

Read top to bottom: check the arguments, read the corpus (one document a line), count the
tokens the student's tokenizer makes of it, choose the kept ids (every special token, then
by `keep` or `min_count`), rewrite tokenizer.json (and vocab.txt, tokenizer_config.json)
and the weights into a temporary directory, load that back as plain transformers would,
check that texts made only of kept tokens tokenize to the renumbered ids, decode to the same
text and give the same hidden states, then print the savings and move the directory into place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer
from transformers import AutoModelForSequenceClassification

from tadistill.data.sources import read_documents
from tadistill.deploy.vocab import (
    choose_kept,
    count_tokens,
    protected_ids,
    remap_config_ids,
    trim_state_dict,
    trim_tokenizer_config,
    trim_tokenizer_json,
)
from tadistill.staging import staged_directory
from tadistill.errors import ConfigError, DataError, ModelError, Problem
from tadistill.paths import resolve_path

# the class a directory is saved with, by the suffix of its config's architecture
_MODEL_CLASSES = (
    ("ForMaskedLM", AutoModelForMaskedLM),
    ("ForPreTraining", AutoModelForPreTraining),
    ("ForSequenceClassification", AutoModelForSequenceClassification),
)
# tokenizer files that a trimmed tokenizer.json would contradict: slow-tokenizer vocabularies
_SLOW_VOCABULARIES = ("sentencepiece.bpe.model", "spiece.model", "vocab.json", "merges.txt")
_CHECK_TEXTS = 32


def trim_vocab(
    student: str | Path,
    data: list[str],
    keep: int | None = None,
    min_count: int | None = None,
    output: str | Path | None = None,
    max_documents: int | None = None,
) -> dict:
    """Trim `student` to the tokens of `data` into `output` (default STUDENT-trimmed); returns the numbers."""
    student = Path(student)
    output = Path(output) if output else student.with_name(student.name + "-trimmed")
    _check_arguments(student, data, keep, min_count, output)

    # ---- count the corpus's tokens, choose what stays
    tokenizer = AutoTokenizer.from_pretrained(student)
    if not tokenizer.is_fast or not (student / "tokenizer.json").is_file():
        raise ModelError(f"{student}: trimming needs a fast tokenizer (tokenizer.json)")
    config = AutoConfig.from_pretrained(student)
    documents = _read_corpus(data, max_documents)
    counts = count_tokens(tokenizer, documents)
    protected = protected_ids(tokenizer, config)
    if keep is not None and keep < len(protected):
        raise ConfigError([Problem("--keep", keep, f"fewer than the {len(protected)} special tokens, which are always kept")])
    kept = choose_kept(counts, protected, keep=keep, min_count=min_count)
    print(f"corpus: {len(documents):,} documents, {sum(counts.values()):,} tokens, {len(counts):,} distinct; "
          f"keeping {len(kept):,} of {config.vocab_size:,} ids ({len(protected)} special)")

    # ---- the trimmed directory, written beside the output and checked before it is moved in
    model = _load_model(student)
    vocab_before = config.vocab_size  # the config is renumbered in place below
    with staged_directory(output) as staging:
        _write_trimmed(student, model, config, kept, staging)
        check = _check_equal_outputs(student, staging, tokenizer, documents, kept)
        result = {
            "student": str(student), "output": str(output), "documents": len(documents),
            "vocab_before": vocab_before, "vocab_after": len(kept),
            "params_before": _parameters(model), "params_after": _parameters(_load_model(staging)),
            "disk_mb_before": _weights_mb(student), "disk_mb_after": _weights_mb(staging),
            "check": check,
        }
        (staging / "trim_vocab.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _check_arguments(student: Path, data: list[str], keep, min_count, output: Path) -> None:
    problems = []
    if not (student / "config.json").is_file():
        problems.append(Problem("STUDENT", str(student), "not a model directory (no config.json)"))
    if (keep is None) == (min_count is None):
        problems.append(Problem("--keep/--min-count", (keep, min_count), "give exactly one of them"))
    if not data:
        problems.append(Problem("--data", data, "give at least one corpus source"))
    if output.resolve() == student.resolve():
        problems.append(Problem("--output", str(output), "must differ from STUDENT (the original is kept)"))
    if problems:
        raise ConfigError(problems)


def _read_corpus(sources: list[str], max_documents: int | None) -> list[str]:
    documents: list[str] = []
    for source in sources:
        found = read_documents(resolve_path(source), documents="line", streaming=False)
        documents.extend(found.dataset["text"])
        if max_documents and len(documents) >= max_documents:
            return documents[:max_documents]
    return documents


def _load_model(path: Path) -> torch.nn.Module:
    architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
    auto = next((cls for suffix, cls in _MODEL_CLASSES if any(a.endswith(suffix) for a in architectures)), AutoModel)
    return auto.from_pretrained(path).eval()


def _write_trimmed(student: Path, model: torch.nn.Module, config, kept: list[int], target: Path) -> None:
    """Weights, config and tokenizer files of the trimmed model; other files (the
    sentence-transformers modules, tadistill.json) copied as they are."""
    old_vocab = config.vocab_size
    remap_config_ids(config, kept)
    trimmed = type(model)(config)
    trimmed.load_state_dict(trim_state_dict(model.state_dict(), old_vocab, kept), strict=True)
    trimmed.save_pretrained(target, safe_serialization=True)
    for item in student.iterdir():
        if item.name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt") or item.suffix in (".safetensors", ".bin"):
            continue
        if item.name in _SLOW_VOCABULARIES or item.name == "onnx":  # would contradict the trimmed tokenizer / weights
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name)
        else:
            shutil.copy2(item, target / item.name)
    tokenizer_json = trim_tokenizer_json(json.loads((student / "tokenizer.json").read_text()), kept)
    (target / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False))
    if (student / "tokenizer_config.json").is_file():
        tokenizer_config = trim_tokenizer_config(json.loads((student / "tokenizer_config.json").read_text()), kept)
        (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False))
    if (student / "vocab.txt").is_file() and tokenizer_json["model"]["type"] == "WordPiece":
        by_id = sorted(tokenizer_json["model"]["vocab"].items(), key=lambda item: item[1])
        (target / "vocab.txt").write_text("".join(token + "\n" for token, _ in by_id), encoding="utf-8")


def _check_equal_outputs(student: Path, trimmed_dir: Path, tokenizer, documents: list[str], kept: list[int]) -> dict:
    """Texts made only of kept tokens: renumbered ids, the same decoded text and the same hidden
    states before and after. Whole corpus lines where there are enough, else lines of kept words."""
    kept_set = set(kept)
    new_id = {old: new for new, old in enumerate(kept)}
    texts = _kept_token_texts(tokenizer, documents, kept_set)
    if not texts:
        raise DataError("no text of the corpus is made only of kept tokens; keep more tokens (--keep / --min-count)")
    trimmed_tokenizer = AutoTokenizer.from_pretrained(trimmed_dir)
    before = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    after = trimmed_tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    expected_ids = before["input_ids"].clone().apply_(lambda i: new_id[i])
    if not torch.equal(after["input_ids"], expected_ids):
        raise ModelError(f"the trimmed tokenizer in {trimmed_dir} tokenizes kept-token text differently; nothing was written")
    decoded_equal = all(
        tokenizer.decode(b, skip_special_tokens=True) == trimmed_tokenizer.decode(a, skip_special_tokens=True)
        for b, a in zip(before["input_ids"].tolist(), after["input_ids"].tolist())
    )
    with torch.inference_mode():
        hidden_before = AutoModel.from_pretrained(student).eval()(**before).last_hidden_state  # (B, n, d)
        hidden_after = AutoModel.from_pretrained(trimmed_dir).eval()(**after).last_hidden_state  # (B, n, d)
    mask = before["attention_mask"].bool()
    difference = (hidden_before - hidden_after).abs()[mask].max().item()
    if not decoded_equal or not difference <= 1e-5:
        raise ModelError(f"the trimmed model differs on kept-token text (max |difference| {difference:.2e}, "
                         f"decoded text equal: {decoded_equal}); nothing was written")
    return {"texts": len(texts), "max_abs_diff": difference, "decoded_equal": decoded_equal}


def _kept_token_texts(tokenizer, documents: list[str], kept: set[int]) -> list[str]:
    texts, words = [], []
    for document in documents[:2000]:
        if all(i in kept for i in tokenizer(document, add_special_tokens=False)["input_ids"]):
            texts.append(document)
        elif len(words) < 20 * _CHECK_TEXTS:
            words.extend(w for w in document.split()[:20] if all(i in kept for i in tokenizer(w, add_special_tokens=False)["input_ids"]))
        if len(texts) >= _CHECK_TEXTS:
            return texts
    texts += [" ".join(words[i : i + 20]) for i in range(0, len(words), 20)]
    # a text of kept words may still tokenize with a token that is not kept (pieces across words)
    return [t for t in texts if all(i in kept for i in tokenizer(t, add_special_tokens=False)["input_ids"])][:_CHECK_TEXTS]


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _weights_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".safetensors", ".bin")) / 1e6


def format_result(result: dict) -> str:
    params = f"{result['params_before'] / 1e6:.2f}M -> {result['params_after'] / 1e6:.2f}M parameters " \
             f"({1 - result['params_after'] / result['params_before']:.1%} fewer)"
    disk = f"{result['disk_mb_before']:.2f} MB -> {result['disk_mb_after']:.2f} MB of weights on disk"
    check = result["check"]
    return (f"vocabulary {result['vocab_before']:,} -> {result['vocab_after']:,} tokens; {params}; {disk}\n"
            f"check: {check['texts']} kept-token texts tokenize to the renumbered ids, decode alike, "
            f"max |difference| of hidden states {check['max_abs_diff']:.1e}")
