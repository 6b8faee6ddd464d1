"""Modality confidence: the heads that predict a modality's TCP and what they share.

Four estimators are available (:data:`CONFIDENCE_OPTIONS`); the module
:class:`~mmdyn_sc.module.MMDynamicsModule` picks one with ``confidence=``:

``"tcp"``
    The original MM dynamics head (:class:`TCPConfidenceHead`): unbounded, trained on the
    non-detached TCP, its output scales the latent.
``"tcp_calibrated"``
    :class:`BoundedConfidenceHead`: a sigmoid head on the detached latent, regressed on the
    detached TCP of held-out cells that the classifiers do not fit (see
    ``MMDynamicsModule.held_out_confidence_error``); its (detached) output scales the latent.
``"energy"``
    The energy score of QMF (Zhang et al., ICML 2023), see :mod:`._energy`; no head.
``"pdf"``
    Predictive Dynamic Fusion (Cao et al., ICML 2024), see :mod:`._pdf`: a
    :class:`BoundedConfidenceHead` (mono-confidence) plus holo-confidence and relative
    calibration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._init import xavier_linear

#: The confidence estimators :class:`~mmdyn_sc.module.MMDynamicsModule` offers.
CONFIDENCE_OPTIONS = ("tcp", "tcp_calibrated", "energy", "pdf")

#: Options with a head that predicts the TCP of the modality's own classifier.
TCP_PREDICTING_OPTIONS = ("tcp", "tcp_calibrated", "pdf")


def check_confidence_option(confidence: str) -> str:
    """Return ``confidence`` if it is one of :data:`CONFIDENCE_OPTIONS`, else raise ValueError."""
    if confidence not in CONFIDENCE_OPTIONS:
        raise ValueError(
            f"Unknown confidence {confidence!r}; use one of {', '.join(CONFIDENCE_OPTIONS)}."
        )
    return confidence


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


class BoundedConfidenceHead(nn.Module):
    """Calibrated confidence head: ``tcp^ = sigmoid(D stop_gradient(h))``, in (0, 1).

    The latent is detached inside ``forward``, so the head's regression loss trains the head
    only and never shapes the encoder. Used by ``"tcp_calibrated"`` and, as the
    mono-confidence, by ``"pdf"`` (whose official head is three linear layers without a
    non-linearity, i.e. the same function class, followed by a sigmoid).
    """

    def __init__(self, n_hidden: int):
        super().__init__()
        self.linear = xavier_linear(n_hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(h.detach()).squeeze(-1))


def make_confidence_head(confidence: str, n_hidden: int) -> nn.Module | None:
    """The head a modality branch needs for ``confidence`` (None for ``"energy"``)."""
    if confidence == "tcp":
        return TCPConfidenceHead(n_hidden)
    if confidence in ("tcp_calibrated", "pdf"):
        return BoundedConfidenceHead(n_hidden)
    return None


def true_class_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """TCP: the softmax probability each cell's classifier gives its true class, (n,)."""
    return torch.gather(F.softmax(logits, dim=1), 1, y.unsqueeze(1)).squeeze(1)


def tcp_regression_error(
    confidence: str, tcp_hat: torch.Tensor, tcp: torch.Tensor
) -> torch.Tensor:
    """Per-cell error of the predicted TCP, as each option trains it, (n,).

    ``"tcp"``: squared error on the non-detached TCP (the original, which lets the
    confidence loss also move the modality's classifier and encoder). ``"tcp_calibrated"``
    and ``"pdf"``: absolute error on the detached TCP (the official PDF code uses an L1
    loss; for ``"tcp_calibrated"`` it is the error the fit reports, see
    ``MMDynamicsModule.held_out_confidence_error``).
    """
    if confidence == "tcp":
        return (tcp_hat - tcp) ** 2
    if confidence in ("tcp_calibrated", "pdf"):
        return (tcp_hat - tcp.detach()).abs()
    raise ValueError(f"Confidence {confidence!r} does not predict the TCP.")


def modality_softmax(scores: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Softmax over modalities restricted to the available ones, (n, M).

    Parameters
    ----------
    scores
        (n, M) score per cell and modality.
    available
        (n, M), nonzero where the modality enters the normalisation (present and, in
        training with modality dropout, not dropped).

    Returns
    -------
    Weights that sum to 1 over a cell's available modalities and are 0 elsewhere; a cell
    with no available modality gets all zeros.
    """
    keep = available > 0
    masked = scores.masked_fill(~keep, float("-inf"))
    top = masked.max(dim=1, keepdim=True).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    numerator = torch.exp(masked - top)
    total = numerator.sum(dim=1, keepdim=True)
    return numerator / total.clamp_min(torch.finfo(scores.dtype).tiny)
