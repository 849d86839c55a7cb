"""The finetune recipe: fine-tune an encoder on one task and score it, the standard GLUE
recipe on accelerate.

Read top to bottom: load the encoder with a fresh head, tokenise (`encode`), then
`finetune`: prepare model, optimiser, schedule and loaders once, train for the epochs,
score every eval set (`score_eval_sets`) and write `metrics.json`.

AdamW (no weight decay on biases and norms), linear schedule with warmup, gradient
clipping at 1.0, bf16 autocast, dynamic padding; predictions of every process are
gathered with `gather_for_metrics`, which also drops the samples that the distributed
sampler repeats to even out the last batch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import is_bf16_available, set_seed
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from tadistill.attention import restore_attention, use_attention
from tadistill.errors import ConfigError, ModelError, Problem
from tadistill.evaluation.layouts import TaskData
from tadistill.evaluation.metrics import average_sets, compute_metrics
from tadistill.evaluation.tasks import Task
from tadistill.precision import resolve_precision, run_device, slow_bf16_warning
from tadistill.training import adamw, parameter_groups

Metrics = dict[str, dict[str, float]]  # eval set name -> metric name -> value


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    _check_model_dir(model_dir)
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load a tokenizer from {model_dir}: {error}") from None


def load_classifier(model_dir: str | Path, task: Task) -> torch.nn.Module:
    """The encoder with a fresh classification (or, for STS-B, regression) head."""
    _check_model_dir(model_dir)
    labels = dict(enumerate(task.labels)) or {0: "score"}
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=task.num_labels,
            problem_type="regression" if task.is_regression else "single_label_classification",
            id2label=labels,
            label2id={name: i for i, name in labels.items()},
        )
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load {model_dir} as a sequence classifier: {error}") from None


def _check_model_dir(model_dir: str | Path) -> None:
    if not (Path(model_dir) / "config.json").is_file():
        raise ModelError(
            f"{model_dir} is not a model directory (no config.json): pass a tadistill student "
            "or a Hugging Face encoder saved with save_pretrained"
        )


def encode(data: TaskData, tokenizer: PreTrainedTokenizerBase, max_seq_length: int) -> TaskData:
    """Tokenize every split (truncated to max_seq_length, unpadded: batches pad themselves)."""

    def encode_split(split: Dataset) -> Dataset:
        def tokenize(batch: dict) -> dict:
            segments = [batch["text_a"]] + ([batch["text_b"]] if "text_b" in batch else [])
            return tokenizer(*segments, truncation=True, max_length=max_seq_length)

        return split.map(tokenize, batched=True, remove_columns=[c for c in split.column_names if c != "label"])

    return TaskData(train=encode_split(data.train), evals={name: encode_split(s) for name, s in data.evals.items()})


def finetune(
    model_dir: str | Path,
    task: Task,
    data: TaskData,
    tokenizer: PreTrainedTokenizerBase,
    *,
    lr: float = 2e-5,
    epochs: int = 3,
    batch_size: int = 32,
    seed: int = 42,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    precision: str = "auto",
    output_dir: str | Path | None = None,
    save_model: bool = False,
) -> Metrics:
    """Fine-tune `model_dir` on `data` (already `encode`d) and return the eval sets' metrics.

    With `output_dir`, writes `metrics.json` there last, so its presence marks a finished
    run; with `save_model` too, the fine-tuned model and tokenizer.
    """
    if precision == "bf16" and not is_bf16_available():
        raise ConfigError([Problem("--precision", precision, "this device has no bf16 support; use auto, fp16 or no")])
    device = run_device()
    precision = resolve_precision(precision, device)
    if warning := slow_bf16_warning(precision, device, "--precision"):
        print(warning)
    accelerator = Accelerator(mixed_precision=precision)
    set_seed(seed)  # the new head's initialisation and the shuffling
    model = load_classifier(model_dir, task)
    # the kernel `train.attention: auto` picks for distilling (matmul on CPU in bf16), given back before saving
    own_attention = use_attention(model, "auto", accelerator.device, precision)
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    train_loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, collate_fn=collate)
    eval_loaders = [DataLoader(split, batch_size=batch_size, collate_fn=collate) for split in data.evals.values()]
    optimizer = adamw(parameter_groups(model, weight_decay), lr=lr)
    # counted in batches before sharding: once prepared, the scheduler advances once per
    # process at each optimizer step, so it still ends at total_steps on any process count
    total_steps = epochs * len(train_loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, scheduler, *eval_loaders = accelerator.prepare(
        model, optimizer, train_loader, scheduler, *eval_loaders
    )

    progress = tqdm(total=epochs * len(train_loader), desc=f"{task.name} lr={lr:g} seed={seed}",
                    disable=not accelerator.is_local_main_process)
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=accelerator.device)
        for batch in train_loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            progress.update()
        mean_loss = accelerator.reduce(loss_sum, reduction="mean").item() / len(train_loader)
        accelerator.print(f"{task.name} epoch {epoch}/{epochs}: train loss {mean_loss:.4f}")
    progress.close()

    metrics = score_eval_sets(model, dict(zip(data.evals, eval_loaders)), task, accelerator)
    if output_dir is not None:
        settings = dict(
            model=str(model_dir), lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
            warmup_ratio=warmup_ratio, weight_decay=weight_decay, precision=precision,
            train_examples=len(data.train),
        )
        score = metrics[task.report_on]["score"]
        record = {"task": task.name, "score": score, "settings": settings, "metrics": metrics}
        restore_attention(accelerator.unwrap_model(model), own_attention)
        _save(accelerator, model, tokenizer, record, Path(output_dir), save_model)
    accelerator.free_memory()
    return metrics


@torch.no_grad()
def score_eval_sets(
    model: torch.nn.Module, loaders: dict[str, DataLoader], task: Task, accelerator: Accelerator
) -> Metrics:
    """The task's metrics on each eval set, plus `dev_avg` / `test_avg` for XNLI's languages."""
    model.eval()
    metrics: Metrics = {}
    for name, loader in loaders.items():
        predictions, labels = [], []
        for batch in loader:
            batch_labels = batch.pop("labels")
            logits = model(**batch).logits.float()  # (B, num_labels)
            batch_predictions = logits.squeeze(-1) if task.is_regression else logits.argmax(-1)  # (B,)
            batch_predictions, batch_labels = accelerator.gather_for_metrics((batch_predictions, batch_labels))
            predictions.append(batch_predictions.cpu())
            labels.append(batch_labels.cpu())
        metrics[name] = compute_metrics(task.metric, torch.cat(labels).numpy(), torch.cat(predictions).numpy())
    if task.suite == "xnli":
        metrics.update({f"{split}_avg": average_sets(metrics, split) for split in ("dev", "test")})
    return metrics


def _save(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    record: dict,
    output_dir: Path,
    save_model: bool,
) -> None:
    if save_model:
        accelerator.unwrap_model(model).save_pretrained(output_dir, is_main_process=accelerator.is_main_process)
        if accelerator.is_main_process:
            tokenizer.save_pretrained(output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        partial = output_dir / "metrics.json.partial"
        partial.write_text(json.dumps(record, indent=2) + "\n")
        partial.replace(output_dir / "metrics.json")  # atomic: a crash never leaves a half-written file
    accelerator.wait_for_everyone()
