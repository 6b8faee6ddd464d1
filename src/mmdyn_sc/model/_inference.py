"""Running a trained network over a data loader and collecting per-cell results."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._attribution import ClassAttribution
from ._registry_keys import unpack_batch


@dataclass
class InferenceResult:
    """Per-cell outputs of a trained model, in the order of the loader's cells.

    Attributes
    ----------
    proba
        Fused class probabilities (n, C).
    modality_proba
        Per modality, the modality classifier's probabilities (n, C).
    weights
        Weight each modality's latent was scaled by (n, M): the confidence with MI, else 1;
        0 where the cell lacks the modality.
    confidence
        Per-cell modality confidence (n, M) as the model's ``confidence`` option defines
        it (the weight before masking by presence); 1 without MI.
    tcp_hat
        Predicted true class probability (n, M) for options that predict it, else ``None``.
    present
        (n, M) boolean presence mask.
    latent
        Fused latent (n, sum of hidden sizes).
    gate_sums
        Per modality, sum of gate values over the cells predicted as each class (C, d), or
        ``None`` when the model has no feature gates; only cells with the modality count.
    gate_counts
        Per modality, number of such cells per predicted class (C,).
    heatmaps
        Per modality, the patch gate of every cell (n, grid, grid) as float32 for image
        modalities with FI (cells without the image get the gate of a blank image), else
        ``None``.
    attribution
        Per-class feature attribution (:class:`~mmdyn_sc.model._attribution.ClassAttribution`)
        when asked for, else ``None``.
    image_attribution
        When asked for: per modality, the patch attribution of every cell (n, grid, grid)
        for image modalities (NaN without the image; see
        :mod:`~mmdyn_sc.model._image_attribution`), ``None`` for tabular ones. Else ``None``.
    """

    proba: np.ndarray
    modality_proba: list[np.ndarray]
    weights: np.ndarray
    confidence: np.ndarray
    tcp_hat: np.ndarray | None
    present: np.ndarray
    latent: np.ndarray
    gate_sums: list[np.ndarray | None]
    gate_counts: list[np.ndarray]
    heatmaps: list[np.ndarray | None] | None = None
    attribution: ClassAttribution | None = None
    image_attribution: list[np.ndarray | None] | None = None


def _stack(values, n_cells: int, fill: float | None) -> np.ndarray | None:
    """Per-modality (n,) tensors as an (n, M) array; ``fill`` where a modality has none."""
    if values is None or all(v is None for v in values):
        return None if fill is None else np.full((n_cells, len(values or [])), fill)
    return np.stack([np.full(n_cells, np.nan if fill is None else fill) if v is None
                     else v.float().cpu().numpy() for v in values], axis=1)


@torch.inference_mode()
def run_inference(module, loader, n_modalities: int, n_classes: int) -> InferenceResult:
    """Evaluate ``module`` (in eval mode) on every batch of ``loader``.

    Gate values are accumulated per predicted class, never stored per cell, so memory stays
    O(C x d) whatever the number of cells.
    """
    was_training = module.training
    module.eval()
    device = module.device
    proba, weights, present_all, latent, confidence, tcp_hat = [], [], [], [], [], []
    modality_proba = [[] for _ in range(n_modalities)]
    heatmaps = [[] for _ in range(n_modalities)]
    gate_sums: list[np.ndarray | None] = [None] * n_modalities
    gate_counts = [np.zeros(n_classes) for _ in range(n_modalities)]
    for batch in loader:
        xs, present, _ = unpack_batch(batch, n_modalities)
        xs = [x.to(device) for x in xs]
        present = present.to(device)
        out = module(xs, present)
        p = torch.softmax(out["fused_logits"], dim=1)
        predicted = p.argmax(dim=1)
        one_hot = torch.nn.functional.one_hot(predicted, n_classes).to(p.dtype)
        for m in range(n_modalities):
            heatmap = out["heatmaps"][m]
            if heatmap is not None:
                heatmaps[m].append(heatmap.float().cpu().numpy())
            modality_proba[m].append(torch.softmax(out["modality_logits"][m], 1).cpu().numpy())
            members = one_hot * present[:, m : m + 1].to(p.dtype)
            gate_counts[m] += members.sum(0).cpu().numpy()
            gate = out["gates"][m]
            if gate is not None:
                sums = (members.T @ gate).cpu().numpy().astype(np.float64)
                gate_sums[m] = sums if gate_sums[m] is None else gate_sums[m] + sums
        proba.append(p.cpu().numpy())
        weights.append(out["weights"].cpu().numpy())
        confidence.append(_stack(out["confidence"], p.shape[0], fill=1.0))
        tcp_hat.append(_stack(out.get("tcp_hat"), p.shape[0], fill=None))
        present_all.append(present.cpu().numpy() > 0)
        latent.append(out["latent"].cpu().numpy())
    module.train(was_training)
    return InferenceResult(
        proba=np.concatenate(proba),
        modality_proba=[np.concatenate(mp) for mp in modality_proba],
        weights=np.concatenate(weights),
        confidence=np.concatenate(confidence),
        tcp_hat=None if tcp_hat[0] is None else np.concatenate(tcp_hat),
        present=np.concatenate(present_all),
        latent=np.concatenate(latent),
        gate_sums=gate_sums,
        gate_counts=gate_counts,
        heatmaps=[np.concatenate(h) if h else None for h in heatmaps],
    )
