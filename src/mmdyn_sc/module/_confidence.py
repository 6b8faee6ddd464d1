from __future__ import annotations

import torch
from torch import nn

from ._init import xavier_linear


class TCPConfidenceHead(nn.Module):
    """The original MM dynamics confidence head: ``tcp^ = D h`` (one unbounded scalar per cell).

    Trained by regression on the true class probability (TCP) of the modality's own
    classifier; the modality's latent is scaled by its output.
    """

    def __init__(self, n_hidden: int):
        super().__init__()
        self.linear = xavier_linear(n_hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(-1)
