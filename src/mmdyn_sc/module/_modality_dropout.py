"""Modality dropout: hide some of a cell's modalities from the fusion during training."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_modality_dropout(rate: float) -> float:
    """Return ``rate`` if it is in [0, 1), else raise ValueError."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"modality_dropout must be in [0, 1), got {rate!r}.")
    return float(rate)


def sample_fusion_mask(present: torch.Tensor, rate: float) -> torch.Tensor:
    """Drop each present modality of each cell with probability ``rate``, keeping at least one.

    A cell whose present modalities would all be dropped keeps one of them, chosen uniformly
    at random. Draws from torch's global random number generator (two uniform draws of
    ``present``'s shape), whatever ``rate`` is; call it only when ``rate > 0``.

    Parameters
    ----------
    present
        (n, M), nonzero where the cell has the modality.
    rate
        Probability of dropping each present modality.

    Returns
    -------
    (n, M) mask in ``present``'s dtype: 1 where the modality is present and kept for the
    fusion, 0 where it is absent or dropped.
    """
    has = present > 0
    kept = has & (torch.rand(present.shape, device=present.device) >= rate)
    lost_all = has.any(dim=1) & ~kept.any(dim=1)
    tie_break = torch.rand(present.shape, device=present.device).masked_fill(~has, -1.0)
    rescued = F.one_hot(tie_break.argmax(dim=1), present.shape[1]).bool()
    kept = kept | (rescued & lost_all.unsqueeze(1))
    return kept.to(present.dtype)
