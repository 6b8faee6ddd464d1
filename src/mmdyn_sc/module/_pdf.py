"""Predictive Dynamic Fusion weights (Cao et al., ICML 2024; code github.com/Yinan-Xia/PDF).

Per cell and modality m, with ``p^_m`` the mono-confidence (a sigmoid head on the detached
latent, trained on the detached TCP of the modality's classifier, see
:class:`~mmdyn_sc.module.BoundedConfidenceHead`):

- **Holo-confidence**: the share of the other modalities in the total predicted loss,
  ``holo_m = sum_{j != m} l_j / sum_j l_j`` with ``l_j = -log p^_j`` (for two modalities this
  is the official ``log p^_other / log(p^_m p^_other)``); in [0, 1].
- **Co-belief**: ``cb_m = p^_m + holo_m``, detached, in [0, 2].
- **Relative calibration** (RC): with the distribution uniformity
  ``DU_m = mean_c |softmax(logits_m)_c - 1/C|`` (how far the modality's prediction is from
  uniform), ``RC_m = DU_m / max_j DU_j``, so the most decided modality keeps its co-belief and
  the others are scaled down by their relative uncertainty. For two modalities this is the
  official ``min(DU_m / DU_other, 1)``; the maximum is this package's extension to more
  modalities. As in the official code, RC is applied in evaluation only (the training
  forward of the official code fuses with the uncalibrated co-belief).
- **Fusion weight**: ``w_m = softmax_m(RC_m cb_m)``, normalised over the modalities the cell
  has (and, in training with modality dropout, has not dropped), detached as in the official
  code.

Every sum and maximum over ``j`` runs over the available modalities only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._confidence import modality_softmax

#: Smallest mono-confidence that enters a logarithm, and the guard of the holo denominator.
PDF_EPS = 1e-8


def holo_confidence(mono: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Holo-confidence ``sum_{j != m} l_j / sum_j l_j`` with ``l_j = -log mono_j``, (n, M).

    Parameters
    ----------
    mono
        (n, M) mono-confidences in (0, 1).
    available
        (n, M), nonzero where the modality counts.

    Returns
    -------
    (n, M) values in [0, 1]; 0 for unavailable modalities and for a cell's only modality.
    """
    keep = (available > 0).to(mono.dtype)
    predicted_loss = -torch.log(mono.clamp_min(PDF_EPS)) * keep
    total = predicted_loss.sum(dim=1, keepdim=True)
    return (total - predicted_loss) / (total + PDF_EPS) * keep


def distribution_uniformity(logits: torch.Tensor) -> torch.Tensor:
    """Mean absolute distance of the class probabilities from uniform, (n,); 0 = uniform."""
    proba = F.softmax(logits, dim=1)
    return (proba - 1.0 / proba.shape[1]).abs().mean(dim=1)


def relative_calibration(uniformity: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """``RC_m = DU_m / max_j DU_j`` over the available modalities, in [0, 1], (n, M).

    A cell whose available modalities all predict uniformly (max 0) gets 1 everywhere.
    """
    keep = available > 0
    top = uniformity.masked_fill(~keep, 0.0).max(dim=1, keepdim=True).values
    ratio = uniformity / top.clamp_min(torch.finfo(uniformity.dtype).tiny)
    return torch.where(top > 0, ratio.clamp(0.0, 1.0), torch.ones_like(ratio))


def pdf_weights(
    mono: torch.Tensor,
    modality_logits: list[torch.Tensor],
    available: torch.Tensor,
    calibrate: bool,
) -> torch.Tensor:
    """Detached PDF fusion weights ``softmax_m(RC_m (mono_m + holo_m))``, (n, M).

    Parameters
    ----------
    mono
        (n, M) mono-confidences (predicted TCP) in (0, 1).
    modality_logits
        One (n, C) tensor of classifier logits per modality (for RC).
    available
        (n, M), nonzero where the modality enters the normalisation.
    calibrate
        Apply relative calibration (evaluation mode).

    Returns
    -------
    (n, M) weights in [0, 1], summing to 1 over a cell's available modalities, 0 elsewhere.
    """
    mono = mono.detach()
    co_belief = mono + holo_confidence(mono, available)
    if calibrate:
        uniformity = torch.stack(
            [distribution_uniformity(lg.detach()) for lg in modality_logits], dim=1
        )
        co_belief = co_belief * relative_calibration(uniformity, available)
    return modality_softmax(co_belief, available)
