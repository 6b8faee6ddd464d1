"""A model's inference result as per-cell and per-feature tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._inference import InferenceResult


def modality_frame(values: np.ndarray, result: InferenceResult, index: pd.Index,
                   modalities: Sequence[str]) -> pd.DataFrame:
    """Per-cell, per-modality ``values`` as a DataFrame, NaN where a cell lacks the modality."""
    return pd.DataFrame(np.where(result.present, values, np.nan), index=index,
                        columns=list(modalities))


def feature_weight_frames(result: InferenceResult, modalities: Sequence[str],
                          features: dict[str, list[str]], classes: Sequence[str],
                          images: dict) -> dict[str, pd.DataFrame]:
    """Per tabular modality, the mean gate per predicted class (features x classes).

    NaN where no cell was predicted as the class; a model without feature gates uses every
    feature with weight 1. Image modalities have per-cell heatmaps (``result.heatmaps``)
    instead.
    """
    frames = {}
    for m, mod in enumerate(modalities):
        if mod in images:
            continue
        counts = result.gate_counts[m]
        if result.gate_sums[m] is None:
            values = np.where(counts[:, None] > 0, 1.0, np.nan) * np.ones(
                (len(classes), len(features[mod]))
            )
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                values = result.gate_sums[m] / counts[:, None]
            values[counts == 0] = np.nan
        frames[mod] = pd.DataFrame(values.T, index=features[mod], columns=list(classes))
    return frames


def informativeness(result: InferenceResult, m: int) -> np.ndarray | None:
    """Mean gate value per feature of modality ``m`` over all cells that have it."""
    if result.gate_sums[m] is None:
        return None
    total = result.gate_counts[m].sum()
    return result.gate_sums[m].sum(0) / max(total, 1.0)


def subset(result: InferenceResult, rows: np.ndarray) -> InferenceResult:
    """The per-cell fields of ``result`` for ``rows`` (per-class sums are not subset)."""
    return InferenceResult(
        proba=result.proba[rows],
        modality_proba=[p[rows] for p in result.modality_proba],
        weights=result.weights[rows], confidence=result.confidence[rows],
        tcp_hat=None if result.tcp_hat is None else result.tcp_hat[rows],
        present=result.present[rows], latent=result.latent[rows],
        gate_sums=result.gate_sums, gate_counts=result.gate_counts,
    )
