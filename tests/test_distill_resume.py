"""Exact resume: a run killed (SIGKILL) or stopped (SIGTERM) mid-way and resumed with
`--resume auto` ends with student weights bitwise identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny import make_sentences

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "od.yaml"
# od exercises every source of randomness: MLM masking, dropout, data order
SETTINGS = ["train.max_steps=60", "train.save_every=10", "train.batch_size=16", "data.max_seq_length=64"]


@pytest.fixture(scope="module")
def setup(tiny_teacher_factory, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text("\n".join(make_sentences(800, seed=5, min_words=8, max_words=40)) + "\n")
    return tiny_teacher_factory("bert", layers=4), corpus


def command(teacher: Path, corpus: Path, output: Path, *extra: str) -> list[str]:
    sets = [*SETTINGS, f"teacher.path={teacher}", f"data.sources.0.path={corpus}"]
    return [sys.executable, "-m", "tadistill.cli", "distill", str(CONFIG), "--output", str(output),
            *[arg for s in sets for arg in ("--set", s)], *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def interrupt_after_first_checkpoint(cmd: list[str], output: Path, sig: int) -> int:
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = output / "checkpoints" / "step-00000010"
    deadline = time.monotonic() + 240
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert not (output / "student").exists(), "the run finished before it could be interrupted"
    return process.returncode, err


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "student" / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory) -> dict[str, torch.Tensor]:
    teacher, corpus = setup
    output = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run(command(teacher, corpus, output))
    assert result.returncode == 0, result.stderr[-2000:]
    return weights(output)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_resume_is_bitwise_exact(sig, setup, uninterrupted, tmp_path):
    teacher, corpus = setup
    output = tmp_path / "run"
    code, err = interrupt_after_first_checkpoint(command(teacher, corpus, output), output, sig)
    if sig == signal.SIGTERM:  # a clean stop: checkpoint saved, exit 128 + 15, no traceback
        assert code == 143, err[-2000:]
        assert "Traceback" not in err
    else:
        assert code == -signal.SIGKILL
    resumed = run(command(teacher, corpus, output, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    final = weights(output)
    assert final.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(final[name], tensor), name


CRASH_WHILE_CHECKPOINTING = """
import os, sys
from pathlib import Path
import accelerate
from tadistill.cli import main

save_state = accelerate.Accelerator.save_state
calls = []

def save_state_then_crash(self, output_dir=None, **kwargs):
    save_state(self, output_dir, **kwargs)
    calls.append(output_dir)
    if len(calls) == 2:  # the second checkpoint: its weights half written, then the process dies
        weights = Path(output_dir) / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        os._exit(137)

accelerate.Accelerator.save_state = save_state_then_crash
sys.exit(main(sys.argv[1:]))
"""


def test_a_crash_while_checkpointing_keeps_the_previous_checkpoint(setup, uninterrupted, tmp_path):
    from tadistill.checkpoints import complete_checkpoints, resolve_resume

    teacher, corpus = setup
    output = tmp_path / "run"
    script = tmp_path / "crash.py"
    script.write_text(CRASH_WHILE_CHECKPOINTING)
    crashed = run([sys.executable, str(script), *command(teacher, corpus, output)[3:]])
    assert crashed.returncode == 137
    previous = output / "checkpoints" / "step-00000010"
    partial = output / "checkpoints" / ".tmp-step-00000020"
    assert partial.is_dir() and not (output / "checkpoints" / "step-00000020").exists()
    assert complete_checkpoints(output) == [previous]
    assert resolve_resume(output, "auto") == previous  # the partial one is never picked
    load_file(previous / "model.safetensors")  # intact

    resumed = run(command(teacher, corpus, output, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming  from step 10" in resumed.stdout
    assert not partial.exists()  # cleaned up when the run continued
    final = weights(output)
    for name, tensor in uninterrupted.items():
        assert torch.equal(final[name], tensor), name
