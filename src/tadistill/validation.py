"""Everything about a run that can be checked without compute, reported at once.

Each part of a run is checked by the module that owns it; `validate_run` only gathers:

| part | checked by |
|---|---|
| the teacher (config, tokenizer, positions) | `models.teacher_problems` |
| the student's shape and initialisation | `models.student_problems` |
| the data sources, their mixture, block length, masking | `data.corpus_problems` |
| the `train` settings | `training.train_problems` |
| the objectives against both shapes | `objectives.objective_problems` |

A problem in one part never hides another's: without a readable teacher the student
checks that need none still run, and so do the objectives' names and option types.
`checked_run_config` adds the structural problems of the YAML (unknown keys, types,
required keys) to the same one message.
"""

from __future__ import annotations

from pathlib import Path

from tadistill.arch import adapter_for
from tadistill.config import RunConfig, read_run_config
from tadistill.data import corpus_problems
from tadistill.errors import ConfigError, Problem
from tadistill.models import resolved_student_shape, shape_of, student_problems, teacher_problems
from tadistill.objectives import objective_problems
from tadistill.training import train_problems


def validate_run(config: RunConfig) -> list[Problem]:
    """Every problem of a run's values; reads the teacher's config and tokenizer, never its weights."""
    teacher_config, problems = teacher_problems(config.teacher, config.data.max_seq_length)
    problems += student_problems(config.student, teacher_config)
    problems += corpus_problems(config.data)
    problems += train_problems(config.train)
    known = teacher_config is not None
    problems += objective_problems(
        config.objectives,
        teacher=shape_of(teacher_config) if known else None,
        student=resolved_student_shape(config.student, teacher_config) if known else None,
        teacher_has_lm_head=known and adapter_for(teacher_config).checkpoint_has_lm_head(teacher_config),
    )
    return problems


def checked_run_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """A run config file with its overrides, checked; ConfigError lists every problem of its
    structure and of its values in one message."""
    config, problems = read_run_config(path, overrides)
    problems += validate_run(config)
    if problems:
        raise ConfigError(problems, source=str(path))
    return config
