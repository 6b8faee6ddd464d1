"""Calibration measures of a per-cell certainty: ECE, risk-coverage, AUROC.

Shared by ``tl.fit`` / ``tl.predict`` (stored diagnostics), ``pl.reliability`` and the
benchmarks, so that all of them compute the same numbers.
"""

from __future__ import annotations

import numpy as np

#: Equal-mass bins of the expected calibration error.
ECE_BINS = 15
#: Coverage at which ``accuracy_at_coverage`` is reported.
COVERAGE = 0.9


def equal_mass_bins(certainty: np.ndarray, n_bins: int = ECE_BINS) -> list[np.ndarray]:
    """Indices of ``certainty`` sorted and cut into ``n_bins`` bins of (nearly) equal size."""
    order = np.argsort(certainty, kind="stable")
    return [b for b in np.array_split(order, min(n_bins, max(len(order), 1))) if len(b)]


def expected_calibration_error(certainty: np.ndarray, correct: np.ndarray,
                               n_bins: int = ECE_BINS) -> float:
    """Mean over equal-mass bins of |mean certainty - accuracy|, weighted by bin size."""
    certainty, correct = np.asarray(certainty, float), np.asarray(correct, float)
    if len(certainty) == 0:
        return float("nan")
    total = 0.0
    for members in equal_mass_bins(certainty, n_bins):
        total += len(members) * abs(certainty[members].mean() - correct[members].mean())
    return total / len(certainty)


def risk_coverage(certainty: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and error rate when keeping the most certain cells first, (n,) each."""
    order = np.argsort(-np.asarray(certainty, float), kind="stable")
    errors = 1.0 - np.asarray(correct, float)[order]
    kept = np.arange(1, len(order) + 1)
    return kept / max(len(order), 1), np.cumsum(errors) / kept


def area_under_risk_coverage(certainty: np.ndarray, correct: np.ndarray) -> float:
    """Mean error rate over all coverages (AURC; lower is better)."""
    if len(certainty) == 0:
        return float("nan")
    return float(risk_coverage(certainty, correct)[1].mean())


def accuracy_at_coverage(certainty: np.ndarray, correct: np.ndarray,
                         coverage: float = COVERAGE) -> float:
    """Accuracy on the ``coverage`` share of cells with the highest certainty."""
    if len(certainty) == 0:
        return float("nan")
    keep = max(1, int(np.ceil(coverage * len(certainty))))
    order = np.argsort(-np.asarray(certainty, float), kind="stable")[:keep]
    return float(np.asarray(correct, float)[order].mean())


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` (NaN with one class only)."""
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, scores))


def calibration_report(certainty: np.ndarray, correct: np.ndarray) -> dict:
    """The calibration measures of ``certainty`` against ``correct`` calls, as a dict.

    ``ece`` (15 equal-mass bins), ``aurc``, ``accuracy_at_90_coverage``, ``auroc_correct``,
    ``accuracy``, ``mean_certainty``, ``n_cells``.
    """
    certainty, correct = np.asarray(certainty, float), np.asarray(correct, bool)
    return {
        "ece": expected_calibration_error(certainty, correct),
        "aurc": area_under_risk_coverage(certainty, correct),
        "accuracy_at_90_coverage": accuracy_at_coverage(certainty, correct),
        "auroc_correct": auroc(certainty, correct),
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "mean_certainty": float(certainty.mean()) if len(certainty) else float("nan"),
        "n_cells": int(len(certainty)),
    }
