from __future__ import annotations

import torch
from torch import nn

from ._init import xavier_linear
from ._low_rank_gate import LowRankFeatureGate, check_gate_rank


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


def make_feature_gate(n_features: int, rank: int | None = None) -> nn.Module:
    """The full :class:`FeatureGate` (``rank=None``) or a :class:`LowRankFeatureGate`."""
    rank = check_gate_rank(rank, n_features)
    return FeatureGate(n_features) if rank is None else LowRankFeatureGate(n_features, rank)
