"""The export recipe: a student (or a fine-tuned classifier) -> an ONNX graph under
onnxruntime, checked against PyTorch, optionally quantised to int8 and scored on a task.

Read top to bottom: check the inputs, load the model (its encoder, or with `task` the
sequence classifier, whose logits are then the graph's output), export to a temporary
directory beside the output, compare onnxruntime with PyTorch on real text (a mismatch
over the tolerance fails the export with its numbers), quantise and report the int8
graph's deviation from the fp32 one, score the task with all three, then write
`export.json` and move the directory into place. The directory also holds the model's
config and tokenizer (and its sentence-transformers files), so it serves on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tadistill.deploy.onnx_graph import HIDDEN, LOGITS, OnnxModel, export_onnx, quantize_int8, require_onnxruntime
from tadistill.deploy.parity import PARITY_TEXTS, compare_outputs, failures
from tadistill.deploy.sentence_transformers import MODULES, copy_layout
from tadistill.staging import staged_directory
from tadistill.errors import ConfigError, DataError, ModelError, Problem
from tadistill.evaluation.embeddings import pooling_mode
from tadistill.evaluation.metrics import compute_metrics
from tadistill.measure import load_encoder
from tadistill.tables import render_text

FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
REPORT_FILE = "export.json"
MIN_OPSET = 14  # the first with the ops these encoders' attention and layer norm export to
MAX_OPSET = 20  # the newest the TorchScript exporter writes


def export(
    student: str | Path,
    output: str | Path | None = None,
    quantize: str | None = None,
    opset: int = 17,
    texts: list[str] | None = None,
    task: str | None = None,
    data_dir: str | None = None,
    max_task_examples: int | None = None,
    max_seq_length: int = 128,
    atol: float = 1e-3,
    min_cosine: float = 0.9999,
) -> dict:
    """Export `student` to `output` (default STUDENT/onnx); returns what `export.json` holds."""
    student = Path(student)
    output = Path(output) if output else student / "onnx"
    _check_inputs(student, quantize, opset)
    require_onnxruntime()
    texts = list(texts or PARITY_TEXTS)
    tokenizer = AutoTokenizer.from_pretrained(student)

    # ---- the model: the bare encoder, or with a task the fine-tuned classifier
    if task:
        _check_classifier(student, task)  # before the task's data are read
        definition, eval_sets = _task_eval_sets(task, data_dir, max_task_examples)
        model = _load_classifier(student, definition)
        graph_output, pooling = LOGITS, None
    else:
        model = load_encoder(str(student), "cpu")
        graph_output, pooling = HIDDEN, pooling_mode(student)

    def reference(**inputs):
        return getattr(model(**inputs), graph_output)

    with staged_directory(output) as staging:
        # ---- fp32 graph, checked against PyTorch: over the tolerance fails
        input_names = export_onnx(model, tokenizer, staging / FP32_FILE, opset, graph_output)
        _copy_companions(student, model, tokenizer, staging)
        fp32 = OnnxModel(staging / FP32_FILE, config=model.config)
        report = {
            "student": str(student), "output": graph_output, "inputs": input_names, "opset": opset,
            "pooling": pooling, "tolerance": {"max_abs_diff": atol, "min_cosine": min_cosine},
            "files": {"fp32": FP32_FILE}, "sizes_mb": {"fp32": _megabytes(staging / FP32_FILE)},
            "parity": {"fp32_vs_torch": compare_outputs(reference, fp32, tokenizer, texts, graph_output, pooling or "mean", max_seq_length)},
        }
        wrong = failures(report["parity"]["fp32_vs_torch"], atol, min_cosine)
        if wrong:
            raise ModelError(f"the ONNX graph of {student} does not match PyTorch: {'; '.join(wrong)} "
                             f"(on {len(texts)} texts); nothing was written to {output}")

        # ---- int8: its deviation from the fp32 graph is reported, not judged
        int8 = None
        if quantize == "int8":
            quantize_int8(staging / FP32_FILE, staging / INT8_FILE)
            int8 = OnnxModel(staging / INT8_FILE, config=model.config)
            report["files"]["int8"] = INT8_FILE
            report["sizes_mb"]["int8"] = _megabytes(staging / INT8_FILE)
            report["parity"]["int8_vs_fp32"] = compare_outputs(fp32, int8, tokenizer, texts, graph_output, pooling or "mean", max_seq_length)

        # ---- the task's score before and after export and quantisation
        if task:
            runs = {"torch fp32": reference, "onnx fp32": fp32, **({"onnx int8": int8} if int8 else {})}
            report["task"] = {
                "name": definition.name, "metric": definition.metric,
                "scores": {name: _score(forward, eval_sets, definition, tokenizer, max_seq_length) for name, forward in runs.items()},
            }

        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _check_inputs(student: Path, quantize: str | None, opset: int) -> None:
    """Every problem with the arguments, before any model is loaded."""
    problems = []
    if not (student / "config.json").is_file():
        problems.append(Problem("STUDENT", str(student), "not a model directory (no config.json); give a tadistill "
                                "student or a directory written by save_pretrained"))
    if quantize not in (None, "int8"):
        problems.append(Problem("--quantize", quantize, "only int8 (dynamic quantisation) is supported"))
    if not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(Problem("--opset", opset, f"choose an ONNX opset from {MIN_OPSET} to {MAX_OPSET}"))
    if problems:
        raise ConfigError(problems)


def _task_eval_sets(task: str, data_dir: str | None, max_examples: int | None):
    """The task's definition and its eval sets (each cut to `max_examples`)."""
    from tadistill.evaluation.file_tasks import is_task_file, load_file_task, read_file_task
    from tadistill.evaluation.layouts import load_task_data
    from tadistill.evaluation.tasks import get_task

    if is_task_file(task):
        definition, data = load_file_task(read_file_task(task))
    else:
        definition = get_task(task)
        data = load_task_data(definition, data_dir)
    evals = {name: split.select(range(min(len(split), max_examples))) if max_examples else split
             for name, split in data.evals.items()}
    return definition, evals


