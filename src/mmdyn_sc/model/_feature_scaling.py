"""Per-feature scaling fitted on the training cells (min-max or z-score)."""

from __future__ import annotations

import numbers

import numpy as np
from scipy import sparse

from .._data._chunks import row_blocks

SCALINGS = (None, "minmax", "standard")
#: Images read at a time when fitting channel scaling (3 x 64 x 64 float64: 100 KB each).
IMAGE_CHUNK = 1024


def check_scaling(method) -> None:
    """Raise unless ``method`` is one of :data:`SCALINGS`."""
    if method not in SCALINGS:
        raise ValueError(f"feature_scaling must be one of {SCALINGS}, got {method!r}.")


def check_feature_clip(feature_clip, feature_scaling) -> float | None:
    """``feature_clip`` as a float (or ``None``); clipping needs ``"standard"`` scaling."""
    check_scaling(feature_scaling)
    if feature_clip is None:
        return None
    if isinstance(feature_clip, bool) or not isinstance(feature_clip, numbers.Real):
        raise TypeError(f"feature_clip must be None or a positive number, got "
                        f"{type(feature_clip).__name__}.")
    if not (np.isfinite(feature_clip) and feature_clip > 0):
        raise ValueError(f"feature_clip must be None or a positive number, got {feature_clip}.")
    if feature_scaling != "standard":
        raise ValueError(
            f"feature_clip clips z-scores and needs feature_scaling='standard', got "
            f"feature_scaling={feature_scaling!r}; pass feature_clip=None."
        )
    return float(feature_clip)


def fit_scaling(matrix, rows: np.ndarray, method: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Return (shift, scale) so that ``(x - shift) / scale`` is min-max or z-scored on ``rows``.

    ``rows`` are the training cells that have the modality. Reads the rows in blocks
    (:func:`~mmdyn_sc._data._chunks.row_blocks`), so a sparse matrix is never densified, a
    dense one is never copied whole at float64, and a backed (on-disk) one is read block by
    block. Sums are accumulated in float64.
    """
    check_scaling(method)
    n_features = matrix.shape[1]
    if method is None or len(rows) == 0:
        return np.zeros(n_features), np.ones(n_features)
    if method == "minmax":
        low, high = np.full(n_features, np.inf), np.full(n_features, -np.inf)
        for block in row_blocks(matrix, rows):
            if sparse.issparse(block):
                block_low = block.min(axis=0).toarray().ravel()
                block_high = block.max(axis=0).toarray().ravel()
            else:
                block_low, block_high = block.min(axis=0), block.max(axis=0)
            low = np.minimum(low, np.asarray(block_low, dtype=np.float64))
            high = np.maximum(high, np.asarray(block_high, dtype=np.float64))
        return low, high - low
    total, total_sq = np.zeros(n_features), np.zeros(n_features)
    for block in row_blocks(matrix, rows):
        if sparse.issparse(block):
            block = block.astype(np.float64)
            total += np.asarray(block.sum(axis=0)).ravel()
            total_sq += np.asarray(block.multiply(block).sum(axis=0)).ravel()
        else:
            block = block.astype(np.float64)
            total += block.sum(axis=0)
            total_sq += np.square(block).sum(axis=0)
    mean = total / len(rows)
    std = np.sqrt(np.maximum(total_sq / len(rows) - mean**2, 0.0))
    return mean, std


def fit_channel_scaling(images, rows: np.ndarray, method: str | None,
                        pool: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (shift, scale) of images (n, C, H, W), fitted on ``rows``.

    The counterpart of :func:`fit_scaling` for an image modality: every pixel of a channel
    counts as one value of that channel, on the images as the model reads them (``uint8``
    divided by 255, float as stored, average-pooled ``pool`` x ``pool`` where the image
    branch pools its input). ``"standard"``: channel mean and standard deviation;
    ``"minmax"``: channel minimum and range; ``None``: the identity. Reads ``IMAGE_CHUNK``
    images at a time, sums in float64.
    """
    check_scaling(method)
    n_channels = images.shape[1]
    if method is None or len(rows) == 0:
        return np.zeros(n_channels), np.ones(n_channels)
    divisor = 255.0 if np.dtype(images.dtype) == np.uint8 else 1.0
    axes = (0, 2, 3)
    low, high = np.full(n_channels, np.inf), np.full(n_channels, -np.inf)
    total, total_sq = np.zeros(n_channels), np.zeros(n_channels)
    for block in row_blocks(images, rows, chunk=IMAGE_CHUNK):
        block = block.astype(np.float64) / divisor
        if pool > 1:
            n, c, h, w = block.shape
            block = block.reshape(n, c, h // pool, pool, w // pool, pool).mean(axis=(3, 5))
        if method == "minmax":
            low = np.minimum(low, block.min(axis=axes))
            high = np.maximum(high, block.max(axis=axes))
        else:
            total += block.sum(axis=axes)
            total_sq += np.square(block).sum(axis=axes)
    if method == "minmax":
        return low, high - low
    n_values = len(rows) * (images.shape[2] // pool) * (images.shape[3] // pool)
    mean = total / n_values
    return mean, np.sqrt(np.maximum(total_sq / n_values - mean**2, 0.0))
