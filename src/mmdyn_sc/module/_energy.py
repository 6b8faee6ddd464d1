"""Energy-score modality confidence, after QMF (Zhang et al., ICML 2023).

QMF ("Provable Dynamic Fusion for Low-Quality Multimodal Data", official code
github.com/QingyangZhang/QMF) scores each modality by the free energy of its classifier,
``E_m = -T logsumexp(logits_m / T)``: the lower the energy (the larger the classifier's total
unnormalised evidence), the more the modality is trusted. QMF multiplies each modality's
logits by ``-E_m / 10``, detached, without normalising across modalities.

Here the weight scales a modality's latent before a shared linear classifier, so it is
normalised across the modalities a cell has (and, in training with modality dropout, has not
dropped): ``w_m = softmax_m(-E_m)``, which with ``T = 1`` is ``Z_m / sum_j Z_j`` with
``Z_m = sum_c exp(logits_mc)`` the classifier's partition function. The weight is detached, as
in QMF's text-image fusion, so the fused loss cannot inflate a modality's energy.

QMF's ranking regulariser (pairs of training samples ordered by their accumulated historical
loss) is not implemented: it needs the identity of each cell across epochs and a history
buffer of the size of the training set, which a module that sees only tensors does not have.
"""

from __future__ import annotations

import torch

from ._confidence import modality_softmax

#: Temperature of the energy score.
ENERGY_TEMPERATURE = 1.0


def energy_score(logits: torch.Tensor, temperature: float = ENERGY_TEMPERATURE) -> torch.Tensor:
    """Free energy of a classifier per cell, ``E = -T logsumexp(logits / T)``, (n,)."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


def energy_weights(
    modality_logits: list[torch.Tensor], available: torch.Tensor
) -> torch.Tensor:
    """Detached energy fusion weights ``softmax_m(-E_m)`` over the available modalities.

    Parameters
    ----------
    modality_logits
        One (n, C) tensor of classifier logits per modality.
    available
        (n, M), nonzero where the modality enters the normalisation.

    Returns
    -------
    (n, M) weights in [0, 1], summing to 1 over a cell's available modalities, 0 elsewhere.
    """
    negative_energy = torch.stack([-energy_score(lg.detach()) for lg in modality_logits], dim=1)
    return modality_softmax(negative_energy, available)
