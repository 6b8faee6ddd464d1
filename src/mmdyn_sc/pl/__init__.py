"""Plots that read only what :mod:`mmdyn_sc.tl` stored."""

from ._feature_weights import feature_weights
from ._training_history import training_history

__all__ = ["feature_weights", "training_history"]