def _check_classifier(student: Path, task: str) -> None:
    architectures = json.loads((student / "config.json").read_text()).get("architectures") or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ModelError(f"--task {task}: {student} holds no fine-tuned classifier (architectures "
                         f"{architectures}); export the directory `tadistill finetune` wrote")


def _load_classifier(student: Path, task) -> torch.nn.Module:
    """The fine-tuned classifier in `student`; refused when its head predicts another number of labels."""
    config = json.loads((student / "config.json").read_text())
    labels = len(config.get("id2label") or {}) or 2
    if labels != task.num_labels:
        raise ModelError(f"--task {task.name}: {student} predicts {labels} labels, the task has {task.num_labels}")
    return AutoModelForSequenceClassification.from_pretrained(student).float().eval()


def _score(forward, eval_sets: dict, task, tokenizer, max_seq_length: int, batch_size: int = 32) -> dict:
    """The task's score on each eval set with `forward` (tokenizer tensors -> logits)."""
    scores = {}
    with torch.inference_mode():
        for name, split in eval_sets.items():
            predictions = []
            for start in range(0, len(split), batch_size):
                rows = split[start : start + batch_size]
                segments = [rows["text_a"]] + ([rows["text_b"]] if "text_b" in rows else [])
                inputs = tokenizer(*segments, padding=True, truncation=True, max_length=max_seq_length, return_tensors="pt")
                logits = forward(**inputs).float()  # (B, labels)
                predictions.append(logits.squeeze(-1) if task.is_regression else logits.argmax(-1))  # (B,)
            if not predictions:
                raise DataError(f"task {task.name}: the eval set {name} is empty")
            labels = torch.tensor(split["label"]).numpy()
            scores[name] = compute_metrics(task.metric, labels, torch.cat(predictions).numpy())["score"]
    return scores


def _copy_companions(student: Path, model, tokenizer, target: Path) -> None:
    """The config and tokenizer beside the graph, and the sentence-transformers files when the
    student has them: the export directory is then all a service needs."""
    model.config.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if (student / MODULES).is_file():
        copy_layout(student, target, model.config.hidden_size)


def _megabytes(path: Path) -> float:
    return path.stat().st_size / 1e6


def format_report(report: dict) -> str:
    """The parity numbers (and task scores) as a plain-text table."""
    rows = []
    for name, numbers in report["parity"].items():
        rows.append([
            name.replace("_", " "), numbers["texts"], f"{numbers['max_abs_diff']:.2e}",
            f"{numbers['min_cosine']:.6f}" if "min_cosine" in numbers else "-",
            f"{numbers['mean_cosine']:.6f}" if "mean_cosine" in numbers else f"{numbers['same_prediction']:.1%}",
        ])
    last = "mean cosine" if report["output"] == HIDDEN else "same class"
    text = render_text(["comparison", "texts", "max |diff|", "min cosine", last], rows)
    text += "\nsizes: " + ", ".join(f"{k} {v:.1f} MB" for k, v in report["sizes_mb"].items())
    if "task" in report:
        task = report["task"]
        sets = list(next(iter(task["scores"].values())))
        table = [[name, *(f"{100 * scores[s]:.2f}" for s in sets)] for name, scores in task["scores"].items()]
        text += f"\n\n{task['name']} ({task['metric']})\n" + render_text(["model", *sets], table)
    return text
