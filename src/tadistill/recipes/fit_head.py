"""fit-head: give a teacher without a masked-LM head (sentence-embedding checkpoints such as
all-MiniLM-L6-v2, e5, bge) a trained one, so that `od` can distil its output distribution.

Read top to bottom: check the teacher and the corpus (nothing runs when anything is wrong),
build the family's `*ForMaskedLM` from the teacher (its encoder weights; a new head, the
decoder tied to the teacher's word embeddings), freeze the encoder, pack the corpus and
hold a seeded share of its blocks out, measure the untrained head on the held-out blocks,
train the head by masked-LM on the rest (encoder forward without grad in bf16, the head on
the masked positions only, AdamW with linear warmup and decay), measure again, and save a
plain `*ForMaskedLM` directory (safetensors) that `od` and `AutoModelForMaskedLM` load.

The encoder stays exactly the teacher's: only the head's transform, LayerNorm and output
bias learn, so a student distilled from this directory learns from the same encoder.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, AutoTokenizer

from tadistill.arch import adapter_for
from tadistill.config import DataConfig, SourceConfig
from tadistill.data import BlockCollator, PackedBlocks, build_corpus, corpus_problems
from tadistill.errors import ConfigError, ModelError, Problem
from tadistill.models import load_model_config
from tadistill.paths import resolve_path
from tadistill.precision import resolve_precision, slow_bf16_warning
from tadistill.staging import staged_directory
from tadistill.tables import render_text
from tadistill.training import adamw, parameter_groups

HELDOUT_BLOCKS = (0.05, 256)  # share of the corpus's blocks held out, and at most this many


def fit_head(
    teacher: str,
    sources: list[str],
    output: str | Path,
    *,
    documents: str = "blank-line",
    steps: int = 300,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    max_seq_length: int = 128,
    mlm_probability: float = 0.15,
    precision: str = "auto",
    seed: int = 0,
) -> dict:
    """Fit a masked-LM head on the frozen `teacher`; returns (and writes to
    `output/fit_head.json`) the held-out loss and top-1 accuracy before and after."""
    output = Path(output)
    data = DataConfig(sources=[SourceConfig(path=resolve_path(p), documents=documents) for p in sources], max_seq_length=max_seq_length,
                      mlm_probability=mlm_probability)
    problems = corpus_problems(data)
    problems += _setting_problems(steps, learning_rate, batch_size, precision)
    config = load_model_config(teacher)
    adapter = adapter_for(config)
    if adapter.lm_head is None:
        problems.append(Problem("teacher", teacher, f"the {adapter.family} family has no masked-LM head class to fit"))
    elif adapter.checkpoint_has_lm_head(config):
        problems.append(Problem("teacher", teacher, "already has a trained masked-LM head (`od` reads it directly)"))
    if output.exists() and any(output.iterdir()):
        problems.append(Problem("--output", str(output), "exists and is not empty; choose another or delete it"))
    if problems:
        raise ConfigError(problems)

    torch.manual_seed(seed)  # the new head's initial weights
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    # the decoder is the teacher's word-embedding matrix (tied), as BERT's pre-training has it
    model = AutoModelForMaskedLM.from_pretrained(teacher, tie_word_embeddings=True)
    model.eval()  # no dropout: the encoder is the teacher as `od` will run it
    model.requires_grad_(False)
    head = adapter.lm_head_module(model)
    head.requires_grad_(True)
    model.get_input_embeddings().requires_grad_(False)  # the decoder is tied to it: the teacher's own
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise ModelError(f"{teacher}: the masked-LM decoder could not be tied to the word embeddings")
    trainable = [p for p in head.parameters() if p.requires_grad]

    corpus = build_corpus(data.sources, tokenizer, max_seq_length=max_seq_length, seed=seed)
    blocks = corpus.blocks.shuffle(seed=seed)
    held = max(1, min(HELDOUT_BLOCKS[1], int(len(blocks) * HELDOUT_BLOCKS[0])))
    if len(blocks) - held < 1:
        raise ConfigError([Problem("--data", sources, f"gives {len(blocks)} block(s) of {max_seq_length} tokens; "
                                   "fitting needs at least 2 (one is held out)")])
    heldout, train = PackedBlocks(blocks.select(range(held))), PackedBlocks(blocks.select(range(held, len(blocks))))
    collate = BlockCollator(tokenizer, mlm_probability, seed)
    precision = resolve_precision(precision, torch.device("cpu"))
    if warning := slow_bf16_warning(precision, torch.device("cpu"), "--precision"):
        print(warning)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def encode(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output at the masked positions (N, d) and their labels (N,)."""
        selected = batch["labels"] != -100  # (B, n)
        with torch.no_grad(), autocast:
            hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return hidden[selected].float(), batch["labels"][selected]

    def evaluate() -> dict:
        loss, correct, count = 0.0, 0, 0
        for start in range(0, len(heldout), batch_size):
            # mask keys fixed by position: every evaluation sees the same masks
            batch = collate(heldout.__getitems__([(i, 10**9 + i) for i in range(start, min(start + batch_size, len(heldout)))]))
            hidden, labels = encode(batch)
            with torch.no_grad():
                logits = head(hidden)  # (N, V)
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(-1) == labels).sum().item()
            count += labels.numel()
        return {"loss": loss / max(count, 1), "top1": correct / max(count, 1), "tokens": count}

    before = evaluate()
    optimizer = adamw(parameter_groups(head, weight_decay=0.01), lr=learning_rate, eps=1e-6)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    order = torch.Generator().manual_seed(seed)
    permutation, cursor, epoch = torch.randperm(len(train), generator=order), 0, 0
    print(f"fit-head: {steps} steps of {batch_size} x {max_seq_length} tokens on {len(train)} blocks "
          f"({held} held out); {sum(p.numel() for p in trainable):,} trainable parameters")
    head.train()
    for step in range(steps):
        if cursor + batch_size > len(permutation):  # a new epoch: a new order and new masks
            permutation, cursor, epoch = torch.randperm(len(train), generator=order), 0, epoch + 1
        indices = permutation[cursor:cursor + batch_size].tolist()
        cursor += batch_size
        hidden, labels = encode(collate(train.__getitems__([(i, epoch * len(train) + i) for i in indices])))
        loss = F.cross_entropy(head(hidden), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise ModelError(f"fit-head: non-finite loss at step {step + 1}; lower --learning-rate ({learning_rate})")
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            print(f"  step {step + 1:>5}/{steps}  loss {loss.item():.3f}")
    head.eval()
    after = evaluate()

    result = {"teacher": teacher, "steps": steps, "batch_size": batch_size, "max_seq_length": max_seq_length,
              "learning_rate": learning_rate,
              "heldout_blocks": held, "before": before, "after": after}
    _save(model, tokenizer, output, result)
    print(render_text(["head", "held-out MLM loss", "top-1 accuracy"], [
        ["untrained", f"{before['loss']:.3f}", f"{before['top1']:.3f}"],
        ["fitted", f"{after['loss']:.3f}", f"{after['top1']:.3f}"],
    ]))
    print(f"fit-head: {output} loads with AutoModelForMaskedLM; use it as the teacher of an `od` run")
    return result


def _setting_problems(steps: int, learning_rate: float, batch_size: int, precision: str) -> list[Problem]:
    problems = []
    for key, value in (("--steps", steps), ("--batch-size", batch_size)):
        if value < 1:
            problems.append(Problem(key, value, "must be >= 1"))
    if not learning_rate > 0:
        problems.append(Problem("--learning-rate", learning_rate, "must be > 0"))
    if precision not in ("auto", "bf16", "no"):
        problems.append(Problem("--precision", precision, "use auto, bf16 or no"))
    return problems


def _save(model, tokenizer, output: Path, result: dict) -> None:
    """The model with its head as safetensors, the tokenizer and the numbers, written under a
    temporary name and renamed, so a crash never leaves a half-written teacher."""
    with staged_directory(output) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "fit_head.json").write_text(json.dumps(result, indent=2) + "\n")
