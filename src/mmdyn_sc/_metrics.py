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


def metrics_from_confusion(confusion) -> dict[str, float]:
    """Accuracy, macro F1 and balanced accuracy from a confusion matrix (empty: no metrics).

    Gives the same numbers as :func:`classification_metrics` on the labels counted in
    ``confusion``: macro F1 over the classes present in the truth or the predictions
    (sklearn, ``zero_division=0``), balanced accuracy as the mean recall over the classes
    present in the truth.

    Parameters
    ----------
    confusion
        ``(C, C)`` counts, rows the true class, columns the predicted class.

    Returns
    -------
    ``accuracy``, ``f1_macro`` and ``balanced_accuracy``.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    total = int(confusion.sum())
    if total == 0:
        return {}
    tp = np.diag(confusion)
    true_sum, pred_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    seen = (true_sum + pred_sum) > 0  # sklearn's labels: present in y_true or y_pred
    # Same float64 expressions as sklearn: 2 tp / (true + pred), diag / row sum, then np.mean.
    f1 = (2.0 * tp[seen]) / (true_sum[seen].astype(np.float64) + pred_sum[seen])
    recall = tp[true_sum > 0] / true_sum[true_sum > 0]
    return {
        "accuracy": int(tp.sum()) / total,
        "f1_macro": float(np.mean(f1)),
        "balanced_accuracy": float(np.mean(recall)),
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
