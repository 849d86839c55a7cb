"""The argparse types every command shares: numbers with a lower bound, comma-separated lists.

Each returns a parser whose `__name__` argparse shows in its "invalid ... value" message.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def at_least(minimum: float, kind: type = int) -> Callable[[str], float]:
    """A number of `kind` that is >= `minimum`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {'an integer' if kind is int else 'a number'}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text}: must be at least {minimum}")
        return value

    parse.__name__ = kind.__name__
    return parse


def positive(kind: type = int) -> Callable[[str], float]:
    """A number of `kind` above zero."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {'an integer' if kind is int else 'a number'}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def number_list(kind: type = int) -> Callable[[str], tuple]:
    """Comma-separated numbers of `kind`, each above zero ("1,32" or "1e-5,2e-5")."""
    parse_one = positive(kind)

    def parse(text: str) -> tuple:
        values = tuple(parse_one(part) for part in text.split(",") if part.strip())
        if not values:
            raise argparse.ArgumentTypeError("needs at least one value")
        return values

    parse.__name__ = f"{kind.__name__} list"
    return parse


def choice_list(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated names, each one of `choices` ("fp32,bf16")."""

    def parse(text: str) -> tuple[str, ...]:
        values = tuple(part for part in text.split(",") if part)
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"{','.join(unknown) or text!r}: choose from {','.join(choices)}")
        return values

    parse.__name__ = "list"
    return parse
