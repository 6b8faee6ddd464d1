"""Metrics shared by training (per-epoch validation), the stored results and the plots."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1, weighted F1 and balanced accuracy (empty input: no metrics)."""
    if len(y_true) == 0:
        return {}
    with warnings.catch_warnings():  # predicted classes absent from the labels
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "balanced_accuracy": balanced,
    }


def relative_tcp_error(predicted: np.ndarray, true: np.ndarray) -> float:
    """``mean |predicted - true| / mean true`` over the pairs where both are finite (NaN: none)."""
    predicted, true = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    both = np.isfinite(predicted) & np.isfinite(true)
    if not both.any():
        return float("nan")
    return float(np.mean(np.abs(predicted[both] - true[both])) / np.mean(true[both]))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation over the pairs where both are finite (NaN if undefined)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < 3 or np.ptp(x[both]) == 0 or np.ptp(y[both]) == 0:
        return float("nan")
    return float(spearmanr(x[both], y[both]).statistic)
