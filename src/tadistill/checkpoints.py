"""Checkpoint directories of a run: atomic writes, the latest complete one, pruning.

A checkpoint is written into a temporary sibling directory and renamed into place only
when everything (accelerate's state and our `progress.json`) is on disk, so a crash
mid-write never leaves a directory that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tadistill.errors import TadistillError

PROGRESS_FILE = "progress.json"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: Path, step: int, write_state: Callable[[Path], None], progress: dict, keep: int) -> Path:
    """Write a checkpoint for `step` atomically and keep only the newest `keep` ones.

    `write_state(tmp_dir)` writes the training state (e.g. `accelerator.save_state`).
    """
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    write_state(tmp)
    (tmp / PROGRESS_FILE).write_text(json.dumps(progress, indent=2) + "\n")
    if final.exists():  # the same step saved again (e.g. a signal right after a periodic save)
        shutil.rmtree(final)
    tmp.rename(final)
    for old in complete_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are ignored)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / PROGRESS_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: None (fresh start), 'auto' (latest, if any) or a path."""
    if resume is None:
        return None
    if resume == "auto":
        found = complete_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / PROGRESS_FILE).is_file():
        raise TadistillError(f"--resume {resume!r} is not a complete checkpoint directory (no {PROGRESS_FILE} in it)")
    return path


def read_progress(checkpoint: Path) -> dict:
    return json.loads((checkpoint / PROGRESS_FILE).read_text())


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    keys = sorted(set(old) | set(new), key=str)
    differences = []
    for key in keys:
        dotted = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, dotted + ".")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                if isinstance(x, dict) and isinstance(y, dict):
                    differences += config_differences(x, y, f"{dotted}.{i}.")
                elif x != y:
                    differences.append(f"{dotted}.{i}")
        elif a != b:
            differences.append(dotted)
    return differences
