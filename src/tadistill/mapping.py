"""Layer mappings: which teacher blocks each student block learns from.

`layer_map(strategy, student_layers, teacher_layers)` returns one entry per distilled
student block, `(student_layer, (teacher_layer, ...))`, with 1-based block indices
(0, the embedding output, is never part of a mapping; objectives add it on request).
With k = L_T / L_S:

- `last`: L_S -> L_T.
- `uniform` (TinyBERT): i -> round(i * k), rounding halves up. Integer k gives i * k
  exactly; the last student block always maps to the last teacher block.
- `uniform-consecutive` (1-to-N): i -> ceil(k (i-1)) + 1 .. ceil(k i): consecutive
  teacher blocks, each used exactly once.
- `uniform+last` (1-to-N): i -> {round(i * k), L_T}.
- `last-k`: i -> L_T - L_S + i, one-to-one onto the last L_S teacher blocks.
- `uniform+last-k` (1-to-N): i -> {round(i * k), L_T - L_S + i}.
- `all`: i -> i, for equal depths (width-only compression).
- `explicit`: the user's `pairs` [[student, teacher], ...], grouped by student block.

Non-integer ratios are computed with exact integer arithmetic, e.g. 12 -> 5 (k = 2.4):
`uniform` gives 2, 5, 7, 10, 12 and `uniform-consecutive` gives {1,2,3}, {4,5},
{6,7,8}, {9,10}, {11,12}. The `uniform` and `last-k` strategies need L_S <= L_T.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tadistill.errors import TadistillError
from tadistill.registry import Registry

LayerMap = list[tuple[int, tuple[int, ...]]]


class MappingError(TadistillError, ValueError):
    """A layer mapping that cannot be built for the given depths."""


MAPPINGS: Registry[Callable[[int, int, Sequence | None], LayerMap]] = Registry("layer mapping")


def layer_map(
    strategy: str, student_layers: int, teacher_layers: int, pairs: Sequence[Sequence[int]] | None = None
) -> LayerMap:
    """[(student_layer, (teacher_layer, ...)), ...] for `strategy`, ordered by student layer."""
    build = MAPPINGS.get(strategy)
    if student_layers < 1 or teacher_layers < 1:
        raise MappingError(f"layer mapping {strategy!r}: depths must be >= 1, got {student_layers} -> {teacher_layers}")
    if pairs is not None and strategy != "explicit":
        raise MappingError(f"layer mapping {strategy!r} takes no pairs (pairs={pairs!r}); use mapping 'explicit'")
    return build(student_layers, teacher_layers, pairs)


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _need_shallower_student(strategy: str, student_layers: int, teacher_layers: int) -> None:
    if student_layers > teacher_layers:
        raise MappingError(
            f"layer mapping {strategy!r} needs a student no deeper than the teacher, got "
            f"{student_layers} student layers for {teacher_layers} teacher layers; use 'explicit' pairs"
        )


@MAPPINGS.register("last")
def _last(student_layers: int, teacher_layers: int, pairs=None) -> LayerMap:
    return [(student_layers, (teacher_layers,))]


@MAPPINGS.register("uniform")
def _uniform(student_layers: int, teacher_layers: int, pairs=None) -> LayerMap:
    _need_shallower_student("uniform", student_layers, teacher_layers)
    return [(i, (_round_half_up(i * teacher_layers, student_layers),)) for i in range(1, student_layers + 1)]


@MAPPINGS.register("uniform-consecutive")
def _uniform_consecutive(student_layers: int, teacher_layers: int, pairs=None) -> LayerMap:
    _need_shallower_student("uniform-consecutive", student_layers, teacher_layers)
    bounds = [_ceil_div(i * teacher_layers, student_layers) for i in range(student_layers + 1)]
    return [(i, tuple(range(bounds[i - 1] + 1, bounds[i] + 1))) for i in range(1, student_layers + 1)]


@MAPPINGS.register("uniform+last")
def _uniform_plus_last(student_layers: int, teacher_layers: int, pairs=None) -> LayerMap:
    _need_shallower_student("uniform+last", student_layers, teacher_layers)
    return [(i, tuple(sorted({t[0], teacher_layers}))) for i, t in _uniform(student_layers, teacher_layers)]


@MAPPINGS.register("last-k")
def _last_k(student_layers: int, teacher_layers: int, pairs=None) -> LayerMap:
    _need_shallower_student("last-k", student_layers, teacher_layers)
    offset = teacher_layers - student_layers
    return [(i, (offset + i,)) for i in range(1, student_layers + 1)]


@MAPPINGS.register("uniform+last-k")
def _uniform_plus_last_k(student_layers: int, teacher_layers: int, pairs=None) -> LayerMap:
    _need_shallower_student("uniform+last-k", student_layers, teacher_layers)
    uniform, last_k = _uniform(student_layers, teacher_layers), _last_k(student_layers, teacher_layers)
    return [(i, tuple(sorted({*u, *k}))) for (i, u), (_, k) in zip(uniform, last_k)]


@MAPPINGS.register("all")
def _all(student_layers: int, teacher_layers: int, pairs=None) -> LayerMap:
    if student_layers != teacher_layers:
        raise MappingError(
            f"layer mapping 'all' needs equal depths, got {student_layers} student layers and "
            f"{teacher_layers} teacher layers; use 'uniform' or 'uniform-consecutive'"
        )
    return [(i, (i,)) for i in range(1, student_layers + 1)]


@MAPPINGS.register("explicit")
def _explicit(student_layers: int, teacher_layers: int, pairs: Sequence[Sequence[int]] | None) -> LayerMap:
    if not pairs:
        raise MappingError("layer mapping 'explicit' needs pairs: [[student_layer, teacher_layer], ...]")
    grouped: dict[int, set[int]] = {}
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(layer, int) for layer in pair):
            raise MappingError(f"layer mapping 'explicit': pair {pair!r} is not [student_layer, teacher_layer]")
        student, teacher = pair
        if not (1 <= student <= student_layers and 1 <= teacher <= teacher_layers):
            raise MappingError(
                f"layer mapping 'explicit': pair [{student}, {teacher}] is out of range; student layers are "
                f"1..{student_layers}, teacher layers 1..{teacher_layers}"
            )
        grouped.setdefault(student, set()).add(teacher)
    return [(student, tuple(sorted(teachers))) for student, teachers in sorted(grouped.items())]
