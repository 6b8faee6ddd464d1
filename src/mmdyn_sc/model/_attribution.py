"""Per-class and per-cell feature attributions of a trained network (integrated gradients).

What is attributed: ``log softmax`` of the fused classifier at a class (the cell's predicted
class unless told otherwise), which contrasts the class against the others. Path: from the
training mean of every tabular modality's input (the baseline; image modalities stay as they
are) straight to the cell's input, ``n_steps`` midpoint steps. A feature's attribution is
the path-averaged gradient times (input - training mean), in the units of the log
probability: the attributions of all tabular features of a cell sum to about
``log p_c(cell) - log p_c(baseline)`` (completeness). Positive: the feature's value raises
the class's probability relative to an average training cell.

The per-class summary (``grouped``) also credits each feature with the attribution of the
features it rises and falls with: ``A[f, c] = sum_j r[f, j] a[j, c]`` over the features j whose
Pearson correlation with f (on the cells attributed) is at least
:data:`PARTNER_MIN_CORRELATION`, the feature itself included (weight 1). A network that relies
on one of several co-expressed markers then shows all of them, and the ranking depends less
on which of them a fit happened to use; ``direct`` keeps the uncredited mean. A model with
extra fits (``tl.fit(n_fits=)``) averages their attributions with its own.
Chosen by measurement in ``benchmarks/results/explain.md`` (positive partners from r = 0.2:
fourth round; until 0.2.0 partners were ``|r| >= 0.5``, anti-correlated ones included).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ._attribution_members import member_modules
from ._registry_keys import unpack_batch

#: Cells attributed per predicted class in the per-class summary (a random sample above it).
ATTRIBUTION_CELLS = 200
#: Midpoint steps of the integrated-gradients path.
IG_STEPS = 16
#: Pearson r from which a feature shares the attribution of another (``grouped``).
PARTNER_MIN_CORRELATION = 0.2
#: Weight of the partners' attribution in the credit (1: as much as the feature's own).
PARTNER_WEIGHT = 1.0
#: Only positive correlations make partners (``r >= PARTNER_MIN_CORRELATION``); ``False``:
#: ``|r| >= PARTNER_MIN_CORRELATION`` (0.2.0's rule, with 0.5).
PARTNERS_POSITIVE_ONLY = True
#: Which features receive their partners' attribution: ``None``, every feature (the
#: default); a share ``T``, only the features whose own attribution for the class is positive
#: and at least ``T`` x the class's largest (a benchmark knob, ``benchmarks/explain.py``'s
#: ``package_used<T>``: credit for what the network uses, not for what merely moves with it).
RECEIVER_MIN_SHARE = None
#: Above this many features, partners are sought among this many features with the
#: largest direct attribution only (the exact sum costs features^2 x cells).
MAX_PARTNERS = 5000
#: Cells per integrated-gradients batch (each runs ``n_steps`` forward and backward passes).
IG_BATCH = 64


@dataclass
class ClassAttribution:
    """Per-class attribution of each tabular modality.

    Attributes
    ----------
    grouped
        Per modality (d, C): the mean attribution over the class's attributed cells,
        credited to correlated partners (the package's default explanation).
    direct
        Per modality (d, C): the mean attribution itself.
    n_cells
        Per modality (C,): cells averaged per class (0: NaN column).
    """

    grouped: dict[str, np.ndarray] = field(default_factory=dict)
    direct: dict[str, np.ndarray] = field(default_factory=dict)
    n_cells: dict[str, np.ndarray] = field(default_factory=dict)


def check_attribution_options(attribution, attribution_cells) -> None:
    """Raise a named error for a bad ``attribution`` switch or ``attribution_cells``."""
    if not isinstance(attribution, bool | np.bool_):
        raise TypeError(f"attribution must be True or False, got {attribution!r}.")
    if not isinstance(attribution_cells, int | np.integer) or \
            isinstance(attribution_cells, bool) or attribution_cells < 1:
        raise ValueError(f"attribution_cells must be a positive integer, got "
                         f"{attribution_cells!r}.")


def sample_per_class(groups: np.ndarray, n_classes: int, max_cells: int,
                     seed: int = 0) -> np.ndarray:
    """Sorted positions of at most ``max_cells`` cells per group code (codes < 0 skipped)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(n_classes):
        members = np.flatnonzero(groups == c)
        if len(members) > max_cells:
            members = rng.choice(members, max_cells, replace=False)
        keep.append(members)
    return np.sort(np.concatenate(keep)) if keep else np.array([], dtype=np.int64)


def baselines(model, device) -> list[torch.Tensor | None]:
    """Training mean of each tabular modality's input (``None`` for image modalities).

    ``model.input_means_`` (recorded by training since 0.2.0); a model saved before has the
    mean only as its scaler's shift with ``feature_scaling="standard"``, else 0 is used.
    """
    means = getattr(model, "input_means_", None) or {}
    out = []
    for m, mod in enumerate(model.modalities_):
        if mod in model.images_:
            out.append(None)
            continue
        if mod in means:
            value = torch.as_tensor(np.asarray(means[mod]), dtype=torch.float32)
        elif model.feature_scaling == "standard":
            value = model.module.branches[m].scaler.shift.detach().float().cpu()
        else:
            value = torch.zeros(len(model.features_[mod]))
        out.append(value.to(device))
    return out


def integrated_gradients(module, xs: Sequence[torch.Tensor], present: torch.Tensor,
                         target: torch.Tensor, base: Sequence[torch.Tensor | None],
                         n_steps: int = IG_STEPS) -> list[torch.Tensor | None]:
    """Integrated gradients of ``log_softmax(fused)[target]`` per tabular modality, (n, d).

    All tabular modalities move together from ``base`` to the input; image modalities (``base``
    ``None``) stay as they are and get ``None``. ``module`` must be in eval mode.
    """
    n = target.shape[0]
    alphas = (torch.arange(n_steps, dtype=torch.float32, device=target.device) + 0.5) / n_steps
    path, leaves = [], []
    for x, b in zip(xs, base, strict=True):
        if b is None:
            path.append(x.repeat(n_steps, *([1] * (x.dim() - 1))))
            continue
        x = x.float()
        steps = (b[None, None, :] + alphas[:, None, None] * (x - b)[None]).reshape(-1, x.shape[1])
        steps.requires_grad_(True)
        path.append(steps)
        leaves.append(steps)
    with torch.inference_mode(False), torch.enable_grad():
        logits = module(path, present.repeat(n_steps, 1))["fused_logits"]
        value = torch.log_softmax(logits, 1).gather(1, target.repeat(n_steps)[:, None]).sum()
        grads = iter(torch.autograd.grad(value, leaves))
    out = []
    for x, b in zip(xs, base, strict=True):
        if b is None:
            out.append(None)
            continue
        mean_grad = next(grads).reshape(n_steps, n, -1).mean(0)
        out.append((mean_grad * (x.float() - b)).detach())
    return out


def eval_batches(model, aligned, rows: np.ndarray | None, batch_size: int,
                 module=None) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """``(inputs per modality, presence)`` of ``rows`` of ``aligned`` (all: ``None``), in order.

    Minibatches of ``batch_size`` on the device of ``module`` (default: ``model.module``),
    which is in eval mode until the iteration ends (its mode is then restored).
    """
    module = model.module if module is None else module
    was_training = module.training
    module.eval()
    device = module.device
    loader = model._make_data_loader(adata=aligned,
                                     indices=None if rows is None else np.asarray(rows),
                                     batch_size=batch_size, shuffle=False,
                                     **model._loader_kwargs(aligned))
    try:
        for batch in loader:
            xs, present, _ = unpack_batch(batch, len(model.modalities_))
            yield [x.to(device) for x in xs], present.to(device)
    finally:
        module.train(was_training)


def attribution_blocks(model, aligned, rows: np.ndarray, target: np.ndarray | None,
                       n_steps: int = IG_STEPS, batch_size: int = IG_BATCH, module=None
                       ) -> Iterator[tuple[slice, list[np.ndarray | None], np.ndarray, list,
                                           np.ndarray]]:
    """Per-cell attributions of ``rows`` of ``aligned`` for the classes ``target``, by block.

    ``target=None``: each cell's predicted class. Yields ``(positions in rows, attributions
    per modality (b, d) or None, presence (b, M), inputs per modality (b, d) or None, fused
    class probabilities (b, C))``. Peak memory: ``batch_size x n_steps`` rows of every
    modality's input and its gradient. ``module``: the network attributed (default
    ``model.module``; an extra fit's, see :mod:`._attribution_members`).
    """
    module = model.module if module is None else module
    device = module.device
    base = baselines(model, device)
    start = 0
    for xs, present in eval_batches(model, aligned, rows, batch_size, module):
        n = present.shape[0]
        with torch.no_grad():
            proba = torch.softmax(module(xs, present)["fused_logits"], 1)
        if target is None:
            cls = proba.argmax(1)
        else:
            cls = torch.as_tensor(target[start:start + n], dtype=torch.long, device=device)
        values = integrated_gradients(module, xs, present, cls, base, n_steps)
        yield (slice(start, start + n),
               [None if v is None else v.cpu().numpy() for v in values],
               present.cpu().numpy() > 0,
               [None if b is None else x.float().cpu().numpy()
                for x, b in zip(xs, base, strict=True)],
               proba.cpu().numpy())
        start += n


def partner_credit(inputs: np.ndarray, values: np.ndarray,
                   min_correlation: float = PARTNER_MIN_CORRELATION,
                   max_partners: int = MAX_PARTNERS, block: int = 1024,
                   positive_only: bool = PARTNERS_POSITIVE_ONLY,
                   weight: float = PARTNER_WEIGHT,
                   receiver_min_share: float | None = RECEIVER_MIN_SHARE) -> np.ndarray:
    """Each feature's value plus ``weight`` x the values of its correlated partners, x r.

    ``values + weight * R' @ values`` with R' the Pearson correlation of ``inputs``' columns,
    r below ``min_correlation`` set to 0 (``positive_only=False``: |r| below it) and the
    diagonal 0 (each feature counts itself once, with weight 1; constant features: only
    themselves).
    ``inputs`` (n, d), ``values`` (d, C) with NaN columns kept NaN. Computed in blocks of
    rows of R (memory ``block x d``); with more than ``max_partners`` features only the
    ``max_partners`` with the largest |value| can be partners. ``receiver_min_share`` T:
    only features whose own value in a column is positive and at least T x the column's
    largest receive the credit; the others keep their own value. Fewer than 2 cells:
    ``values`` as they are.
    """
    if len(inputs) < 2:  # no correlation to speak of (e.g. a query without the modality)
        return values.copy()
    d = inputs.shape[1]
    empty = np.isnan(values).all(0)
    filled = np.nan_to_num(values)
    x = inputs.astype(np.float64)
    sd = x.std(0)
    z = np.where(sd > 0, (x - x.mean(0)) / np.where(sd > 0, sd, 1.0), 0.0).astype(np.float32)
    partners = np.arange(d)
    if d > max_partners:
        partners = np.sort(np.argsort(-np.abs(filled).max(1))[:max_partners])
    zp, vp = z[:, partners], filled[partners]
    out = np.empty_like(filled)
    n = max(len(x), 1)
    for start in range(0, d, block):
        stop = min(d, start + block)
        r = z[:, start:stop].T @ zp / n
        r[(r if positive_only else np.abs(r)) < min_correlation] = 0.0
        # Each feature counts itself once, with weight 1 (also when constant).
        mine = np.flatnonzero((partners >= start) & (partners < stop))
        r[partners[mine] - start, mine] = 0.0
        out[start:stop] = weight * (r.astype(np.float64) @ vp) + filled[start:stop]
    if receiver_min_share is not None:
        floor = np.maximum(receiver_min_share * filled.max(0), 0.0)
        receives = (filled > 0) & (filled >= floor[None, :])
        out = np.where(receives, out, filled)
    out[:, empty] = np.nan
    return out


def class_attribution(model, aligned, rows: np.ndarray, predicted: np.ndarray,
                      max_cells: int = ATTRIBUTION_CELLS, n_steps: int = IG_STEPS,
                      seed: int = 0, min_correlation: float = PARTNER_MIN_CORRELATION,
                      positive_only: bool = PARTNERS_POSITIVE_ONLY,
                      partner_weight: float = PARTNER_WEIGHT,
                      receiver_min_share: float | None = RECEIVER_MIN_SHARE,
                      ) -> ClassAttribution | None:
    """Per-class attribution over at most ``max_cells`` of ``rows`` per predicted class.

    ``rows`` are positions in ``aligned``; ``predicted`` the predicted class of every cell of
    ``aligned``. Each cell is attributed for its predicted class; a class's column is the mean
    over its cells that have the modality (NaN without any). A model trained with extra fits
    (``tl.fit(n_fits=)``, :mod:`._attribution_members`) averages every fit's attribution of
    the same cells for the same classes before the partner credit. ``None`` for a model
    without tabular modalities (an image's explanation is its heatmap).
    """
    check_attribution_options(True, max_cells)
    n_classes = len(model.classes_)
    tabular = [m for m, mod in enumerate(model.modalities_) if mod not in model.images_]
    if not tabular:
        return None
    rows = np.asarray(rows, dtype=np.int64)
    chosen = rows[sample_per_class(predicted[rows], n_classes, max_cells, seed)]
    target = predicted[chosen]
    sums = {m: np.zeros((len(model.features_[model.modalities_[m]]), n_classes))
            for m in tabular}
    counts = {m: np.zeros(n_classes) for m in tabular}
    inputs = {m: [] for m in tabular}
    networks = [model.module, *member_modules(model)]
    for k, network in enumerate(networks):
        for where, values, present, xs, _ in attribution_blocks(
                model, aligned, chosen, target, n_steps, module=network):
            one_hot = np.eye(n_classes)[target[where]]
            for m in tabular:
                members = one_hot * present[:, m:m + 1]
                sums[m] += values[m].T.astype(np.float64) @ members
                if k == 0:  # the same cells for every network
                    counts[m] += members.sum(0)
                    inputs[m].append(xs[m][present[:, m]])
    result = ClassAttribution()
    for m in tabular:
        mod = model.modalities_[m]
        with np.errstate(invalid="ignore", divide="ignore"):
            direct = sums[m] / (counts[m][None, :] * len(networks))
        direct[:, counts[m] == 0] = np.nan
        x = np.concatenate(inputs[m]) if inputs[m] else np.zeros((0, direct.shape[0]))
        result.direct[mod] = direct
        result.grouped[mod] = partner_credit(x, direct, min_correlation,
                                             positive_only=positive_only,
                                             weight=partner_weight,
                                             receiver_min_share=receiver_min_share)
        result.n_cells[mod] = counts[m].astype(np.int64)
    return result


def describe(max_cells: int, cells: str, n_steps: int = IG_STEPS, n_fits: int = 1,
             extra_fit_epochs: int | str | None = None) -> dict:
    """What ``uns[key]["attribution"]`` records about the computation.

    ``n_fits``: the fits whose attributions were averaged (the model's own and its extra
    fits, ``tl.fit(n_fits=)``); ``extra_fit_epochs`` (recorded with ``n_fits > 1``): how long
    each extra fit trained.
    """
    extra = {} if n_fits == 1 else {"extra_fit_epochs": extra_fit_epochs}
    return {
        "method": "integrated_gradients",
        "target": "log_softmax of the fused classifier at the predicted class",
        "baseline": "training mean of each tabular modality's input",
        "n_steps": int(n_steps),
        "max_cells_per_class": int(max_cells),
        "cells": cells,
        "grouped": f"credited to features with Pearson {'r' if PARTNERS_POSITIVE_ONLY else '|r|'}"
                   f" >= {PARTNER_MIN_CORRELATION} on the attributed cells",
        "partner_min_correlation": PARTNER_MIN_CORRELATION,
        "partners": ("positive correlations only" if PARTNERS_POSITIVE_ONLY
                     else "positive and negative correlations"),
        "n_fits": int(n_fits),
        **extra,
    }
