"""Per-feature scaling fitted on the training cells (min-max or z-score)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

SCALINGS = (None, "minmax", "standard")


def fit_scaling(matrix, rows: np.ndarray, method: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Return (shift, scale) so that ``(x - shift) / scale`` is min-max or z-scored on ``rows``.

    ``rows`` are the training cells that have the modality. Works on sparse matrices without
    densifying them.
    """
    if method not in SCALINGS:
        raise ValueError(f"feature_scaling must be one of {SCALINGS}, got {method!r}.")
    n_features = matrix.shape[1]
    if method is None or len(rows) == 0:
        return np.zeros(n_features), np.ones(n_features)
    sub = matrix[rows]
    if method == "minmax":
        if sparse.issparse(sub):
            low = sub.min(axis=0).toarray().ravel()
            high = sub.max(axis=0).toarray().ravel()
        else:
            low, high = np.min(sub, axis=0), np.max(sub, axis=0)
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        return low, high - low
    if sparse.issparse(sub):
        mean = np.asarray(sub.mean(axis=0), dtype=np.float64).ravel()
        mean_sq = np.asarray(sub.multiply(sub).mean(axis=0), dtype=np.float64).ravel()
        std = np.sqrt(np.maximum(mean_sq - mean**2, 0.0))
    else:
        sub = np.asarray(sub, dtype=np.float64)
        mean, std = sub.mean(axis=0), sub.std(axis=0)
    return mean, std
