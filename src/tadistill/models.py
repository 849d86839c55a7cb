"""Teachers and students: load, build from the teacher's config, initialise, save.

A student is the teacher's own model class with a smaller shape, so it saves as a
plain Hugging Face directory that `AutoModel*` loads without tadistill.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from tadistill.arch import ArchAdapter, ModelShape, adapter_for
from tadistill.config import StudentConfig, TeacherConfig
from tadistill.errors import ModelError, Problem, TadistillError
from tadistill.registry import Registry
from tadistill.staging import staged_directory

INIT_STRATEGIES: Registry = Registry("student init strategy")
INIT_MAPPINGS = ("uniform", "uniform-consecutive", "last-k", "all")  # one teacher block per student block


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class Teacher:
    """A loaded teacher: frozen model in eval mode, its tokenizer, and whether the model
    carries its trained masked-LM head (so that `od` can read its logits)."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    has_lm_head: bool


def load_model_config(path: str, revision: str | None = None, trust_remote_code: bool = False) -> PretrainedConfig:
    """The model config of a local directory or hub id, with one-line errors."""
    _check_hub_reachable(path)
    with _friendly_load_errors(path):
        return AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)


def load_teacher(path: str, revision: str | None = None, trust_remote_code: bool = False) -> Teacher:
    """The teacher of a local directory or hub id, frozen and in eval mode.

    Checkpoints saved from a masked-LM (or pre-training) class load with their LM head;
    others (e.g. sentence-transformers encoders) load as the base model, so a randomly
    initialised head can never pass for the teacher's.
    """
    config = load_model_config(path, revision, trust_remote_code)
    adapter = adapter_for(config)
    wants_head = adapter.checkpoint_has_lm_head(config)
    model_class = AutoModelForMaskedLM if wants_head else AutoModel
    with _friendly_load_errors(path):
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        model, info = model_class.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code, output_loading_info=True
        )
    head = adapter.lm_head_module(model) if wants_head else None
    head_names = {f"{adapter.lm_head}.{name}" for name, _ in head.named_parameters()} if head is not None else set()
    has_lm_head = head is not None and not (set(info["missing_keys"]) & head_names)
    if wants_head and not has_lm_head:
        model = model.base_model
    model.eval().requires_grad_(False)
    return Teacher(model=model, tokenizer=tokenizer, has_lm_head=has_lm_head)


def teacher_problems(teacher: TeacherConfig, max_seq_length: int) -> tuple[PretrainedConfig | None, list[Problem]]:
    """The teacher's config (None when it cannot be read) and what is wrong with the teacher:
    unreadable, an unsupported family, a tokenizer that is not its own, too few positions.
    Reads the config and the tokenizer, never the weights."""
    if not teacher.path:  # required: reported with the config's structure
        return None, []
    try:
        config = load_model_config(teacher.path, teacher.revision, teacher.trust_remote_code)
        adapter = adapter_for(config)
    except ModelError as error:
        return None, [Problem("teacher.path", teacher.path, str(error))]
    problems = []
    if max_seq_length > adapter.max_positions(config):
        problems.append(
            Problem("data.max_seq_length", max_seq_length, f"exceeds the teacher's {adapter.max_positions(config)} positions")
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            teacher.path, revision=teacher.revision, trust_remote_code=teacher.trust_remote_code
        )
    except (OSError, ValueError) as error:
        return config, problems + [Problem("teacher.path", teacher.path, f"cannot load the teacher's tokenizer: {error}")]
    if len(tokenizer) > config.vocab_size:
        problems.append(
            Problem(
                "teacher.path",
                teacher.path,
                f"the tokenizer has {len(tokenizer)} tokens but the model's embeddings only {config.vocab_size}: "
                "the tokenizer does not belong to this model",
            )
        )
    return config, problems


def _check_hub_reachable(path: str) -> None:
    """Fail in one line, at once, when a hub id is given and the hub cannot be reached
    (instead of minutes of retries followed by a traceback)."""
    if Path(path).expanduser().exists() or os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError:
        raise ModelError(
            f"cannot load {path!r}: it is not a local directory and the Hugging Face Hub ({host}) is unreachable; "
            "pass a local model directory (save_pretrained output) or check the network"
        ) from None


