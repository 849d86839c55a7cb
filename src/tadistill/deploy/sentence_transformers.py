"""A student in its sentence-transformers teacher's layout, so that `SentenceTransformer(student)`
embeds as the teacher does: the same module list, pooling and normalisation.

A sentence-transformers directory is a Hugging Face model (module path "") plus a
`modules.json` naming the modules that follow it (Pooling in `1_Pooling/`, Normalize,
...), each with its own folder of settings. Those settings are not weights and hold for a
student too; only the pooling's `word_embedding_dimension` follows the student's width.
A Dense module holds weights of the teacher's width: it is kept for a student of the same
width and refused otherwise (the layout is then not written; the plain HF student stays).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

MODULES = "modules.json"
# the files beside modules.json that describe the whole model, not one module
_MODEL_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
_POOLING = "sentence_transformers.models.Pooling"
_DENSE = "sentence_transformers.models.Dense"


def sentence_transformers_dir(teacher: str, revision: str | None = None) -> Path | None:
    """The local directory of `teacher` (a path, or a hub id already in the cache) when it is a
    sentence-transformers model; None otherwise."""
    path = Path(teacher)
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(teacher, revision=revision, local_files_only=True))
        except Exception:  # not cached, or not a hub id: no layout to copy
            return None
    return path if (path / MODULES).is_file() else None


def layout_problem(teacher_dir: Path, student_hidden: int) -> str | None:
    """Why the teacher's layout cannot serve a student of width `student_hidden` (None: it can)."""
    teacher_hidden = _teacher_width(teacher_dir)
    for module in json.loads((teacher_dir / MODULES).read_text()):
        if module.get("type") == _DENSE and teacher_hidden not in (None, student_hidden):
            return (f"its module {module['path']} ({_DENSE}) holds weights for width {teacher_hidden}, "
                    f"the student is {student_hidden} wide")
    return None


def copy_layout(teacher_dir: Path, student_dir: Path, student_hidden: int) -> None:
    """Copy the module list and every module folder of `teacher_dir` beside the student's HF files,
    with the pooling's width set to the student's."""
    for name in _MODEL_FILES:
        if (teacher_dir / name).is_file():
            shutil.copy2(teacher_dir / name, student_dir / name)
    for module in json.loads((teacher_dir / MODULES).read_text()):
        # "" is the Transformer itself (the student's own files); Normalize may have no folder
        folder = module.get("path", "")
        if not folder or not (teacher_dir / folder).is_dir():
            continue
        shutil.copytree(teacher_dir / folder, student_dir / folder, dirs_exist_ok=True)
        if module.get("type") == _POOLING and (student_dir / folder / "config.json").is_file():
            config_path = student_dir / folder / "config.json"
            config = json.loads(config_path.read_text())
            config["word_embedding_dimension"] = student_hidden
            config_path.write_text(json.dumps(config, indent=2) + "\n")


def _teacher_width(teacher_dir: Path) -> int | None:
    config = teacher_dir / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    return data.get("hidden_size", data.get("dim"))
