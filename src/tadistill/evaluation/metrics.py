"""Task metrics as the GLUE leaderboard defines them, computed with scikit-learn and scipy.

Every metric returns a dict with a "score": the one number per task that a sweep picks
learning rates by and that the GLUE average averages. For tasks the leaderboard scores
with two metrics (MRPC and QQP: F1 and accuracy; STS-B: Pearson and Spearman) the score
is their mean, as the leaderboard computes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from tadistill.evaluation.tasks import SUITES


def mcc(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    value = float(matthews_corrcoef(labels, predictions))
    return {"mcc": value, "score": value}


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    value = float(accuracy_score(labels, predictions))
    return {"accuracy": value, "score": value}


def accuracy_f1(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    acc = float(accuracy_score(labels, predictions))
    f1 = float(f1_score(labels, predictions))  # F1 of the positive class (id 1), as GLUE's
    return {"accuracy": acc, "f1": f1, "score": (acc + f1) / 2}


def classification(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """A user's classification task (any number of classes): accuracy (the score), macro-F1, MCC."""
    acc = float(accuracy_score(labels, predictions))
    macro_f1 = float(f1_score(labels, predictions, average="macro"))
    return {"accuracy": acc, "macro_f1": macro_f1, "mcc": float(matthews_corrcoef(labels, predictions)), "score": acc}


def pearson_spearman(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    pearson = _correlation_or_zero(pearsonr, labels, predictions)
    spearman = _correlation_or_zero(spearmanr, labels, predictions)
    return {"pearson": pearson, "spearman": spearman, "score": (pearson + spearman) / 2}


def _correlation_or_zero(correlation: Callable, labels: np.ndarray, predictions: np.ndarray) -> float:
    # A constant prediction (an untrained regressor) has no defined correlation; count it
    # as 0, the value scikit-learn's Matthews correlation gives a constant classifier.
    if np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    value = float(correlation(labels, predictions)[0])
    return 0.0 if math.isnan(value) else value


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
    "mcc": mcc,
    "accuracy": accuracy,
    "accuracy_f1": accuracy_f1,
    "classification": classification,
    "pearson_spearman": pearson_spearman,
}

# The values a table shows for each metric, in the leaderboard's order (MRPC "F1/acc").
SHOWN_VALUES = {
    "mcc": ("mcc",),
    "accuracy": ("accuracy",),
    "accuracy_f1": ("f1", "accuracy"),
    "classification": ("accuracy", "macro_f1"),
    "pearson_spearman": ("pearson", "spearman"),
}


def compute_metrics(metric: str, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """`metric` (a key of METRICS) of class ids or regression values against the labels."""
    return METRICS[metric](np.asarray(labels), np.asarray(predictions))


def average_sets(metrics: Mapping[str, Mapping[str, float]], prefix: str) -> dict[str, float]:
    """Each metric averaged over the eval sets named `<prefix>_*` (XNLI's languages)."""
    sets = [values for name, values in metrics.items() if name.startswith(f"{prefix}_")]
    return {key: float(np.mean([values[key] for values in sets])) for key in sets[0]}


GLUE_AVERAGE_DEFINITION = (
    "mean of the per-task scores over CoLA (MCC), SST-2 (acc), MRPC (mean of F1 and acc), "
    "STS-B (mean of Pearson and Spearman), QQP (mean of acc and F1), MNLI (matched acc), "
    "QNLI (acc) and RTE (acc); WNLI is excluded"
)


def glue_average(scores: Mapping[str, float]) -> tuple[float | None, list[str]]:
    """The GLUE average (see GLUE_AVERAGE_DEFINITION) of the tasks present, and which they were."""
    tasks = [name for name in SUITES["glue"] if name in scores]
    average = float(np.mean([scores[name] for name in tasks])) if tasks else None
    return average, tasks