class _friendly_load_errors:
    """Turn the hub / file-system failures of from_pretrained into one clear ModelError."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, ModelError):
            return False
        if Path(self.path).is_dir():
            raise ModelError(f"cannot load the model in directory {self.path!r}: {exc}") from None
        # hub ids are "name" or "org/name"; anything else is meant as a local path
        looks_local = self.path.startswith((".", "/", "~")) or self.path.count("/") > 1
        if isinstance(exc, (OSError, ValueError)):
            if looks_local and not Path(self.path).exists():
                raise ModelError(f"model path {self.path!r} does not exist") from None
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            reason = "HF_HUB_OFFLINE=1 is set" if offline else "the Hugging Face Hub is unreachable or has no such model"
            raise ModelError(
                f"cannot load {self.path!r}: not a local directory and {reason}; "
                "pass a local model directory (save_pretrained output) or check the hub id and network"
            ) from None
        return False


# ---------------------------------------------------------------- student shape


def student_config(
    teacher_config: PretrainedConfig,
    layers: int | None = None,
    hidden: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
) -> PretrainedConfig:
    """The teacher's config with the student's shape (None keeps the teacher's value)."""
    adapter = adapter_for(teacher_config)
    teacher = adapter.shape(teacher_config)
    if intermediate is None:
        intermediate = 4 * hidden if hidden not in (None, teacher.hidden) else teacher.intermediate
    config = teacher_config.__class__.from_dict(teacher_config.to_dict())
    for key, value in adapter.shape_overrides(
        teacher_config, layers or teacher.layers, hidden or teacher.hidden, heads or teacher.heads, intermediate
    ).items():
        setattr(config, key, value)
    return config


# the config attributes that hold a model's dropout rates, by the names transformers uses
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


def make_student(teacher: nn.Module, student: StudentConfig, seed: int) -> nn.Module:
    """The student a run config's `student` section describes, built from the teacher (the
    distill recipe and the quickstart's "before" both build it here)."""
    config = student_config(teacher.config, student.layers, student.hidden, student.heads, student.intermediate)
    if student.dropout is not None:  # for distillation only: `restore_dropout` before saving
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, student.dropout)
    return build_student(
        teacher=teacher, config=config, init=student.init, init_layers=student.init_layers,
        init_mapping=student.init_mapping, seed=seed,
    )


def restore_dropout(student: nn.Module, teacher: nn.Module) -> None:
    """Give the student's config the teacher's dropout rates back, so that a student distilled
    with `student.dropout` fine-tunes with the rates its architecture was trained with."""
    for key in DROPOUT_KEYS:
        if isinstance(getattr(teacher.config, key, None), float) and hasattr(student.config, key):
            setattr(student.config, key, getattr(teacher.config, key))


def build_student(
    *,
    teacher: nn.Module,
    config: PretrainedConfig,
    init: str = "random",
    init_layers: list[int] | None = None,
    init_mapping: str = "uniform",
    seed: int = 0,
) -> nn.Module:
    """A student of the teacher's own class (masked-LM or base), initialised by `init`.

    `init_layers` are the teacher blocks (1-based) copied into student blocks 1..L_S,
    for the `teacher-layers` and `teacher-slice` strategies; unset, `init_mapping` picks them.
    The arguments are trusted: `student_problems` checks them.
    """
    with torch.random.fork_rng(devices=[]):  # the same student on every process; the global RNG untouched
        torch.manual_seed(seed)
        student = type(teacher)(config)
    if init != "random" and init_layers is None:
        init_layers = default_init_layers(shape_of(config).layers, shape_of(teacher).layers, init_mapping)
    INIT_STRATEGIES.get(init)(student=student, teacher=teacher, init_layers=init_layers)
    return student


def default_init_layers(student_layers: int, teacher_layers: int, strategy: str = "uniform") -> list[int]:
    """One teacher block per student block, chosen by a layer-mapping strategy (one of INIT_MAPPINGS).

    `uniform-consecutive` gives each student block a group of teacher blocks; the last of
    the group is copied (the deepest block the student layer stands for).
    """
    from tadistill.mapping import layer_map

    return [teachers[-1] for _, teachers in layer_map(strategy, student_layers, teacher_layers)]


