"""The tail every modality branch shares: ReLU, dropout, classifier and confidence head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._confidence import check_confidence_option, make_confidence_head
from ._init import xavier_linear


class BranchHeads(nn.Module):
    """Base of the tabular and image branches: what follows a branch's encoder.

    A subclass builds its scaler, gate and encoder, then calls :meth:`_init_heads`; its
    ``forward`` passes the encoder's pre-activation latent to :meth:`_heads`, which returns
    ``h`` = dropout(ReLU(latent)), the branch's own ``logits`` and ``tcp_hat`` (the
    confidence head's output, or None without one).
    """

    #: Factor of this branch's gate in the loss's sparsity term (the L1 on the gate values),
    #: on top of ``loss_weights["sparsity"]``.
    sparsity_weight: float = 1.0

    def _init_heads(self, n_hidden: int, n_classes: int, dropout: float,
                    modality_informativeness: bool, confidence: str) -> None:
        check_confidence_option(confidence)
        self.dropout = nn.Dropout(dropout)
        self.classifier = xavier_linear(n_hidden, n_classes)
        self.confidence = (
            make_confidence_head(confidence, n_hidden) if modality_informativeness else None
        )

    def _heads(self, latent: torch.Tensor) -> dict[str, torch.Tensor | None]:
        h = self.dropout(F.relu(latent))
        # Classifier before confidence head, as in the original: the order in which their
        # gradients add up in h (float rounding) stays the same.
        logits = self.classifier(h)
        tcp_hat = self.confidence(h) if self.confidence is not None else None
        return {"h": h, "logits": logits, "tcp_hat": tcp_hat}
