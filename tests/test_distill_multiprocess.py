"""Two processes (`accelerate launch --multi_gpu --num_processes 2`: DDP, gloo on a machine
without GPUs) run the same recipe data-parallel: both ranks end with identical weights on
disjoint data, every process's state is in each checkpoint, and a run killed (SIGKILL) or
stopped (SIGTERM to one process only) and resumed ends bitwise equal to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny import make_sentences

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"
# od exercises every source of randomness: MLM masking, dropout (its own stream per process), data order
RESUME_SETTINGS = ["train.max_steps=40", "train.save_every=10", "train.batch_size=8", "data.max_seq_length=64"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def setup(tiny_teacher_factory, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text("\n".join(make_sentences(800, seed=9, min_words=8, max_words=40)) + "\n")
    return tiny_teacher_factory("bert", layers=4), corpus


def free_port() -> int:
    """A port nobody listens on: accelerate's default (29500) may be held by another run."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(config: str, teacher: Path, corpus: Path, output: Path, settings: list[str], *extra: str) -> list[str]:
    sets = [*settings, f"teacher.path={teacher}", f"data.sources.0.path={corpus}"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--main_process_port", str(free_port()),
            "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "tadistill.cli", "distill", str(CONFIGS / config), "--output", str(output),
            *[arg for s in sets for arg in ("--set", s)], *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "student" / "model.safetensors")


def every_process_saved(checkpoint: Path) -> bool:
    return all((checkpoint / f"random_states_{rank}.pkl").is_file() for rank in (0, 1))


def test_two_processes_share_the_work(setup, tmp_path):
    teacher, corpus = setup
    run_dir = tmp_path / "run"
    settings = ["train.max_steps=8", "train.record_blocks=true", "train.save_every=4"]
    result = run(command("mix.yaml", teacher, corpus, run_dir, settings))
    assert result.returncode == 0, result.stderr[-3000:]

    metadata = json.loads((run_dir / "student" / "tadistill.json").read_text())
    assert metadata["processes"] == 2
    digests = metadata["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]

    ranks = [(run_dir / "blocks" / f"rank-{r}.txt").read_text().split() for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 8 * 8  # 8 steps x batch 8 on each rank
    assert not set(ranks[0]) & set(ranks[1]), "both ranks trained on the same block"
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-00000004", "step-00000008"]
    assert all(every_process_saved(c) for c in checkpoints)


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory) -> dict[str, torch.Tensor]:
    teacher, corpus = setup
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run(command("od.yaml", teacher, corpus, run_dir, RESUME_SETTINGS))
    assert result.returncode == 0, result.stderr[-3000:]
    return weights(run_dir)


def workers(launcher: subprocess.Popen) -> list[int]:
    """The launcher's child processes: the two ranks."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    return [int(pid) for pid in children]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL-all", "SIGTERM-one-rank"])
def test_two_process_resume_is_bitwise_exact(sig, setup, uninterrupted, tmp_path):
    teacher, corpus = setup
    run_dir = tmp_path / "run"
    launcher = subprocess.Popen(command("od.yaml", teacher, corpus, run_dir, RESUME_SETTINGS), env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    ranks = []
    try:
        first = run_dir / "checkpoints" / "step-00000010"
        deadline = time.monotonic() + 300
        while not (first / "progress.json").exists() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        ranks = workers(launcher)  # each in a session of its own (torch elastic starts them so)
        assert len(ranks) == 2
        if sig == signal.SIGKILL:  # the whole job dies at once, as when a node is lost
            for pid in [launcher.pid, *ranks]:
                os.kill(pid, signal.SIGKILL)
        else:  # one rank is told to stop: both must stop at the same step, checkpointed together
            os.kill(ranks[1], signal.SIGTERM)
        out, err = launcher.communicate(timeout=300)
    finally:
        for pid in [launcher.pid, *ranks]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not (run_dir / "student").exists(), "the run finished before it could be interrupted"
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*"))
    assert checkpoints and all(every_process_saved(c) for c in checkpoints)
    if sig == signal.SIGTERM:  # each rank says where it stopped: the same step, one checkpoint
        step = json.loads((checkpoints[-1] / "progress.json").read_text())["step"]
        stops = [line for line in out.splitlines() if "stopped by SIGTERM" in line]
        assert len(stops) == 2 and all(f"at step {step};" in line for line in stops), out[-3000:]
        assert step > 10 and "exitcode  : 143" in err

    resumed = run(command("od.yaml", teacher, corpus, run_dir, RESUME_SETTINGS, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    final = weights(run_dir)
    assert final.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(final[name], tensor), name