def resolved_student_shape(student: StudentConfig, teacher_config: PretrainedConfig) -> ModelShape | None:
    """The student's shape, the teacher's values filling in what is unset; None when a given
    size is not positive (`student_problems` reports it)."""
    sizes = [student.layers, student.hidden, student.heads, student.intermediate]
    if any(size is not None and size < 1 for size in sizes):
        return None
    return shape_of(student_config(teacher_config, *sizes))


def student_problems(student: StudentConfig, teacher_config: PretrainedConfig | None) -> list[Problem]:
    """What is wrong with the student's shape and initialisation. Without the teacher's
    config (it could not be read) the checks that need no teacher still run."""
    sizes = {key: getattr(student, key) for key in ("layers", "hidden", "heads", "intermediate")}
    problems = [
        Problem(f"student.{key}", value, "must be a positive integer (or unset for the teacher's)")
        for key, value in sizes.items()
        if value is not None and value < 1
    ]
    if student.dropout is not None and not 0 <= student.dropout < 1:
        problems.append(Problem("student.dropout", student.dropout, "must be in [0, 1), or unset for the teacher's"))
    if problems:
        return problems + _init_name_problems(student)
    teacher = shape_of(teacher_config) if teacher_config is not None else None
    shape = resolved_student_shape(student, teacher_config) if teacher is not None else None
    hidden, heads = (shape.hidden, shape.heads) if shape is not None else (sizes["hidden"], sizes["heads"])
    if hidden is not None and heads is not None and hidden % heads:
        problems.append(Problem("student.heads", heads, f"must divide student.hidden={hidden} (head dim = hidden / heads)"))
    init_problems = _init_name_problems(student)
    if not init_problems and student.init != "random":
        init_problems += _init_layer_problems(student, teacher, sizes["layers"] if shape is None else shape.layers)
        if teacher is not None:
            init_problems += _init_shape_problems(student.init, teacher, shape)
    return problems + init_problems


def _init_name_problems(student: StudentConfig) -> list[Problem]:
    if student.init not in INIT_STRATEGIES:
        return [Problem("student.init", student.init, INIT_STRATEGIES.unknown_message(student.init))]
    if student.init != "random" and student.init_layers is None and student.init_mapping not in INIT_MAPPINGS:
        return [
            Problem(
                "student.init_mapping", student.init_mapping,
                f"must give one teacher block per student block: use one of {', '.join(INIT_MAPPINGS)}, "
                "or list student.init_layers",
            )
        ]
    return []


def _init_layer_problems(student: StudentConfig, teacher: ModelShape | None, layers: int | None) -> list[Problem]:
    """The teacher blocks to copy: one per student block, each a block of the teacher."""
    from tadistill.mapping import layer_map

    problems = []
    if student.init_layers is not None:
        if layers is not None and len(student.init_layers) != layers:
            problems.append(
                Problem("student.init_layers", student.init_layers, f"list exactly one teacher block per student layer ({layers})")
            )
        bad = [block for block in student.init_layers if teacher is not None and not 1 <= block <= teacher.layers]
        if bad:
            problems.append(
                Problem("student.init_layers", student.init_layers, f"blocks {bad} are outside the teacher's 1..{teacher.layers}")
            )
    elif teacher is not None and layers is not None:
        try:
            layer_map(student.init_mapping, layers, teacher.layers)
        except TadistillError as error:
            problems.append(Problem("student.init_mapping", student.init_mapping, str(error)))
    return problems


def _init_shape_problems(init: str, teacher: ModelShape, student: ModelShape) -> list[Problem]:
    sizes = [(key, getattr(student, key), getattr(teacher, key)) for key in ("hidden", "heads", "intermediate")]
    if init == "teacher-layers":
        return [
            Problem(
                f"student.{key}", sv,
                f"init 'teacher-layers' copies tensors exactly and needs the teacher's {key} ({tv}); "
                "use init 'teacher-slice' to truncate",
            )
            for key, sv, tv in sizes
            if sv != tv
        ]
    problems = [  # teacher-slice
        Problem(f"student.{key}", sv, f"init 'teacher-slice' truncates, so it must be <= the teacher's {tv}")
        for key, sv, tv in sizes
        if sv > tv
    ]
    if student.head_dim > teacher.head_dim:
        problems.append(
            Problem(
                "student.heads", student.heads,
                f"student head dim {student.head_dim} exceeds the teacher's {teacher.head_dim}: use more heads or init 'random'",
            )
        )
    return problems


