"""Everything about a run that can be checked without compute, reported at once.

`validate_run` reads the teacher's config (and tokenizer) but no weights, checks the
student shape and initialisation against it, the objectives against both shapes, the
data sources on disk and the training budget. Each problem names the key, the value and
what to do.
"""

from __future__ import annotations

from tadistill.arch import ModelShape, adapter_for
from tadistill.config import RunConfig
from tadistill.errors import ModelError, Problem, TadistillError
from tadistill.models import INIT_MAPPINGS, INIT_STRATEGIES, load_config, student_config
from tadistill.registry import did_you_mean


def validate_run(config: RunConfig) -> list[Problem]:
    problems: list[Problem] = []
    teacher_shape, student_shape, teacher_has_lm_head = _check_models(config, problems)
    _check_data(config, problems)
    _check_train(config, problems)
    if not config.objectives:
        problems.append(Problem("objectives", [], "list at least one objective, e.g. [{name: minilmv2}]"))
    elif teacher_shape is not None and student_shape is not None:
        from tadistill.objectives import check_objectives

        problems += check_objectives(config.objective_specs(), teacher_shape, student_shape, teacher_has_lm_head)
    return problems


def _check_models(config: RunConfig, problems: list[Problem]):
    """Returns (teacher_shape, student_shape, teacher_has_lm_head); shapes None when unknown."""
    teacher, student = config.teacher, config.student
    if not teacher.path:
        problems.append(Problem("teacher.path", teacher.path, "set the teacher: a local model directory or hub id"))
        return None, None, False
    try:
        teacher_config = load_config(teacher.path, teacher.revision, teacher.trust_remote_code)
        adapter = adapter_for(teacher_config)
    except ModelError as error:
        problems.append(Problem("teacher.path", teacher.path, str(error)))
        return None, None, False
    t = adapter.shape(teacher_config)
    # RoBERTa-style position ids start after the padding index, losing pad_token_id + 1 slots
    offset = teacher_config.pad_token_id + 1 if teacher_config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
    max_positions = teacher_config.max_position_embeddings - offset
    if config.data.max_seq_length > max_positions:
        problems.append(
            Problem("data.max_seq_length", config.data.max_seq_length, f"exceeds the teacher's {max_positions} positions")
        )
    _check_tokenizer(teacher.path, teacher.revision, teacher.trust_remote_code, t, problems)
    architectures = teacher_config.architectures or []
    has_lm_head = adapter.lm_head is not None and any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in architectures)

    for key in ("layers", "hidden", "heads", "intermediate"):
        value = getattr(student, key)
        if value is not None and (not isinstance(value, int) or value < 1):
            problems.append(Problem(f"student.{key}", value, "must be a positive integer (or unset for the teacher's)"))
    if any(p.key.startswith("student.") for p in problems):
        return t, None, has_lm_head
    s = adapter.shape(student_config(teacher_config, student.layers, student.hidden, student.heads, student.intermediate))
    if s.hidden % s.heads:  # reported, then checking goes on so every problem shows at once
        problems.append(
            Problem("student.heads", s.heads, f"must divide student.hidden={s.hidden} (head dim = hidden / heads)")
        )
    _check_init(student.init, student.init_layers, student.init_mapping, t, s, problems)
    return t, s, has_lm_head


def _check_tokenizer(path, revision, trust_remote_code, teacher: ModelShape, problems) -> None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        problems.append(Problem("teacher.path", path, f"cannot load the teacher's tokenizer: {error}"))
        return
    if len(tokenizer) > teacher.vocab_size:
        problems.append(
            Problem(
                "teacher.path",
                path,
                f"the tokenizer has {len(tokenizer)} tokens but the model's embeddings only {teacher.vocab_size}: "
                "the tokenizer does not belong to this model",
            )
        )


