from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FeatureScaler(nn.Module):
    """Per-feature affine scaling ``(x - shift) / scale`` with parameters fitted on training cells.

    Stored as buffers so that a saved model reapplies exactly the scaling it was trained with.
    Starts as the identity. With ``clip``, scaled values are clipped to ``[-clip, clip]`` (as
    ``scanpy.pp.scale(max_value=...)``, on both sides); ``clip`` is a model option, not a
    buffer, so the model's saved options restore it.
    """

    def __init__(self, n_features: int, clip: float | None = None):
        super().__init__()
        self.register_buffer("shift", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.clip = clip

    def set(self, shift: np.ndarray, scale: np.ndarray) -> None:
        """Set the fitted parameters; zero or non-finite scales become 1."""
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        self.shift.copy_(torch.as_tensor(shift, dtype=self.shift.dtype))
        self.scale.copy_(torch.as_tensor(scale, dtype=self.scale.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = (x - self.shift) / self.scale
        return scaled if self.clip is None else scaled.clamp(-self.clip, self.clip)


class ChannelScaler(FeatureScaler):
    """Per-channel ``(x - shift) / scale`` of images (n, C, H, W): one shift, scale per channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift[:, None, None]) / self.scale[:, None, None]