@INIT_STRATEGIES.register("random")
def _init_random(*, student: nn.Module, teacher: nn.Module, init_layers: list[int] | None) -> None:
    """Keep the model class's own random initialisation."""


@INIT_STRATEGIES.register("teacher-layers")
def _init_teacher_layers(*, student: nn.Module, teacher: nn.Module, init_layers: list[int] | None) -> None:
    """Copy embeddings, the chosen blocks and the LM head exactly (shapes must match)."""
    _copy_from_teacher(student=student, teacher=teacher, init_layers=init_layers, slice_width=False)


@INIT_STRATEGIES.register("teacher-slice")
def _init_teacher_slice(*, student: nn.Module, teacher: nn.Module, init_layers: list[int] | None) -> None:
    """Copy the chosen blocks truncated to the student's width: the first heads, the first
    dimensions of each head, the first FFN units and the first hidden features."""
    _copy_from_teacher(student=student, teacher=teacher, init_layers=init_layers, slice_width=True)


def _copy_from_teacher(*, student: nn.Module, teacher: nn.Module, init_layers: list[int], slice_width: bool):
    adapter = adapter_for(teacher)
    s_shape, t_shape = adapter.shape(student.config), adapter.shape(teacher.config)
    s_prefix, t_prefix = _module_name(student, adapter.layer_list(student)), _module_name(teacher, adapter.layer_list(teacher))
    teacher_state = teacher.state_dict()
    with torch.no_grad():
        for name, param in student.state_dict().items():
            source_name, head_dim = _teacher_source(name, s_prefix, t_prefix, init_layers, adapter)
            source = teacher_state.get(source_name)
            if source is None:  # e.g. a pooler the teacher class lacks: keep random init
                continue
            if slice_width:
                source = _slice(source, param.shape, head_dim, student=s_shape, teacher=t_shape)
            param.copy_(source)


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _teacher_source(name, s_prefix, t_prefix, init_layers, adapter: ArchAdapter) -> tuple[str, int | None]:
    """The teacher's name for a student tensor, and which dim (if any) is split into heads."""
    if not name.startswith(s_prefix + "."):
        return name, None
    block, rest = name[len(s_prefix) + 1 :].split(".", 1)
    source = f"{t_prefix}.{init_layers[int(block)] - 1}.{rest}"
    module_path, _, kind = rest.rpartition(".")
    if module_path in (adapter.query, adapter.key, adapter.value):
        return source, 0  # (heads * head_dim, hidden) rows grouped by head; bias likewise
    if module_path == adapter.attention_output and kind == "weight":
        return source, 1  # (hidden, heads * head_dim) columns grouped by head
    return source, None


def _slice(source: torch.Tensor, shape: torch.Size, head_dim: int | None, *, student: ModelShape, teacher: ModelShape):
    s, t = student, teacher
    if head_dim is not None:
        # keep the first s.heads heads and the first s.head_dim dims of each
        source = source.unflatten(head_dim, (t.heads, t.head_dim))  # (..., H_T, d_h_T, ...)
        source = source.narrow(head_dim, 0, s.heads).narrow(head_dim + 1, 0, s.head_dim)
        source = source.flatten(head_dim, head_dim + 1)  # (..., H_S * d_h_S, ...)
    for dim, size in enumerate(shape):
        source = source.narrow(dim, 0, min(size, source.shape[dim]))
    return source


# ---------------------------------------------------------------- saving


def save_student(
    student: nn.Module, tokenizer, out_dir: str | Path, metadata: dict | None = None, layout_from: Path | None = None
) -> Path:
    """Write a plain Hugging Face model directory atomically (temp dir, then rename); with
    `layout_from`, a sentence-transformers teacher's directory, in that teacher's layout too.

    A crash mid-write leaves the previous directory (if any) intact.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(out) as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if metadata is not None:
            (tmp / "tadistill.json").write_text(json.dumps(metadata, indent=2) + "\n")
        if layout_from is not None:
            from tadistill.deploy.sentence_transformers import copy_layout

            copy_layout(layout_from, tmp, student.config.hidden_size)
    return out


def shape_of(model_or_config) -> ModelShape:
    return adapter_for(model_or_config).shape(getattr(model_or_config, "config", model_or_config))

