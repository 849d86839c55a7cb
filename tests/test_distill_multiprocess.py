"""`accelerate launch --multi_gpu --num_processes 2` (DDP; gloo on a machine without GPUs) runs the same recipe data-parallel on CPU (gloo):
both ranks end with identical weights, and the blocks they trained on are disjoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tiny import make_sentences

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "mix.yaml"


def test_two_processes_share_the_work(tiny_teacher_factory, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_sentences(600, seed=9, min_words=8, max_words=40)) + "\n")
    teacher = tiny_teacher_factory("bert", layers=4)
    run = tmp_path / "run"
    sets = [f"teacher.path={teacher}", f"data.sources.0.path={corpus}", "train.max_steps=8",
            "train.record_blocks=true", "train.save_every=4"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "tadistill.cli", "distill", str(CONFIG), "--output", str(run),
               *[arg for s in sets for arg in ("--set", s)]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]

    metadata = json.loads((run / "student" / "tadistill.json").read_text())
    assert metadata["processes"] == 2
    digests = metadata["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]

    ranks = [(run / "blocks" / f"rank-{r}.txt").read_text().split() for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 8 * 8  # 8 steps x batch 8 on each rank
    assert not set(ranks[0]) & set(ranks[1]), "both ranks trained on the same block"
