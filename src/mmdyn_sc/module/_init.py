from __future__ import annotations

from torch import nn


def xavier_linear(n_in: int, n_out: int) -> nn.Linear:
    """A linear layer with xavier-normal weights and zero bias, as in the original MM dynamics."""
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_normal_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
