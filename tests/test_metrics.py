"""GLUE metrics against values computed by hand from their textbook definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tadistill.evaluation.metrics import METRICS, average_sets, compute_metrics, glue_average

LABELS = np.array([1, 1, 0, 0, 1])
PREDICTIONS = np.array([1, 0, 0, 1, 1])  # TP 2, FN 1, TN 1, FP 1


def test_matthews_correlation():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2)
    assert compute_metrics("mcc", LABELS, PREDICTIONS) == pytest.approx({"mcc": 1 / 6, "score": 1 / 6})


def test_accuracy():
    assert compute_metrics("accuracy", LABELS, PREDICTIONS) == pytest.approx({"accuracy": 0.6, "score": 0.6})


def test_accuracy_f1_and_their_mean():
    # precision = recall = 2/3 for the positive class, so F1 = 2/3
    expected = {"accuracy": 0.6, "f1": 2 / 3, "score": (0.6 + 2 / 3) / 2}
    assert compute_metrics("accuracy_f1", LABELS, PREDICTIONS) == pytest.approx(expected)


def test_pearson_spearman_and_their_mean():
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    predictions = np.array([2.0, 2.0, 5.0, 9.0])
    # Pearson: deviations (-1.5, -.5, .5, 1.5) and (-2.5, -2.5, .5, 4.5): 12 / sqrt(5 * 33)
    pearson = 12 / math.sqrt(165)
    # Spearman: Pearson of the ranks (1, 2, 3, 4) and (1.5, 1.5, 3, 4): 4.5 / sqrt(5 * 4.5)
    spearman = 4.5 / math.sqrt(22.5)
    expected = {"pearson": pearson, "spearman": spearman, "score": (pearson + spearman) / 2}
    assert compute_metrics("pearson_spearman", labels, predictions) == pytest.approx(expected)


def test_constant_regression_counts_as_no_correlation():
    values = compute_metrics("pearson_spearman", np.array([1.0, 2.0, 3.0]), np.array([2.5, 2.5, 2.5]))
    assert values == {"pearson": 0.0, "spearman": 0.0, "score": 0.0}


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_perfect_predictions_score_one(metric):
    labels = np.array([0, 1, 1, 0, 1, 0])
    assert compute_metrics(metric, labels, labels)["score"] == pytest.approx(1.0)


def test_average_sets_averages_each_metric_over_the_prefixed_sets():
    metrics = {
        "dev_en": {"accuracy": 0.8, "score": 0.8},
        "dev_fr": {"accuracy": 0.6, "score": 0.6},
        "test_en": {"accuracy": 0.1, "score": 0.1},
    }
    assert average_sets(metrics, "dev") == pytest.approx({"accuracy": 0.7, "score": 0.7})


def test_glue_average_uses_the_eight_tasks_without_wnli():
    scores = {"cola": 0.5, "sst2": 0.9, "mrpc": 0.8, "stsb": 0.85, "qqp": 0.88, "mnli": 0.84, "qnli": 0.9, "rte": 0.7}
    average, tasks = glue_average({**scores, "wnli": 0.1})
    assert sorted(tasks) == sorted(scores)
    assert average == pytest.approx(sum(scores.values()) / 8)


def test_glue_average_of_no_averaged_task_is_none():
    assert glue_average({"wnli": 0.56}) == (None, [])
