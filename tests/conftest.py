"""Shared fixtures: tiny teachers of every supported family, built offline once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tiny models on a shared 2-core machine: torch's spin-waiting threads cost more than they give
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from tiny import make_tiny_teacher  # noqa: E402

FAMILIES = ("bert", "roberta", "xlm-roberta")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state and refuses a second Accelerator with another
    precision; each test starts (and leaves) it clean, as a new process would."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="session")
def tiny_teacher_factory(tmp_path_factory):
    """factory(family, **shape) -> path of a tiny teacher directory (cached per arguments)."""
    cache: dict = {}

    def make(family: str = "bert", **shape):
        key = (family, tuple(sorted(shape.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"teacher-{family}")
            cache[key] = make_tiny_teacher(family, out, **shape)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def bert_teacher(tiny_teacher_factory):
    return tiny_teacher_factory("bert")


@pytest.fixture(scope="session")
def roberta_teacher(tiny_teacher_factory):
    return tiny_teacher_factory("roberta")


@pytest.fixture(scope="session")
def xlmr_teacher(tiny_teacher_factory):
    return tiny_teacher_factory("xlm-roberta")


@pytest.fixture(scope="session", params=FAMILIES)
def any_teacher(request, tiny_teacher_factory):
    """Parametrises a test over every supported family."""
    return tiny_teacher_factory(request.param)
