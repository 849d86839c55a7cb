"""Run config: YAML includes, typed overrides, every structural problem reported at once,
shipped configs found as package data."""

from __future__ import annotations

import importlib.resources

import pytest
import yaml

from tadistill.config import RunConfig, dump_yaml, read_run_config, resolve_config_path, shipped_configs
from tadistill.errors import ConfigError

MINIMAL = {"teacher": "t", "data": {"sources": [{"path": "a.txt"}]}, "objectives": [{"name": "hs"}],
           "train": {"max_steps": 10}}


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def read(path, overrides=()) -> RunConfig:
    config, problems = read_run_config(path, overrides)
    assert problems == []
    return config


def test_include_merges_and_the_including_file_wins(tmp_path):
    write(tmp_path / "base.yaml", {**MINIMAL, "train": {"batch_size": 8, "learning_rate": 1e-3, "max_steps": 5},
                                   "student": {"layers": 6}})
    config = read(
        write(tmp_path / "run.yaml", {"include": "base.yaml", "train": {"batch_size": 16},
                                      "objectives": [{"name": "hs", "mapping": "last"}]})
    )
    assert config.train.batch_size == 16
    assert config.train.learning_rate == 1e-3
    assert config.student.layers == 6
    assert config.objectives[0].name == "hs" and config.objectives[0].options == {"mapping": "last"}


def test_overrides_are_typed_and_reach_list_items(tmp_path):
    path = write(tmp_path / "run.yaml", {**MINIMAL, "objectives": [{"name": "minilmv2"}]})
    config = read(path, ["train.max_steps=100", "train.learning_rate=6e-4", "objectives.0.relation_heads=48",
                         "objectives.0.weight=2", "data.sources.0.language=en", "student.init_layers=[2, 4]"])
    assert config.train.max_steps == 100
    assert config.train.learning_rate == pytest.approx(6e-4) and isinstance(config.train.learning_rate, float)
    assert config.objectives[0].options["relation_heads"] == 48
    assert config.objectives[0].weight == 2.0
    assert config.data.sources[0].language == "en"
    assert config.student.init_layers == [2, 4]


def test_teacher_path_alone_is_short_for_the_teacher_section(tmp_path):
    config = read(write(tmp_path / "run.yaml", {**MINIMAL, "teacher": "google-bert/bert-base-uncased"}))
    assert config.teacher.path == "google-bert/bert-base-uncased" and config.teacher.trust_remote_code is False


def test_every_structural_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path / "run.yaml", {**MINIMAL, "trian": {}, "train": {"batch_sise": 3, "max_steps": "many"},
                                         "student": {"layers": 2.5}})
    config, problems = read_run_config(path, ["objectives.3.weight=1", "nonsense"])
    messages = {p.key: p.message for p in problems}
    assert "Did you mean 'train'" in messages["trian"]
    assert "Did you mean 'batch_size'" in messages["train.batch_sise"]
    assert "expected int" in messages["train.max_steps"]
    assert "expected int" in messages["student.layers"]
    assert "objectives.3.weight" in messages and "--set" in messages
    assert len(problems) == 6  # each once: a wrongly typed budget is not also "missing"
    # a value of the wrong type leaves the key at its default, so the value checks can run
    assert config.student.layers is None and config.train.max_steps is None


def test_required_keys_are_named_once(tmp_path):
    config, problems = read_run_config(write(tmp_path / "run.yaml", {"student": {"layers": 2}}))
    assert [p.key for p in problems] == ["teacher.path", "data.sources", "objectives", "train.max_steps"]
    assert "budget" in problems[-1].message


def test_include_cycle_and_missing_file(tmp_path):
    write(tmp_path / "a.yaml", {"include": "b.yaml"})
    write(tmp_path / "b.yaml", {"include": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        read_run_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="no such file"):
        read_run_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(tmp_path):
    path = write(tmp_path / "run.yaml", {**MINIMAL, "objectives": [{"name": "od", "weight": 0.5, "temperature": 2.0}],
                                         "teacher": {"path": "x"}})
    config = read(path)
    again = read(write(tmp_path / "resolved.yaml", yaml.safe_load(dump_yaml(config))))
    assert again == config
    assert isinstance(again, RunConfig)


def test_shipped_configs_are_package_data_found_from_anywhere(tmp_path, monkeypatch):
    packaged = importlib.resources.files("tadistill") / "configs" / "quickstart.yaml"
    assert packaged.is_file() and shipped_configs() / "quickstart.yaml" == packaged
    monkeypatch.chdir(tmp_path)  # no configs/ here: the names resolve to the package's files
    assert resolve_config_path("configs/paper/en/od-6x384.yaml") == shipped_configs() / "paper/en/od-6x384.yaml"
    assert resolve_config_path("tiny/hs.yaml") == shipped_configs() / "tiny" / "hs.yaml"
    (tmp_path / "mine.yaml").write_text("{}")
    assert resolve_config_path("mine.yaml").resolve() == tmp_path / "mine.yaml"
    with pytest.raises(ConfigError, match="Did you mean 'configs/paper/en/od-6x384.yaml'"):
        resolve_config_path("configs/paper/en/od-6x348.yaml")
