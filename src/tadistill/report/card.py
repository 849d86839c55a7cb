"""The model card of a student directory: `README.md` with the metadata the Hugging Face
hub reads (base_model, library_name, tags, datasets, license, language), written through
`huggingface_hub`'s ModelCard, and a body saying how the student was distilled and, when
known, how it scores and how fast it is.

What the card says comes from the student directory itself (`tadistill.json`,
`config.json`), the run's resolved config next to it (`../config.yaml`) and, for a local
teacher with a card of its own, that card's license, language and datasets (a student
inherits its teacher's license terms). `distill` writes the card when it saves the
student; `tadistill report` rewrites it with the scores and latency it found.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from huggingface_hub import ModelCard, ModelCardData

from tadistill.tables import render_markdown

CARD = "README.md"


def write_model_card(
    student_dir: str | Path,
    *,
    scores: list[tuple[str, str]] | None = None,
    latency: list[tuple[str, str, str]] | None = None,
) -> Path:
    """Write `student_dir/README.md` atomically; `scores` are (task, value) and `latency`
    (setting, milliseconds, speedup) rows, already formatted."""
    student_dir = Path(student_dir)
    meta = _read_json(student_dir / "tadistill.json")
    config_path = student_dir.parent / "config.yaml"
    run_config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    run_config = run_config if isinstance(run_config, dict) else {}
    teacher = meta.get("teacher") or run_config.get("teacher", {}).get("path")
    inherited = _teacher_card_data(teacher)
    objectives = meta.get("objectives") or run_config.get("objectives", [])
    data = ModelCardData(
        base_model=teacher,
        library_name="transformers",
        license=inherited.get("license"),
        language=inherited.get("language"),
        datasets=_hub_datasets(run_config) or None,
        pipeline_tag="feature-extraction",
        tags=["tadistill", "knowledge-distillation", "task-agnostic-distillation",
              *dict.fromkeys(o.get("name", "") for o in objectives if o.get("name"))],
    )
    body = _body(student_dir, meta, run_config, objectives, teacher, scores or [], latency or [])
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    path = student_dir / CARD
    partial = path.with_name(f"{CARD}.partial")
    partial.write_text(str(card), encoding="utf-8")
    partial.replace(path)
    return path


def _body(student_dir, meta, run_config, objectives, teacher, scores, latency) -> str:
    shape = _shape(student_dir)
    student = run_config.get("student", {})
    lines = [
        f"# {_title(student_dir)}",
        "",
        f"A {shape} encoder distilled from [{teacher}]({_link(teacher)}) with "
        "tadistill (task-agnostic knowledge distillation): it learned from the teacher on "
        "unlabeled text and is meant to be fine-tuned like any encoder of its family.",
        "",
        "## How it was distilled",
        "",
        f"- teacher: `{teacher}`",
        f"- student: {shape}, initialised `{meta.get('student_init', student.get('init', 'unknown'))}`"
        + (f" from teacher blocks {student['init_layers']}" if student.get("init_layers") else ""),
    ]
    for objective in objectives:
        options = {k: v for k, v in objective.items() if k not in ("name", "weight", "mapping")}
        described = ", ".join(f"{k}: {v}" for k, v in options.items())
        mapping = f"; layer mapping `{objective['mapping']}`" if "mapping" in objective else ""
        lines.append(f"- objective `{objective.get('name')}` (weight {objective.get('weight', 1.0)}){mapping}"
                     + (f" ({described})" if described else ""))
    if "steps" in meta:
        lines.append(f"- {meta['steps']:,} optimizer steps, {meta.get('tokens_seen', 0):,} tokens seen"
                     + (f" on {meta['processes']} process(es)" if meta.get("processes") else ""))
    sources = run_config.get("data", {}).get("sources", [])
    if sources:
        lines.append("- data: " + ", ".join(f"`{s.get('path')}`" for s in sources)
                     + f", {run_config['data'].get('max_seq_length', '?')} tokens per block")
    train = run_config.get("train", {})
    if train:
        lines.append(f"- optimisation: batch {train.get('batch_size')} x {train.get('gradient_accumulation_steps', 1)} "
                     f"accumulation, learning rate {train.get('learning_rate')}, warmup {train.get('warmup_steps')} steps, "
                     f"precision {train.get('mixed_precision')}")
    if scores:
        lines += ["", "## Scores", "", render_markdown(["Task", "Score"], scores)]
    if latency:
        lines += ["", "## Latency", "", render_markdown(["Setting", "Median ms", "Speedup vs teacher"], latency)]
    lines += [
        "", "## Use", "", "```python", "from transformers import AutoModel, AutoTokenizer", "",
        f'model = AutoModel.from_pretrained("{student_dir}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{student_dir}")', "```", "",
        "`tadistill.json` in this directory records the objectives, steps and tokens exactly.", "",
    ]
    return "\n".join(lines)


def _title(student_dir: Path) -> str:
    """The run's name: runs/<name>/student, or a study's cells/<name>/run/student."""
    run_dir = student_dir.parent if student_dir.name == "student" else student_dir
    return run_dir.parent.name if run_dir.name == "run" else run_dir.name


def _teacher_card_data(teacher: str | None) -> dict:
    """license, language and datasets of a local teacher's own card (nothing for a hub id:
    reading its card needs the network)."""
    if not teacher or not (Path(teacher) / CARD).is_file():
        return {}
    try:
        data = ModelCard.load(Path(teacher) / CARD).data.to_dict()
    except Exception:  # a teacher's malformed card must not stop the student's  # noqa: BLE001
        return {}
    return {key: data[key] for key in ("license", "language", "datasets") if data.get(key)}


def _hub_datasets(run_config: dict) -> list[str]:
    """The corpus sources that are hub datasets (owner/name, not a local path)."""
    names = []
    for source in run_config.get("data", {}).get("sources", []):
        path = str(source.get("path", ""))
        is_hub = source.get("format") == "hub" or (
            source.get("format", "auto") == "auto" and "/" in path and not Path(path).exists()
            and not any(c in path for c in "*?") and not Path(path).suffix and not path.startswith((".", "/"))
        )
        if is_hub:
            names.append(path)
    return names


def _shape(student_dir: Path) -> str:
    config = _read_json(student_dir / "config.json")
    layers = config.get("num_hidden_layers", config.get("n_layers"))
    hidden = config.get("hidden_size", config.get("dim"))
    heads = config.get("num_attention_heads", config.get("n_heads"))
    family = config.get("model_type", "encoder")
    return f"{layers}-layer, {hidden}-wide, {heads}-head {family}"


def _link(teacher: str | None) -> str:
    return f"https://huggingface.co/{teacher}" if teacher and not Path(teacher).exists() else str(teacher)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
