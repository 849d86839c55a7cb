"""Layer mapping tables, written out by hand from the definitions in METHODS.md."""

from __future__ import annotations

import pytest

from tadistill.mapping import MappingError, layer_map
from tadistill.registry import UnknownNameError

# (teacher layers, student layers) -> teacher layer(s) of student layers 1..L_S
UNIFORM = {
    (12, 6): [2, 4, 6, 8, 10, 12],
    (12, 4): [3, 6, 9, 12],
    (12, 3): [4, 8, 12],
    (24, 6): [4, 8, 12, 16, 20, 24],
    (24, 12): [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24],
    (12, 5): [2, 5, 7, 10, 12],  # 2.4, 4.8, 7.2, 9.6, 12 rounded
    (6, 6): [1, 2, 3, 4, 5, 6],
}
CONSECUTIVE = {
    (12, 6): [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)],
    (12, 4): [(1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12)],
    (12, 3): [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)],
    (24, 6): [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20), (21, 22, 23, 24)],
    (24, 12): [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18), (19, 20), (21, 22), (23, 24)],
    (12, 5): [(1, 2, 3), (4, 5), (6, 7, 8), (9, 10), (11, 12)],
    (6, 6): [(1,), (2,), (3,), (4,), (5,), (6,)],
}
LAST_K = {
    (12, 6): [7, 8, 9, 10, 11, 12],
    (12, 4): [9, 10, 11, 12],
    (12, 3): [10, 11, 12],
    (24, 6): [19, 20, 21, 22, 23, 24],
    (24, 12): [13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24],
    (12, 5): [8, 9, 10, 11, 12],
    (6, 6): [1, 2, 3, 4, 5, 6],
}
UNIFORM_PLUS_LAST_K = {
    (12, 6): [(2, 7), (4, 8), (6, 9), (8, 10), (10, 11), (12,)],
    (12, 4): [(3, 9), (6, 10), (9, 11), (12,)],
    (12, 3): [(4, 10), (8, 11), (12,)],
    (24, 6): [(4, 19), (8, 20), (12, 21), (16, 22), (20, 23), (24,)],
    (24, 12): [(2, 13), (4, 14), (6, 15), (8, 16), (10, 17), (12, 18), (14, 19), (16, 20), (18, 21), (20, 22),
               (22, 23), (24,)],
    (12, 5): [(2, 8), (5, 9), (7, 10), (10, 11), (12,)],
    (6, 6): [(1,), (2,), (3,), (4,), (5,), (6,)],
}
DEPTHS = list(UNIFORM)


@pytest.mark.parametrize("teacher, student", DEPTHS)
def test_uniform(teacher, student):
    assert layer_map("uniform", student, teacher) == [(i + 1, (t,)) for i, t in enumerate(UNIFORM[teacher, student])]


@pytest.mark.parametrize("teacher, student", DEPTHS)
def test_uniform_consecutive_uses_every_teacher_layer_once(teacher, student):
    table = layer_map("uniform-consecutive", student, teacher)
    assert table == [(i + 1, group) for i, group in enumerate(CONSECUTIVE[teacher, student])]
    assert [t for _, group in table for t in group] == list(range(1, teacher + 1))


@pytest.mark.parametrize("teacher, student", DEPTHS)
def test_uniform_plus_last(teacher, student):
    expected = [(i + 1, tuple(sorted({t, teacher}))) for i, t in enumerate(UNIFORM[teacher, student])]
    assert layer_map("uniform+last", student, teacher) == expected
    assert expected[-1] == (student, (teacher,))


@pytest.mark.parametrize("teacher, student", DEPTHS)
def test_last_k_maps_onto_the_last_student_depth_teacher_layers(teacher, student):
    assert layer_map("last-k", student, teacher) == [(i + 1, (t,)) for i, t in enumerate(LAST_K[teacher, student])]


@pytest.mark.parametrize("teacher, student", DEPTHS)
def test_uniform_plus_last_k(teacher, student):
    table = layer_map("uniform+last-k", student, teacher)
    assert table == [(i + 1, group) for i, group in enumerate(UNIFORM_PLUS_LAST_K[teacher, student])]


@pytest.mark.parametrize("teacher, student", DEPTHS)
def test_last(teacher, student):
    assert layer_map("last", student, teacher) == [(student, (teacher,))]


def test_all_maps_each_layer_to_itself_for_equal_depths():
    assert layer_map("all", 6, 6) == [(i, (i,)) for i in range(1, 7)]


def test_uniform_with_one_teacher_layer_per_student_layer_for_student_init():
    # the student initialisation copies teacher layers through this call
    chosen = [teachers for _, teachers in layer_map("uniform", 4, 12)]
    assert all(len(t) == 1 for t in chosen) and [t[0] for t in chosen] == [3, 6, 9, 12]


def test_explicit_groups_pairs_by_student_layer():
    pairs = [[2, 12], [1, 4], [2, 8], [1, 4]]
    assert layer_map("explicit", 2, 12, pairs) == [(1, (4,)), (2, (8, 12))]


@pytest.mark.parametrize(
    "strategy, student, teacher, pairs, words",
    [
        ("all", 6, 12, None, ["'all'", "6", "12"]),
        ("explicit", 6, 12, [[1, 13]], ["'explicit'", "[1, 13]", "1..12"]),
        ("explicit", 6, 12, [[7, 12]], ["'explicit'", "[7, 12]", "1..6"]),
        ("explicit", 6, 12, [[0, 0]], ["'explicit'", "[0, 0]"]),
        ("explicit", 6, 12, None, ["'explicit'", "pairs"]),
        ("explicit", 6, 12, [[1, 2, 3]], ["'explicit'", "[1, 2, 3]"]),
        ("uniform", 12, 6, None, ["'uniform'", "12", "6"]),
        ("last-k", 12, 6, None, ["'last-k'", "12", "6"]),
        ("uniform+last-k", 8, 4, None, ["'uniform+last-k'", "8", "4"]),
        ("uniform", 6, 12, [[1, 2]], ["'uniform'", "explicit"]),
    ],
)
def test_impossible_requests_name_the_strategy_and_layers(strategy, student, teacher, pairs, words):
    with pytest.raises(MappingError) as error:
        layer_map(strategy, student, teacher, pairs)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_unknown_strategy_suggests_a_close_name():
    with pytest.raises(UnknownNameError, match="Did you mean 'uniform-consecutive'"):
        layer_map("uniform_consecutive", 6, 12)
