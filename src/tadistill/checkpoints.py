"""Checkpoint directories of a run: written by every process, made complete atomically,
found again by `--resume auto`, pruned.

Every process joins `accelerator.save_state` into one temporary directory with a fixed
name (`.tmp-step-N`): the main process writes the weights, optimizer and scheduler, and
each process its own RNG state (an FSDP save needs every process too). Then the main
process writes `progress.json` and renames the directory into place (`step-N`): a crash
at any point before the rename leaves a temporary directory that is never taken for a
checkpoint and is removed when the run continues. Barriers keep the processes together.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from accelerate import Accelerator

from tadistill.errors import TadistillError

PROGRESS_FILE = "progress.json"
PARTIAL_PREFIX = ".tmp-step-"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(accelerator: Accelerator, run_dir: Path, progress: dict, keep: int) -> Path:
    """Write the checkpoint of step `progress["step"]` from every process and keep the newest `keep`.

    A step already saved (a stop signal right after a periodic save) is not written again:
    nothing has changed since.
    """
    root = checkpoint_dir(run_dir)
    final = root / f"step-{progress['step']:08d}"
    partial = root / f"{PARTIAL_PREFIX}{progress['step']:08d}"
    accelerator.wait_for_everyone()
    if (final / PROGRESS_FILE).is_file():
        return final
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / PROGRESS_FILE).write_text(json.dumps(progress, indent=2) + "\n")
        partial.rename(final)
        for old in complete_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def remove_partial_checkpoints(run_dir: Path) -> None:
    """Delete the temporary directories that a crash while checkpointing left behind."""
    root = checkpoint_dir(run_dir)
    if root.is_dir():
        for partial in root.glob(f"{PARTIAL_PREFIX}*"):
            shutil.rmtree(partial)


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are ignored)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step-") and (p / PROGRESS_FILE).is_file()]
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
