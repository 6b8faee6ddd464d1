"""Plots that read only what :mod:`mmdyn_sc.tl` stored."""

from ._confusion import confusion
from ._feature_weights import feature_weights
from ._heatmaps import heatmaps
from ._modality_confidence import modality_confidence
from ._tcp_calibration import tcp_calibration
from ._training_history import training_history

__all__ = [
    "confusion",
    "feature_weights",
    "heatmaps",
    "modality_confidence",
    "tcp_calibration",
    "training_history",
]
