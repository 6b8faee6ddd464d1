"""Plots that read only what :mod:`mmdyn_sc.tl` stored.

matplotlib is imported on first use of a plot (PEP 562 ``__getattr__``).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from ._attribution import attribution
    from ._confusion import confusion
    from ._feature_weights import feature_weights
    from ._heatmaps import heatmaps
    from ._modality_confidence import modality_confidence
    from ._reliability import reliability
    from ._tcp_calibration import tcp_calibration
    from ._training_history import training_history

#: Public name -> module that defines it, imported on first access.
_LAZY = {
    "attribution": "._attribution",
    "confusion": "._confusion",
    "feature_weights": "._feature_weights",
    "heatmaps": "._heatmaps",
    "modality_confidence": "._modality_confidence",
    "reliability": "._reliability",
    "tcp_calibration": "._tcp_calibration",
    "training_history": "._training_history",
}

__all__ = [
    "attribution",
    "confusion",
    "feature_weights",
    "heatmaps",
    "modality_confidence",
    "reliability",
    "tcp_calibration",
    "training_history",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
