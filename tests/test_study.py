"""`tadistill study` on tiny models: a two-cell study with a file task runs to the end, a kill
in the middle of a distillation is continued from its checkpoint, a rerun does nothing, a
failed cell is recorded while the other goes on, every problem of every cell is reported
before anything runs, and submitit's local executor runs the same cells as jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tadistill import cli
from tiny import make_sentences

STUDY = Path(__file__).resolve().parents[1] / "configs" / "study" / "tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def inputs(tiny_teacher_factory, tmp_path_factory) -> list[str]:
    """--set arguments pointing the tiny study at a tiny teacher and at data made here."""
    root = tmp_path_factory.mktemp("study-data")
    (root / "corpus.txt").write_text("\n".join(make_sentences(400, seed=2, min_words=8, max_words=30)) + "\n")
    (root / "heldout.txt").write_text("\n".join(make_sentences(60, seed=3)) + "\n")
    words = ["attention", "teacher", "corpus"]
    rows = [{"text": f"{s} {words[i % 3]}", "label": words[i % 3]} for i, s in enumerate(make_sentences(90, seed=4))]
    (root / "task.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    sets = {"teacher.path": tiny_teacher_factory("bert", layers=4), "data.sources.0.path": root / "corpus.txt",
            "evaluation.tasks.0.data": root / "task.jsonl", "evaluation.agreement.texts": root / "heldout.txt"}
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def study_command(output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tadistill.cli", "study", str(STUDY), "--output", str(output), *extra]


def test_a_killed_study_continues_where_it_stopped_and_then_does_nothing(inputs, tmp_path):
    out = tmp_path / "study"
    process = subprocess.Popen(study_command(out, *inputs), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = out / "cells" / "hs-2x48" / "run" / "checkpoints" / "step-00000005" / "progress.json"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()  # SIGKILL: the study cannot clean up; its distill step gets SIGTERM from the kernel
    process.wait()
    assert not (out / "cells" / "hs-2x48" / "run" / "student").exists(), "the cell finished before the kill"

    result = subprocess.run(study_command(out, *inputs), env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resuming  from step" in (out / "logs" / "hs-2x48" / "distill.log").read_text()

    manifest = json.loads((out / "study.json").read_text())
    assert [cell["name"] for cell in manifest["cells"]] == ["hs-2x48", "minilmv2-2x48"]
    assert all(cell["state"] == "done" and cell["error"] is None for cell in manifest["cells"])
    assert manifest["baseline"]["state"] == "done" and manifest["tasks"] == ["keywords"]
    for cell in manifest["cells"]:
        assert set(cell["steps"]) == {"distill", "eval/keywords", "agreement", "bench"}
        assert all(step["state"] == "done" and step["seconds"] > 0 for step in cell["steps"].values())
        cell_dir = out / cell["dir"]
        results = json.loads((cell_dir / "eval" / "keywords" / "results.json").read_text())
        assert results["suite"] == "file" and 0 <= results["tasks"]["keywords"]["score"] <= 1
        agreement = json.loads((cell_dir / "agreement.json").read_text())
        assert agreement["texts"] == 40 and agreement["pooling"] == "mean" and -1 <= agreement["spearman"] <= 1
        bench = json.loads((cell_dir / "bench.json").read_text())
        assert {row["model"] for row in bench["cells"]} == {bench["teacher"], str(cell_dir / "run" / "student")}
    assert (out / "teacher" / "eval" / "keywords" / "results.json").is_file()

    # the killed and continued cell ends as an uninterrupted run of its config does
    fresh = tmp_path / "fresh"
    assert cli.main(["distill", str(out / "cells" / "hs-2x48" / "run.yaml"), "--output", str(fresh)]) == 0
    expected, got = load_file(fresh / "student" / "model.safetensors"), load_file(out / "cells" / "hs-2x48" / "run" / "student" / "model.safetensors")
    assert all(torch.equal(got[name], tensor) for name, tensor in expected.items())

    logs = {path: path.stat().st_mtime_ns for path in (out / "logs").rglob("*.log")}
    again = subprocess.run(study_command(out, *inputs), env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert "3 done, 0 running, 0 failed, 0 pending" in again.stdout
    assert {path: path.stat().st_mtime_ns for path in (out / "logs").rglob("*.log")} == logs  # nothing ran


def test_a_failed_cell_is_recorded_and_the_other_goes_on(inputs, tmp_path, capsys):
    out = tmp_path / "study"
    code = cli.main(["study", str(STUDY), "--output", str(out), *inputs, "--set", "evaluation.tasks=[]",
                     "--set", "evaluation.agreement=", "--set", "evaluation.bench=",
                     "--set", "methods.1.train={learning_rate: 1.0e12, max_grad_norm: 1.0e30, warmup_steps: 0}"])
    assert code == 1
    cells = {cell["name"]: cell for cell in json.loads((out / "study.json").read_text())["cells"]}
    assert cells["hs-2x48"]["state"] == "done"
    failed = cells["minilmv2-2x48"]
    assert failed["state"] == "failed" and failed["steps"]["distill"]["state"] == "failed"
    assert "non-finite loss from objective(s) minilmv2" in failed["error"]
    assert "1 done, 0 running, 1 failed" in capsys.readouterr().out


def test_every_problem_of_every_cell_is_listed_before_anything_runs(inputs, tmp_path, capsys):
    out = tmp_path / "study"
    code = cli.main(["validate", str(STUDY), *inputs, "--set", "students.0.heads=5",
                     "--set", "methods.1.objectives.0.relation_head=4", "--set", "evaluation.tasks.0.label=topic",
                     "--set", "methods.0.train.learning_rate=-1", "--set", "studnets=[]"])
    assert code == 2
    err = capsys.readouterr().err
    for key in ("studnets", "students.0.heads", "methods.1.objectives.0.relation_head",
                "methods.0.train.learning_rate", "evaluation.tasks.0.label"):
        assert f"- {key}=" in err, (key, err)
    assert cli.main(["study", str(STUDY), "--output", str(out), *inputs, "--set", "students.0.heads=5"]) == 2
    assert not out.exists()  # nothing ran, nothing was written
    assert cli.main(["validate", str(STUDY), *inputs]) == 0
    assert "study tiny: 2 cells" in capsys.readouterr().out


def test_submitit_local_jobs_run_the_cells(inputs, tmp_path):
    out = tmp_path / "study"
    sets = ["--set", "evaluation.tasks=[]", "--set", "evaluation.agreement=", "--cells", "hs-*"]
    result = subprocess.run(study_command(out, *inputs, *sets, "--launcher", "submitit-local", "--wait"),
                            env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "submitted hs-2x48 as job" in result.stdout
    state = json.loads((out / "state" / "hs-2x48.json").read_text())
    assert state["job"]["cluster"] == "local" and Path(state["job"]["result"]).is_file()
    assert json.loads((out / "cells" / "hs-2x48" / "bench.json").read_text())["cells"]
    cells = {cell["name"]: cell["state"] for cell in json.loads((out / "study.json").read_text())["cells"]}
    assert cells == {"hs-2x48": "done", "minilmv2-2x48": "pending"}  # not selected
    again = subprocess.run(study_command(out, *inputs, *sets, "--launcher", "submitit-local", "--wait"),
                           env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "submitted" not in again.stdout  # collected, nothing resubmitted


def test_a_step_is_redone_when_its_inputs_change(tmp_path):
    from tadistill.study.plan import Step

    config, student = tmp_path / "run.yaml", tmp_path / "tadistill.json"
    config.write_text("train: {max_steps: 10}\n")
    step = Step("eval/x", ["python", "-m", "tadistill.cli", "evaluate"], str(tmp_path / "results.json"),
                inputs=[str(config), str(student)])
    before = step.fingerprint
    assert step.fingerprint == before  # stable while nothing changes
    student.write_text('{"digest": "a"}')  # the student distilled (again)
    distilled = step.fingerprint
    assert distilled != before
    config.write_text("train: {max_steps: 20}\n")  # the study edited
    assert step.fingerprint not in (before, distilled)
    assert Step("x", step.argv, step.marker).fingerprint != Step("x", [*step.argv, "--seeds", "3"], step.marker).fingerprint


def test_a_method_that_reads_logits_distils_from_the_fitted_head(tiny_teacher_factory, tmp_path):
    teacher = tiny_teacher_factory("bert", layers=2, with_lm_head=False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_sentences(200, seed=2, min_words=8, max_words=30)) + "\n")
    study = tmp_path / "od.yaml"
    study.write_text(
        "# tadistill study od.yaml\nname: od\n"
        f"teacher: {teacher}\n"
        f"data: {{sources: [{{path: {corpus}, documents: line}}], max_seq_length: 32}}\n"
        "train: {batch_size: 8, max_steps: 3, learning_rate: 1.0e-3, warmup_steps: 1, mixed_precision: 'no'}\n"
        "fit_head: {steps: 5}\n"
        "students: [{name: 1x64, layers: 1}]\n"
        "methods: [{name: od, objectives: [{name: od}]}, {name: hs, objectives: [{name: hs}]}]\n"
    )
    assert subprocess.run([sys.executable, "-m", "tadistill.cli", "study", str(study), "--output", str(tmp_path / "s")],
                          env=ENV, capture_output=True, text=True).returncode == 0
    head = tmp_path / "s" / "teacher-head"
    assert json.loads((head / "fit_head.json").read_text())["steps"] == 5
    cell = lambda name: (tmp_path / "s" / "cells" / name / "run.yaml").read_text()  # noqa: E731
    assert f"path: {head}" in cell("od-1x64")  # od learns from the fitted head ...
    assert f"path: {teacher}" in cell("hs-1x64")  # ... the others from the teacher itself
    manifest = json.loads((tmp_path / "s" / "study.json").read_text())
    assert [c["state"] for c in manifest["cells"]] == ["done", "done"]
