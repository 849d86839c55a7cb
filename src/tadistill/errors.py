"""Errors a user can cause. The CLI prints them without a traceback and exits with 2."""

from __future__ import annotations

from dataclasses import dataclass


class TadistillError(Exception):
    """Base class for every error caused by user input (config, paths, data, models)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a run's input: where (key), what was given (value), what to do."""

    key: str
    value: object
    message: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.message}"


class ConfigError(TadistillError):
    """Every problem found in a configuration, reported at once."""

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(self.problems)} problem(s){where}:"] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))

    def __reduce__(self):  # rebuilt from its problems when it crosses a process boundary
        return ConfigError, (self.problems, self.source)


class DataError(TadistillError):
    """A corpus or dataset that cannot be used as given."""


class ModelError(TadistillError):
    """A teacher or student model that cannot be loaded, built or combined."""
