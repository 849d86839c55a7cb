"""The distill recipe: teacher + corpus + objectives -> student, on accelerate.

Read top to bottom: validate, set up the run directory (the main process, while the
others wait), build the models, the objectives and the data, prepare everything with
accelerate once, resume if asked, then the loop (forward, backward, clip, step, log,
checkpoint), then export.

Exact resume: a checkpoint holds the student, the objectives' parameters, optimizer,
scheduler, the RNG states of every process and the data position (optimizer steps done,
batches consumed); resuming restores them and skips the consumed batches without
loading them, so on CPU the final weights are bitwise those of an uninterrupted run,
with one process or several. Every process joins each checkpoint (see
`tadistill.checkpoints`), and a stop signal received by any process stops all of them
at the same step.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, gather_object, set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from tadistill.checkpoints import (
    config_differences,
    read_progress,
    remove_partial_checkpoints,
    resolve_resume,
    save_checkpoint,
)
from tadistill.attention import restore_attention, use_attention
from tadistill.compiling import compile_untapped
from tadistill.config import RunConfig, dump_yaml, to_dict
from tadistill.data import build_corpus
from tadistill.deploy.sentence_transformers import layout_problem, sentence_transformers_dir
from tadistill.engine import Distiller
from tadistill.errors import ConfigError, ModelError, TadistillError
from tadistill.models import load_teacher, make_student, restore_dropout, save_student, shape_of
from tadistill.objectives import build_objectives
from tadistill.precision import resolve_precision, run_device, slow_bf16_warning
from tadistill.report.card import write_model_card
from tadistill.training import adamw, budget_spent, parameter_groups, total_steps, tracker_setup
from tadistill.validation import validate_run


# settings a resumed run may change freely: where its metrics are logged changes no weight
RESUMABLE_CHANGES = {"train.log_with"}


def distill(config: RunConfig, run_dir: str | Path, resume: str | None = None, allow_config_change: bool = False) -> Path:
    """Run one distillation; returns the exported student directory."""
    problems = validate_run(config)
    if problems:
        raise ConfigError(problems)
    run_dir = Path(run_dir)
    train = config.train
    log_with, project, tracker_kwargs = tracker_setup(train.log_with, run_dir)

    precision = resolve_precision(train.mixed_precision, run_device())  # auto: bf16 where it is fast
    accelerator = Accelerator(
        # on a machine without an accelerator, torchrun / accelerate launch processes run DDP on gloo
        cpu=not torch.accelerator.is_available(),
        mixed_precision=precision,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        log_with=log_with,
        project_dir=str(run_dir),
        # blocks above the deepest tapped layer (and an unused LM head) get no gradient
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    warning = slow_bf16_warning(precision, accelerator.device, "train.mixed_precision")
    if warning and accelerator.is_main_process:
        print(warning)
    checkpoint = _prepare_run_dir(accelerator, run_dir, config, resume, allow_config_change)
    set_seed(train.seed, device_specific=True)  # each process its own dropout (seed + process index)

    # ---- models: a frozen teacher (bf16 when training in bf16) and its student
    loaded = load_teacher(config.teacher.path, config.teacher.revision, config.teacher.trust_remote_code)
    teacher, tokenizer = loaded.model, loaded.tokenizer
    student = make_student(teacher, config.student, train.seed)
    if precision == "bf16":
        teacher.to(torch.bfloat16)
    teacher.to(accelerator.device)
    use_attention(teacher, train.attention, accelerator.device, precision)
    # the exported student gets its own kernel back
    saved_attention = use_attention(student, train.attention, accelerator.device, precision)
    objectives = build_objectives(config.objectives, teacher=shape_of(teacher), student=shape_of(student))
    if objectives.needs_logits and not loaded.has_lm_head:  # its architectures said so, its weights do not
        raise ModelError(
            f"objective 'od' needs the teacher's masked-LM head, but {config.teacher.path} holds no trained head "
            "weights; use a *ForMaskedLM checkpoint (or `tadistill fit-head`) or drop od"
        )
    if train.compile:
        compile_untapped(teacher, objectives.teacher_taps)
        compile_untapped(student, objectives.student_taps)
    distiller = Distiller(student, objectives)

    # ---- data: packed blocks, MLM-masked only when an objective needs it
    corpus = build_corpus(
        config.data.sources,
        tokenizer,
        max_seq_length=config.data.max_seq_length,
        seed=train.seed,
        sampling_alpha=config.data.sampling_alpha,
        on_decode_error=config.data.on_decode_error,
        packing=config.data.packing,
    )
    loader = corpus.dataloader(
        batch_size=train.batch_size,
        mlm_probability=config.data.mlm_probability if objectives.needs_mlm else None,
        num_workers=train.num_workers,
        mlm_smoothing=config.data.mlm_smoothing,
        group_by_length=config.data.group_by_length,
    )

    # ---- optimisation: AdamW without decay on biases and LayerNorm weights, linear schedule
    tokens_per_step = (
        train.batch_size * train.gradient_accumulation_steps * accelerator.num_processes * config.data.max_seq_length
    )
    steps = total_steps(train.max_steps, train.max_tokens, tokens_per_step)
    optimizer = adamw(
        parameter_groups(distiller, train.weight_decay),
        lr=train.learning_rate,
        betas=tuple(train.adam_betas),
        eps=train.adam_epsilon,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, train.warmup_steps, steps)
    distiller, optimizer, loader, scheduler = accelerator.prepare(distiller, optimizer, loader, scheduler)

    # ---- resume: restore every state, then skip the batches already consumed this epoch
    progress = {"step": 0, "tokens": 0, "epoch": 0, "batches_in_epoch": 0, "processes": accelerator.num_processes}
    if checkpoint is not None:
        progress = read_progress(checkpoint)
        if progress.get("processes", 1) != accelerator.num_processes:
            raise TadistillError(
                f"{checkpoint} was written by {progress.get('processes', 1)} process(es), this run has "
                f"{accelerator.num_processes}: resume with the same number of processes (their data shards and "
                "random states are part of the checkpoint)"
            )
        accelerator.load_state(str(checkpoint))
    if log_with is not None:
        accelerator.init_trackers(project, init_kwargs=tracker_kwargs)

    if accelerator.is_main_process:
        print(_plan(config, teacher, student, objectives, corpus, tokens_per_step, steps, progress, precision))

    metrics_file = run_dir / "metrics.jsonl"
    block_log = _BlockLog(run_dir, accelerator.process_index) if train.record_blocks else None
    bar = tqdm(total=steps, initial=progress["step"], disable=not accelerator.is_main_process, unit="step", dynamic_ncols=True)
    window = _LogWindow()
    stop_signal = None

    def done() -> bool:
        return budget_spent(progress["step"], progress["tokens"], steps, train.max_tokens)

    def save() -> Path:
        return save_checkpoint(accelerator, run_dir, progress, train.keep_checkpoints)

    stops_seen = 0.0
    with _stop_requests() as stop_requested:
        while not done():
            loader.set_epoch(progress["epoch"])
            epoch_loader = accelerator.skip_first_batches(loader, progress["batches_in_epoch"]) if progress["batches_in_epoch"] else loader
            for batch in epoch_loader:
                progress["batches_in_epoch"] += 1
                if block_log:
                    block_log.add(batch["input_ids"])
                with accelerator.accumulate(distiller):
                    loss = distiller(teacher, batch)
                    # one host sync per micro-step, the same for every process: the batch's tokens,
                    # the summed loss (non-finite if any process's is) and how many processes were
                    # asked to stop, so that all stop together, at the same step
                    batch_tokens, loss_sum, stops = accelerator.reduce(
                        torch.stack([
                            batch["attention_mask"].sum().float(),
                            loss.total.detach().float(),
                            torch.tensor(float(stop_requested() is not None), device=accelerator.device),
                        ]),
                        reduction="sum",
                    ).tolist()
                    _check_finite(loss_sum, loss.parts, progress["step"] + 1, run_dir)
                    accelerator.backward(loss.total)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(distiller.parameters(), train.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                progress["tokens"] += int(batch_tokens)
                stops_seen = max(stops_seen, stops)
                window.add(loss, batch_tokens)
                if not accelerator.sync_gradients:
                    continue
                progress["step"] += 1
                bar.update(1)
                if progress["step"] % train.log_every == 0 or done():
                    record = window.flush(progress, scheduler.get_last_lr()[0], accelerator)
                    if accelerator.is_main_process:
                        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
                        with metrics_file.open("a") as f:
                            f.write(json.dumps(record) + "\n")
                        accelerator.log({k: v for k, v in record.items() if k != "step"}, step=progress["step"])
                if progress["step"] % train.save_every == 0:
                    save()
                if stops_seen:  # a process that got no signal itself stops as if sent SIGTERM
                    stop_signal = stop_requested() or signal.SIGTERM
                if stop_signal or done():
                    break
            else:  # the epoch ended: the next one starts from its first batch
                progress["epoch"] += 1
                progress["batches_in_epoch"] = 0
            if stop_signal:
                break
    bar.close()

    if stop_signal:
        path = save()
        distiller = optimizer = loader = scheduler = None  # freed before the group goes: see _leave
        _leave(accelerator)
        raise TrainingStopped(stop_signal, progress["step"], path)
    save()
    out = run_dir / "student"
    # every process must end with the same weights; a mismatch means the ranks diverged
    digests = gather_object([_weights_digest(accelerator.unwrap_model(distiller).student)])
    if len(set(digests)) > 1:
        raise TadistillError(f"the {len(digests)} processes ended with different student weights: {digests}")
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(distiller).student
        restore_dropout(final, teacher)  # student.dropout was for distillation only
        restore_attention(final, saved_attention)
        save_student(
            final,
            tokenizer,
            out,
            metadata={
                "teacher": config.teacher.path,
                "objectives": to_dict(config)["objectives"],
                "steps": progress["step"],
                "tokens_seen": progress["tokens"],
                "student_init": config.student.init,
                "processes": accelerator.num_processes,
                "weights_sha256": digests,
            },
            layout_from=_sentence_transformers_layout(config, final.config.hidden_size),
        )
        write_model_card(out)  # README.md with hub metadata; `tadistill report` adds scores and latency
        print(f"student saved to {out} after {progress['step']} steps and {progress['tokens']:,} tokens")
    # the ranks leave together, after the main process has written the student
    accelerator.wait_for_everyone()
    distiller = optimizer = loader = scheduler = None  # freed before the group goes: see _leave
    _leave(accelerator)
    return out


def _leave(accelerator: Accelerator) -> None:
    """Free what `prepare` made (the caller has dropped its own references), then leave the
    process group.

    In this order because DDP's C++ reducer holds the gloo group: freed after the group has
    left the registry, it destroys the group itself, and that destructor joins gloo's worker
    threads while holding the GIL. A worker still freeing a finished collective's tensors
    (gather_object's, kept alive by the last barrier) needs the GIL for them: both wait
    forever (seen at the end of a two-process test; pytorch/pytorch#56297). Freed first, the
    reducer leaves the group to the registry, whose Python object releases the GIL when it
    destroys the group (pytorch/pytorch#154976).
    """
    accelerator.free_memory()  # accelerate's own references
    gc.collect()  # DDP sits behind reference cycles: collected now, while the group is registered
    accelerator.end_training()


def _sentence_transformers_layout(config: RunConfig, student_hidden: int) -> Path | None:
    """The teacher's directory when the student can be written in its sentence-transformers layout."""
    teacher_dir = sentence_transformers_dir(config.teacher.path, config.teacher.revision)
    if teacher_dir is None:
        return None
    problem = layout_problem(teacher_dir, student_hidden)
    if problem:
        print(f"note: the student is not written as a sentence-transformers model: {problem}")
        return None
    return teacher_dir


class TrainingStopped(TadistillError):
    """Raised after a signal-triggered checkpoint, so the CLI exits without a traceback."""

    def __init__(self, signal_number: int, step: int, checkpoint: Path | None):
        self.exit_code = 128 + signal_number
        name = signal.Signals(signal_number).name
        super().__init__(f"stopped by {name} at step {step}; checkpoint {checkpoint}; continue with --resume auto")


@contextmanager
def _stop_requests():
    """SIGTERM / SIGINT set a flag checked after each optimizer step (so a checkpoint is
    consistent) instead of interrupting the step."""
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda number, frame: received.append(number))
    try:
        yield lambda: received[0] if received else None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _prepare_run_dir(
    accelerator: Accelerator, run_dir: Path, config: RunConfig, resume: str | None, allow_config_change: bool
) -> Path | None:
    """The main process creates the run directory and writes the resolved config while the
    others wait; every process gets the checkpoint to resume from (None: a fresh start), or
    the same error."""
    outcome: list = [None]
    if accelerator.is_main_process:
        try:
            checkpoint = _prepare_on_main(run_dir, config, resume, allow_config_change)
            outcome = [{"checkpoint": None if checkpoint is None else str(checkpoint)}]
        except TadistillError as error:
            if accelerator.num_processes == 1:
                raise
            outcome = [{"error": str(error)}]
    broadcast_object_list(outcome)  # also the barrier the other processes wait at
    if "error" in outcome[0]:
        raise TadistillError(outcome[0]["error"])
    return None if outcome[0]["checkpoint"] is None else Path(outcome[0]["checkpoint"])


def _prepare_on_main(run_dir: Path, config: RunConfig, resume: str | None, allow_config_change: bool) -> Path | None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise TadistillError(f"output directory {str(run_dir)!r} is not writable: {error.strerror}") from None
    checkpoint = resolve_resume(run_dir, resume)
    resolved = run_dir / "config.yaml"
    if checkpoint is None and resume is None and (run_dir / "checkpoints").exists():
        raise TadistillError(
            f"{run_dir} already holds a run; pass --resume auto to continue it or choose another --output"
        )
    if checkpoint is not None and resolved.is_file():
        import yaml

        changed = [key for key in config_differences(yaml.safe_load(resolved.read_text()), to_dict(config))
                   if key not in RESUMABLE_CHANGES]
        if changed and not allow_config_change:
            raise TadistillError(
                f"the config differs from the run being resumed at: {', '.join(changed)}; "
                "restore those values or pass --allow-config-change"
            )
    remove_partial_checkpoints(run_dir)  # left by a crash while a checkpoint was written
    tmp = resolved.with_suffix(".yaml.tmp")
    tmp.write_text(dump_yaml(config))
    tmp.rename(resolved)
    return checkpoint


def _check_finite(loss_sum: float, parts: dict, step: int, run_dir: Path) -> None:
    if math.isfinite(loss_sum):
        return
    bad = [name for name, value in parts.items() if not torch.isfinite(value).item()] or ["total"]
    raise TadistillError(
        f"non-finite loss from objective(s) {', '.join(bad)} at step {step}; the run stopped and its last good "
        f"checkpoint is kept in {run_dir / 'checkpoints'}; lower train.learning_rate or check the data"
    )


def _weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _BlockLog:
    """`train.record_blocks`: one line per training block (a digest of its token ids) in
    blocks/rank-<R>.txt, to audit data order and the sharding between processes."""

    def __init__(self, run_dir: Path, rank: int):
        path = run_dir / "blocks" / f"rank-{rank}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a")

    def add(self, input_ids: torch.Tensor) -> None:
        for row in input_ids.cpu():  # (B, n) -> one line per block
            self.file.write(hashlib.sha1(row.numpy().tobytes()).hexdigest() + "\n")
        self.file.flush()


class _LogWindow:
    """Accumulates losses between log lines without a device sync per step."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.tokens = 0
        self.started = time.perf_counter()

    def add(self, loss, tokens: int) -> None:
        for name, value in {"loss": loss.total, **loss.parts}.items():
            self.sums[name] = self.sums.get(name, 0) + value.detach().float()
        self.count += 1
        self.tokens += tokens

    def flush(self, progress: dict, lr: float, accelerator: Accelerator) -> dict:
        seconds = time.perf_counter() - self.started
        means = {name: accelerator.reduce(value / self.count, reduction="mean").item() for name, value in self.sums.items()}
        record = {"step": progress["step"], "tokens": progress["tokens"], "lr": lr, **means,
                  "tokens_per_s": self.tokens / seconds if seconds else 0.0}
        self.reset()
        return record


def _plan(config, teacher, student, objectives, corpus, tokens_per_step, steps, progress, precision) -> str:
    t, s = shape_of(teacher), shape_of(student)
    t_params = sum(p.numel() for p in teacher.parameters())
    s_params = sum(p.numel() for p in student.parameters())
    lines = [
        "tadistill distill plan",
        f"  teacher   {config.teacher.path}: {t} ({t_params / 1e6:.1f}M parameters)",
        f"  student   {s}, init {config.student.init} ({s_params / 1e6:.1f}M parameters, {s_params / t_params:.0%} of the teacher)",
        "  data",
        *[f"    {source}" for source in corpus.sources],
        "  objectives",
        *[f"    {_describe_objective(n, w, o)}" for n, w, o in zip(objectives.names, objectives.weights, objectives.objectives)],
        f"  budget    {steps} steps x {tokens_per_step:,} tokens/step = {steps * tokens_per_step:,} tokens"
        + (f" (max_tokens {config.train.max_tokens:,})" if config.train.max_tokens else ""),
        f"  precision {precision}" + (" (train.mixed_precision auto)" if config.train.mixed_precision == "auto" else ""),
    ]
    if progress["step"]:
        lines.append(f"  resuming  from step {progress['step']} ({progress['tokens']:,} tokens seen)")
    return "\n".join(lines)


def _describe_objective(name: str, weight: float, objective) -> str:
    """One plan line: which student tensors learn from which teacher tensors."""

    def taps(found) -> str:
        by_kind: dict[str, list[int]] = {}
        for tap in sorted(found):
            by_kind.setdefault(tap.kind, []).append(tap.layer)
        return " ".join(f"{kind}{layers}" for kind, layers in by_kind.items()) or "-"

    line = f"{name} (weight {weight:g}): student {taps(objective.student_taps)} <- teacher {taps(objective.teacher_taps)}"
    if getattr(objective, "layer_pairs", None):
        line += f", layer pairs {[(s, list(t)) for s, t in objective.layer_pairs]}"
    if getattr(objective, "projection_sharing", None):
        line += f", projections: {objective.projection_sharing}"
    if getattr(objective, "reduction", None):
        line += f", {objective.reduction} over layers"
    if objective.logit_positions:
        line += f", logits at {objective.logit_positions} positions"
    return line