def _check_init(init, init_layers, init_mapping, t: ModelShape, s: ModelShape, problems) -> None:
    if init not in INIT_STRATEGIES:
        problems.append(Problem("student.init", init, INIT_STRATEGIES.unknown_message(init)))
        return
    if init == "random":
        return
    if init_layers is not None:
        if len(init_layers) != s.layers:
            problems.append(
                Problem("student.init_layers", init_layers, f"list exactly one teacher block per student layer ({s.layers})")
            )
        bad = [layer for layer in init_layers if not 1 <= layer <= t.layers]
        if bad:
            problems.append(Problem("student.init_layers", init_layers, f"blocks {bad} are outside the teacher's 1..{t.layers}"))
    elif init_mapping not in INIT_MAPPINGS:
        problems.append(
            Problem("student.init_mapping", init_mapping, f"must give one teacher block per student block: use one of {', '.join(INIT_MAPPINGS)}, or list student.init_layers")
        )
    else:
        from tadistill.mapping import layer_map

        try:
            layer_map(init_mapping, s.layers, t.layers)
        except TadistillError as error:
            problems.append(Problem("student.init_mapping", init_mapping, str(error)))
    if init == "teacher-layers":
        for key, sv, tv in (("hidden", s.hidden, t.hidden), ("heads", s.heads, t.heads), ("intermediate", s.intermediate, t.intermediate)):
            if sv != tv:
                problems.append(
                    Problem(f"student.{key}", sv, f"init 'teacher-layers' copies tensors exactly and needs the teacher's {key} ({tv}); use init 'teacher-slice' to truncate")
                )
    if init == "teacher-slice":
        for key, sv, tv in (
            ("hidden", s.hidden, t.hidden),
            ("heads", s.heads, t.heads),
            ("intermediate", s.intermediate, t.intermediate),
        ):
            if sv > tv:
                problems.append(Problem(f"student.{key}", sv, f"init 'teacher-slice' truncates, so it must be <= the teacher's {tv}"))
        if s.head_dim > t.head_dim:
            problems.append(
                Problem("student.heads", s.heads, f"student head dim {s.head_dim} exceeds the teacher's {t.head_dim}: use more heads or init 'random'")
            )


def _check_data(config: RunConfig, problems: list[Problem]) -> None:
    from tadistill.data import check_source
    from tadistill.data.mixture import check_mixture

    data = config.data
    if not data.sources:
        problems.append(Problem("data.sources", [], "list at least one corpus source, e.g. [{path: corpus.txt}]"))
    for i, source in enumerate(data.sources):
        problems += check_source(
            source.path, source.format, source.text_field, source.documents, source.weight, key=f"data.sources.{i}"
        )
    problems += [p for p in check_mixture([s.weight for s in data.sources], data.sampling_alpha) if not p.key.endswith(".weight")]
    if data.max_seq_length < 8:
        problems.append(Problem("data.max_seq_length", data.max_seq_length, "must be at least 8 tokens"))
    if not 0 < data.mlm_probability < 1:
        problems.append(Problem("data.mlm_probability", data.mlm_probability, "must be between 0 and 1 (typically 0.15)"))
    if data.on_decode_error not in ("skip", "fail"):
        problems.append(Problem("data.on_decode_error", data.on_decode_error, f"use 'skip' or 'fail'.{did_you_mean(data.on_decode_error, ['skip', 'fail'])}"))


def _check_train(config: RunConfig, problems: list[Problem]) -> None:
    train = config.train
    positive = ("batch_size", "gradient_accumulation_steps", "log_every", "save_every", "keep_checkpoints")
    for key in positive:
        if getattr(train, key) < 1:
            problems.append(Problem(f"train.{key}", getattr(train, key), "must be >= 1"))
    if train.max_steps is None and train.max_tokens is None:
        problems.append(Problem("train.max_steps", None, "set train.max_steps and/or train.max_tokens (the budget)"))
    for key in ("max_steps", "max_tokens"):
        value = getattr(train, key)
        if value is not None and value < 1:
            problems.append(Problem(f"train.{key}", value, "must be >= 1"))
    if train.learning_rate <= 0:
        problems.append(Problem("train.learning_rate", train.learning_rate, "must be > 0 (MiniLMv2 used 6e-4)"))
    if train.warmup_steps < 0 or (train.max_steps is not None and train.warmup_steps >= train.max_steps):
        problems.append(Problem("train.warmup_steps", train.warmup_steps, "must be >= 0 and below train.max_steps"))
    if train.weight_decay < 0:
        problems.append(Problem("train.weight_decay", train.weight_decay, "must be >= 0"))
    if len(train.adam_betas) != 2 or not all(0 <= b < 1 for b in train.adam_betas):
        problems.append(Problem("train.adam_betas", train.adam_betas, "must be two numbers in [0, 1), e.g. [0.9, 0.999]"))
    if train.max_grad_norm <= 0:
        problems.append(Problem("train.max_grad_norm", train.max_grad_norm, "must be > 0"))
    if train.mixed_precision not in ("no", "bf16", "fp16"):
        problems.append(
            Problem("train.mixed_precision", train.mixed_precision, f"use no, bf16 or fp16.{did_you_mean(train.mixed_precision, ['no', 'bf16', 'fp16'])}")
        )
    if train.num_workers < 0:
        problems.append(Problem("train.num_workers", train.num_workers, "must be >= 0"))
