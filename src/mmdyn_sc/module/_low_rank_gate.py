"""Low-rank feature informativeness gate, for modalities with thousands of features."""

from __future__ import annotations

import numbers

import torch
from torch import nn

from ._init import xavier_linear


def check_gate_rank(rank: int | None, n_features: int, where: str = "") -> int | None:
    """Return ``rank`` as an int (``None``: the full gate); raise unless ``1 <= rank < d``.

    ``where`` (e.g. ``" of modality 'rna'"``) is put into the error message.
    """
    if rank is None:
        return None
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise TypeError(f"gate_rank{where} must be a positive integer or None (or \"auto\" "
                        f"for the model), got {rank!r}.")
    rank = int(rank)
    if not 1 <= rank < n_features:
        raise ValueError(
            f"gate_rank{where} is {rank}, but must be in [1, {n_features - 1}]: below the "
            f"feature count ({n_features} features). Use None for the full d x d gate."
        )
    return rank


class LowRankFeatureGate(nn.Module):
    """Feature informativeness gate of rank r: ``w = sigmoid(B (A x) + b)``.

    ``A`` (r x d, no bias) projects the d features to r dimensions and ``B`` (d x r, bias
    ``b``) maps them back: O(d r) parameters and operations instead of the full gate's
    O(d^2). Both use xavier-normal weights and the bias starts at zero, as in
    :class:`~mmdyn_sc.module.FeatureGate`.

    Parameters
    ----------
    n_features
        Input features d.
    rank
        Inner dimension r, ``1 <= r < d``.

    ``forward`` returns the gate ``w`` (n, d), each entry in (0, 1), with the same meaning as
    the full gate's: the gated input is ``x * w``.
    """

    def __init__(self, n_features: int, rank: int):
        super().__init__()
        rank = check_gate_rank(rank, n_features)
        self.down = nn.Linear(n_features, rank, bias=False)
        nn.init.xavier_normal_(self.down.weight)
        self.up = xavier_linear(rank, n_features)

    @property
    def rank(self) -> int:
        return self.down.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(self.down(x)))
