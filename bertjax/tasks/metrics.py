"""Evaluation metrics of GLUE and of labelled text sets, on numpy arrays of labels/predictions.

The GLUE benchmark's official metrics: Matthews correlation (CoLA), Pearson and Spearman
correlation (STS-B), F1 of the positive class and accuracy (MRPC, QQP), accuracy (the rest).
Each is tested to equal scikit-learn / scipy on the same predictions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


def f1(labels: np.ndarray, predictions: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class (0 when there is no positive label or prediction)."""
    labels, predictions = np.asarray(labels) == positive, np.asarray(predictions) == positive
    true_positive = np.sum(labels & predictions)
    denominator = np.sum(labels) + np.sum(predictions)
    return float(2 * true_positive / denominator) if denominator else 0.0


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """The unweighted mean of per-class F1 over the classes present in labels or predictions."""
    classes = np.union1d(labels, predictions)
    return float(np.mean([f1(labels, predictions, positive=c) for c in classes]))


def matthews_corrcoef(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Matthews correlation (multi-class form), 0 when it is undefined."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    k = len(classes)
    confusion = np.zeros((k, k), np.float64)
    np.add.at(confusion, (encoded[: len(labels)], encoded[len(labels) :]), 1)
    true_counts, predicted_counts = confusion.sum(1), confusion.sum(0)
    correct, samples = np.trace(confusion), confusion.sum()
    covariance = correct * samples - true_counts @ predicted_counts
    denominator = np.sqrt((samples**2 - predicted_counts @ predicted_counts) * (samples**2 - true_counts @ true_counts))
    return float(covariance / denominator) if denominator else 0.0


def pearson(labels: np.ndarray, predictions: np.ndarray) -> float:
    x = np.asarray(labels, np.float64) - np.mean(labels)
    y = np.asarray(predictions, np.float64) - np.mean(predictions)
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denominator) if denominator else 0.0


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties given their average rank (scipy's rankdata 'average')."""
    unique, inverse, counts = np.unique(np.asarray(values), return_inverse=True, return_counts=True)
    del unique
    first = np.cumsum(counts) - counts  # 0-based position where each distinct value starts
    return (first + (counts + 1) / 2.0)[inverse]


def spearman(labels: np.ndarray, predictions: np.ndarray) -> float:
    return pearson(rank(labels), rank(predictions))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "matthews_corrcoef": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(names: tuple[str, ...], labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """{name: value} for each metric name (keys of METRICS)."""
    return {name: METRICS[name](labels, predictions) for name in names}
