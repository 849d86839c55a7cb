"""Teachers and students: load, build from the teacher's config, initialise, save.

A student is the teacher's own model class with a smaller shape, so it saves as a
plain Hugging Face directory that `AutoModel*` loads without tadistill.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer, PretrainedConfig

from tadistill.arch import ArchAdapter, ModelShape, adapter_for
from tadistill.errors import ModelError
from tadistill.registry import Registry

INIT_STRATEGIES: Registry = Registry("student init strategy")


# ---------------------------------------------------------------- loading


def load_config(path: str, revision: str | None = None, trust_remote_code: bool = False) -> PretrainedConfig:
    """The model config of a local directory or hub id, with one-line errors."""
    _check_hub_reachable(path)
    with _friendly_load_errors(path):
        return AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)


def load_teacher(
    path: str, revision: str | None = None, trust_remote_code: bool = False
) -> tuple[nn.Module, object, bool]:
    """(model, tokenizer, has_lm_head), frozen and in eval mode.

    Checkpoints saved from a masked-LM (or pre-training) class load with their LM head;
    others (e.g. sentence-transformers encoders) load as the base model, so a randomly
    initialised head can never pass for the teacher's.
    """
    config = load_config(path, revision, trust_remote_code)
    architectures = config.architectures or []
    wants_head = any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in architectures)
    model_class = AutoModelForMaskedLM if wants_head else AutoModel
    with _friendly_load_errors(path):
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        model, info = model_class.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code, output_loading_info=True
        )
    adapter = adapter_for(model)
    head = adapter.lm_head_module(model) if wants_head else None
    head_names = {f"{adapter.lm_head}.{name}" for name, _ in head.named_parameters()} if head is not None else set()
    has_lm_head = head is not None and not (set(info["missing_keys"]) & head_names)
    if wants_head and not has_lm_head:
        model = model.base_model
    model.eval().requires_grad_(False)
    return model, tokenizer, has_lm_head


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
        layers or teacher.layers, hidden or teacher.hidden, heads or teacher.heads, intermediate
    ).items():
        setattr(config, key, value)
    return config


def build_student(
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
    """
    torch.manual_seed(seed)
    model_class = type(teacher)
    student = model_class(config)
    if init != "random" and init_layers is None:
        init_layers = default_init_layers(shape_of(config).layers, shape_of(teacher).layers, init_mapping)
    INIT_STRATEGIES.get(init)(student, teacher, init_layers)
    return student


INIT_MAPPINGS = ("uniform", "uniform-consecutive", "all")  # one teacher block per student block


def default_init_layers(student_layers: int, teacher_layers: int, strategy: str = "uniform") -> list[int]:
    """One teacher block per student block, chosen by a layer-mapping strategy.

    `uniform-consecutive` gives each student block a group of teacher blocks; the last of
    the group is copied (the deepest block the student layer stands for).
    """
    from tadistill.mapping import layer_map

    if strategy not in INIT_MAPPINGS:
        raise ModelError(f"init_mapping {strategy!r} cannot choose teacher blocks to copy; use one of {', '.join(INIT_MAPPINGS)}")

    return [teachers[-1] for _, teachers in layer_map(strategy, student_layers, teacher_layers)]


@INIT_STRATEGIES.register("random")
def _init_random(student: nn.Module, teacher: nn.Module, init_layers: list[int] | None) -> None:
    """Keep the model class's own random initialisation."""


@INIT_STRATEGIES.register("teacher-layers")
def _init_teacher_layers(student: nn.Module, teacher: nn.Module, init_layers: list[int] | None) -> None:
    """Copy embeddings, the chosen blocks and the LM head exactly (shapes must match)."""
    _copy_from_teacher(student, teacher, init_layers, slice_width=False)


@INIT_STRATEGIES.register("teacher-slice")
def _init_teacher_slice(student: nn.Module, teacher: nn.Module, init_layers: list[int] | None) -> None:
    """Copy the chosen blocks truncated to the student's width: the first heads, the first
    dimensions of each head, the first FFN units and the first hidden features."""
    _copy_from_teacher(student, teacher, init_layers, slice_width=True)


def _copy_from_teacher(student: nn.Module, teacher: nn.Module, init_layers: list[int] | None, slice_width: bool):
    adapter = adapter_for(teacher)
    s_shape, t_shape = adapter.shape(student.config), adapter.shape(teacher.config)
    if len(init_layers) != s_shape.layers or not all(1 <= t <= t_shape.layers for t in init_layers):
        raise ModelError(
            f"init_layers={init_layers} must list {s_shape.layers} teacher blocks, each in 1..{t_shape.layers}"
        )
    s_prefix, t_prefix = _module_name(student, adapter.layer_list(student)), _module_name(teacher, adapter.layer_list(teacher))
    teacher_state = teacher.state_dict()
    with torch.no_grad():
        for name, param in student.state_dict().items():
            source_name, head_dim = _teacher_source(name, s_prefix, t_prefix, init_layers, adapter)
            source = teacher_state.get(source_name)
            if source is None:  # e.g. a pooler the teacher class lacks: keep random init
                continue
            if slice_width:
                source = _slice(source, param.shape, head_dim, s_shape, t_shape)
            if source.shape != param.shape:
                raise ModelError(
                    f"cannot copy teacher tensor {source_name} {tuple(source.shape)} into student {name} "
                    f"{tuple(param.shape)}: 'teacher-layers' needs the teacher's width; use 'teacher-slice' or 'random'"
                )
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


def _slice(source: torch.Tensor, shape: torch.Size, head_dim: int | None, s: ModelShape, t: ModelShape):
    if head_dim is not None:
        # keep the first s.heads heads and the first s.head_dim dims of each
        source = source.unflatten(head_dim, (t.heads, t.head_dim))  # (..., H_T, d_h_T, ...)
        source = source.narrow(head_dim, 0, s.heads).narrow(head_dim + 1, 0, s.head_dim)
        source = source.flatten(head_dim, head_dim + 1)  # (..., H_S * d_h_S, ...)
    for dim, size in enumerate(shape):
        source = source.narrow(dim, 0, min(size, source.shape[dim]))
    return source


# ---------------------------------------------------------------- saving


def save_student(student: nn.Module, tokenizer, out_dir: str | Path, metadata: dict | None = None) -> Path:
    """Write a plain Hugging Face model directory atomically (temp dir, then rename).

    A crash mid-write leaves the previous directory (if any) intact.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        student.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if metadata is not None:
            (tmp / "tadistill.json").write_text(json.dumps(metadata, indent=2) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def shape_of(model_or_config) -> ModelShape:
    return adapter_for(model_or_config).shape(getattr(model_or_config, "config", model_or_config))

