"""Per-cell patch attribution of image modalities (integrated gradients pooled to patches).

What is attributed: ``log softmax`` of the fused classifier at the cell's predicted class, as
for the tabular attribution (:mod:`._attribution`). Path: every image of the cell moves from
an image of the training mean colour (the image branch's channel shift, so the baseline is
the all-zero input the encoder sees after scaling: what the deletion test fills patches
with) straight to the image; the cell's other inputs stay as they are. ``n_steps`` midpoint
steps, each one forward and backward pass of a minibatch. A pixel's attribution is the
path-averaged gradient times (pixel - mean colour), summed over channels; a patch's is the
sum over the pixels of the stored image it covers (``stored_patch_size`` a side: the image
branch may read a pooled image). Positive: the patch raises the
probability of the predicted class relative to a patch of mean colour.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..module._image_encoder import as_float_images
from ._attribution import IG_STEPS, eval_batches, sample_per_class

#: Cells per minibatch of the image attribution (each runs ``n_steps`` forward and backward
#: passes of the image branch).
IMAGE_IG_BATCH = 64


def image_bases(model, device) -> list[torch.Tensor | None]:
    """Per modality: the (1, C, 1, 1) training mean colour of an image modality, else ``None``."""
    out = []
    for m, mod in enumerate(model.modalities_):
        if mod not in model.images_:
            out.append(None)
            continue
        shift = model.module.branches[m].scaler.shift.detach().float()
        out.append(shift.view(1, -1, 1, 1).to(device))
    return out


def patch_sums(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(n, H, W) -> (n, H/p, W/p): the sum over each ``patch_size`` x ``patch_size`` patch."""
    return F.avg_pool2d(pixels.unsqueeze(1), patch_size).squeeze(1) * patch_size**2


def image_integrated_gradients(module, xs, present: torch.Tensor, target: torch.Tensor,
                               bases, n_steps: int = IG_STEPS) -> list[torch.Tensor | None]:
    """Integrated gradients of ``log_softmax(fused)[target]`` per image modality, (n, H, W).

    Image modalities (``bases[m]`` not ``None``) move together from their base colour to the
    image; the other inputs stay. Summed over channels. ``module`` must be in eval mode.
    """
    images = {m: as_float_images(x) for m, x in enumerate(xs) if bases[m] is not None}
    grads = {m: torch.zeros_like(x) for m, x in images.items()}
    with torch.inference_mode(False), torch.enable_grad():
        for step in range(n_steps):
            alpha = (step + 0.5) / n_steps
            path = list(xs)
            leaves = []
            for m, x in images.items():
                point = (bases[m] + alpha * (x - bases[m])).detach().requires_grad_(True)
                path[m] = point
                leaves.append(point)
            logits = module(path, present)["fused_logits"]
            value = torch.log_softmax(logits, 1).gather(1, target[:, None]).sum()
            for m, g in zip(images, torch.autograd.grad(value, leaves), strict=True):
                grads[m] += g
    return [None if m not in images else
            (grads[m] / n_steps * (images[m] - bases[m])).sum(1).detach()
            for m in range(len(xs))]


def capped_rows(model, result, max_cells: int, seed: int = 0) -> np.ndarray:
    """Positions of at most ``max_cells`` imaged cells per predicted class (a seeded sample).

    ``result`` is the inference over the same cells (predictions and presence).
    """
    images = [m for m, mod in enumerate(model.modalities_) if mod in model.images_]
    imaged = result.present[:, images].any(axis=1)
    groups = np.where(imaged, result.proba.argmax(1), -1)
    return sample_per_class(groups, len(model.classes_), max_cells, seed)


def image_attribution(model, aligned, rows: np.ndarray | None = None, n_steps: int = IG_STEPS,
                      batch_size: int = IMAGE_IG_BATCH) -> list[np.ndarray | None]:
    """Patch attribution of ``rows`` of ``aligned`` (default: every cell).

    Each cell is attributed for its predicted class. Returns, per modality, float32
    (n_cells of ``aligned``, grid, grid) for image modalities (NaN for cells without the
    image and cells not in ``rows``) and ``None`` for tabular ones. Costs ``n_steps`` forward
    and backward passes per attributed cell.
    """
    module = model.module
    bases = image_bases(model, module.device)
    n_obs = aligned.n_obs
    rows = np.arange(n_obs) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    out: list[np.ndarray | None] = [None] * len(model.modalities_)
    start = 0
    for xs, present in eval_batches(model, aligned, rows, batch_size):
        where = rows[start:start + present.shape[0]]
        start += present.shape[0]
        with torch.no_grad():
            target = module(xs, present)["fused_logits"].argmax(1)
        values = image_integrated_gradients(module, xs, present, target, bases, n_steps)
        for m, v in enumerate(values):
            if v is None:
                continue
            sums = patch_sums(v, module.branches[m].stored_patch_size)
            sums = sums.cpu().numpy().astype(np.float32)
            sums[present[:, m].cpu().numpy() <= 0] = np.nan
            if out[m] is None:
                out[m] = np.full((n_obs, *sums.shape[1:]), np.nan, dtype=np.float32)
            out[m][where] = sums
    for m, mod in enumerate(model.modalities_):
        if mod in model.images_ and out[m] is None:  # no cell attributed: every value NaN
            grid = module.branches[m].grid_size
            out[m] = np.full((n_obs, grid, grid), np.nan, dtype=np.float32)
    return out
