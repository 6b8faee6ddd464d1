from __future__ import annotations

import torch
from torch import nn

from ._init import xavier_linear


class FeatureGate(nn.Module):
    """Feature informativeness gate: ``w = sigmoid(A x + a)`` with a square ``A`` (d x d).

    ``forward`` returns the gate ``w`` (n, d), each entry in (0, 1); the gated input is
    ``x * w``. The mean of ``w`` over cells is a feature's informativeness.
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.linear = xavier_linear(n_features, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(x))
