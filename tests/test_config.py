"""Run config: YAML includes, typed overrides, every structural problem reported at once."""

from __future__ import annotations

import pytest
import yaml

from tadistill.config import RunConfig, dump_yaml, load_config
from tadistill.errors import ConfigError


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_include_merges_and_the_including_file_wins(tmp_path):
    write(tmp_path / "base.yaml", {"train": {"batch_size": 8, "learning_rate": 1e-3}, "student": {"layers": 6}})
    config = load_config(
        write(tmp_path / "run.yaml", {"include": "base.yaml", "train": {"batch_size": 16},
                                      "objectives": [{"name": "hs", "mapping": "last"}]})
    )
    assert config.train.batch_size == 16
    assert config.train.learning_rate == 1e-3
    assert config.student.layers == 6
    assert config.objectives[0].name == "hs" and config.objectives[0].options == {"mapping": "last"}


def test_overrides_are_typed_and_reach_list_items(tmp_path):
    path = write(tmp_path / "run.yaml", {"objectives": [{"name": "minilmv2"}], "data": {"sources": [{"path": "a.txt"}]}})
    config = load_config(path, ["train.max_steps=100", "train.learning_rate=6e-4", "objectives.0.relation_heads=48",
                                "objectives.0.weight=2", "data.sources.0.language=en", "student.init_layers=[2, 4]"])
    assert config.train.max_steps == 100
    assert config.train.learning_rate == pytest.approx(6e-4) and isinstance(config.train.learning_rate, float)
    assert config.objectives[0].options["relation_heads"] == 48
    assert config.objectives[0].weight == 2.0
    assert config.data.sources[0].language == "en"
    assert config.student.init_layers == [2, 4]


def test_every_structural_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path / "run.yaml", {"trian": {}, "train": {"batch_sise": 3, "max_steps": "many"},
                                         "student": {"layers": 2.5}})
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["objectives.3.weight=1", "nonsense"])
    problems = {p.key: p.message for p in caught.value.problems}
    assert "Did you mean 'train'" in problems["trian"]
    assert "Did you mean 'batch_size'" in problems["train.batch_sise"]
    assert "expected int" in problems["train.max_steps"]
    assert "expected int" in problems["student.layers"]
    assert "objectives.3.weight" in problems and "--set" in problems
    assert len(caught.value.problems) == 6
    assert str(path) in str(caught.value)


def test_include_cycle_and_missing_file(tmp_path):
    write(tmp_path / "a.yaml", {"include": "b.yaml"})
    write(tmp_path / "b.yaml", {"include": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(tmp_path):
    path = write(tmp_path / "run.yaml", {"objectives": [{"name": "od", "weight": 0.5, "temperature": 2.0}],
                                         "teacher": {"path": "x"}})
    config = load_config(path)
    again = load_config(write(tmp_path / "resolved.yaml", yaml.safe_load(dump_yaml(config))))
    assert again == config
    assert isinstance(again, RunConfig)
