"""Per-cell certainty: the probability that a call is right, lowered for unfamiliar cells.

``certainty = calibrated(max_c p_c) x novelty``:

- ``calibrated`` maps the highest fused class probability to the probability that the call
  is right, by a logistic regression on its logit fitted on the validation cells and shrunk
  toward the identity (Platt scaling with a prior, :func:`fit_platt`; increasing, so it
  keeps the ranking of the highest probability).
- ``novelty = exp(-(1/2) max(0, z - 1))``, with ``z`` the largest over the cell's modalities of
  that modality's standardised log distance: the distance of the modality's latent (before
  the fusion weighting) to its nearest class prototype (mean latent of the class's training
  cells; per-dimension pooled within-class variance), centred on the validation cells'
  median and scaled by their median-to-90th-percentile spread. Cells as close to a known
  class as validation cells, in every modality, keep their certainty; a cell far from every
  class in any one modality loses it.

Per modality, ``modality certainty`` is the modality classifier's own highest probability,
Platt-scaled the same way on the validation cells that have the modality.

Without validation cells (``train_size=1``, recipe ``"paper"``) the calibration is the
identity (the uncalibrated probability) and the state says so; the novelty reference is then
the training cells.

Models saved by mmdyn_sc 0.2.0 keep the formula they were saved with: their state has no
``"novelty"`` entry, and their certainty is ``calibrated x agreement ** (1/4) x
exp(-max(0, z - 1))`` with one ``z`` over all modalities together and ``agreement``, for cells
with two or more modalities, the product over them of ``p_m(prediction) / max_c p_m(c)``. That
agreement factor ranked right and wrong calls of a query from another donor much worse than
the highest probability (BMMC AUROC 0.74 against 0.86), because a weak modality disagrees with
right calls there, and the per-modality distances flag unseen cell types better than the
pooled one; both choices were made after looking at test cells, which
``benchmarks/results/confidence.md`` says, with a confirmation on seeds never looked at.
"""

from __future__ import annotations

import numpy as np

from .._calibration import calibration_report
from .._utils import logger

#: Validation cells needed to fit a calibration (fewer: the identity).
MIN_VALIDATION_CELLS = 10
#: Validation cells from which the stored diagnostics are cross-fitted (2 folds).
MIN_CROSS_FIT_CELLS = 40
#: Power of the modality agreement in the certainty of models saved by 0.2.0 (0 since).
LEGACY_AGREEMENT_POWER = 0.25
#: How fast the certainty falls per unit of standardised log distance beyond 1.
NOVELTY_RATE = 0.5
#: Training cells per class used for the latent prototypes.
PROTOTYPE_CELLS = 1000
#: The identity calibration (slope, intercept on the logit).
IDENTITY = (1.0, 0.0)
#: Strength of the Platt map's prior toward the identity, in cells' worth of evidence
#: (``prior25`` of ``benchmarks/results/calibration_validation.md``).
PLATT_PRIOR = 25.0


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _penalised_fit(x: np.ndarray, y: np.ndarray, prior: float,
                   slope_fixed: bool = False) -> tuple[float, float]:
    """Maximum a posteriori ``(a, b)`` of ``P(y) = sigmoid(a x + b)`` (damped Newton).

    Gaussian prior centred on the identity ``(1, 0)``: penalty ``prior / 2 ((a - 1)^2 + b^2)``.
    With ``slope_fixed`` only ``b`` is fitted (``a = 1``).
    """
    free = [1] if slope_fixed else [0, 1]
    design = np.stack([x, np.ones_like(x)], 1)[:, free]
    centre = np.array(IDENTITY)[free]
    theta = centre.copy()

    def slope_intercept(t) -> np.ndarray:
        params = np.array(IDENTITY)
        params[free] = t
        return params

    def objective(t):
        a, b = slope_intercept(t)
        z = a * x + b
        return float(np.sum(np.logaddexp(0, z) - y * z)
                     + prior / 2 * np.sum((t - centre) ** 2))

    value = objective(theta)
    for _ in range(100):
        a, b = slope_intercept(theta)
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        gradient = design.T @ (p - y) + prior * (theta - centre)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + prior * np.eye(len(free))
        step = np.linalg.solve(hessian, gradient)
        rate = 1.0
        while rate > 1e-8 and objective(theta - rate * step) > value:
            rate /= 2
        theta = theta - rate * step
        value = objective(theta)
        if np.abs(rate * step).max() < 1e-10:
            break
    a, b = slope_intercept(theta)
    return float(a), float(b)


def fit_platt(top: np.ndarray, correct: np.ndarray,
              prior: float | None = None) -> tuple[tuple[float, float], str]:
    """(slope, intercept) of ``P(right) = sigmoid(a logit(top) + b)`` and what it was fitted on.

    Platt's logistic regression on the logit of the highest probability, shrunk toward the
    identity map: the maximum a posteriori ``(a, b)`` under a Gaussian prior centred on
    ``(1, 0)``, penalty ``prior / 2 ((a - 1)^2 + b^2)`` (:data:`PLATT_PRIOR`). A few dozen
    validation cells with a handful of wrong calls move the map a little; hundreds decide
    it. Chosen by leave-one-out log loss on validation cells only
    (``benchmarks/results/calibration_validation.md``): on 22-25 cells per fit (BMMC) the
    unshrunk map was worse than none, on about 450 (pbmc10k) far better than none, and the
    shrunk map as good as the better of the two on both. When every validation call is
    right (or every one wrong) the prior keeps the map finite. A fitted slope that is not
    positive: slope 1, the intercept alone fitted. Fewer than :data:`MIN_VALIDATION_CELLS`
    cells: the identity.
    """
    prior = PLATT_PRIOR if prior is None else float(prior)
    if prior <= 0:
        raise ValueError(f"the calibration prior must be positive, got {prior}")
    correct = np.asarray(correct, bool)
    if len(top) < MIN_VALIDATION_CELLS:
        return IDENTITY, f"none: fewer than {MIN_VALIDATION_CELLS} validation cells"
    x, y = logit(top), correct.astype(np.float64)
    slope, intercept = _penalised_fit(x, y, prior)
    if slope <= 0:
        return _penalised_fit(x, y, prior, slope_fixed=True), \
            "validation cells (shift only: the fitted slope was not positive)"
    return (slope, intercept), "validation cells"


def calibrate(top: np.ndarray, platt) -> np.ndarray:
    slope, intercept = platt
    return 1.0 / (1.0 + np.exp(-(slope * logit(top) + intercept)))


def agreement(modality_proba: list[np.ndarray], present: np.ndarray,
              predicted: np.ndarray) -> np.ndarray:
    """Product over a cell's modalities of ``p_m(predicted) / max p_m`` (1 with one modality).

    A factor of the certainty of models saved by 0.2.0 only.
    """
    n = len(predicted)
    rows = np.arange(n)
    factor = np.ones(n)
    several = present.sum(1) >= 2
    for m, p in enumerate(modality_proba):
        ratio = p[rows, predicted] / np.clip(p.max(1), 1e-12, None)
        factor *= np.where(several & present[:, m], ratio, 1.0)
    return factor


# ------------------------------------------------------------------------------ novelty
def unweighted(latent: np.ndarray, weights: np.ndarray, blocks: list) -> np.ndarray:
    """Each modality's latent block divided by the fusion weight it was scaled by."""
    out = np.zeros_like(latent, dtype=np.float64)
    for m, (start, stop) in enumerate(blocks):
        w = weights[:, m:m + 1]
        out[:, start:stop] = np.where(w > 0, latent[:, start:stop] / np.where(w > 0, w, 1), 0)
    return out


def nearest_prototype_distance(latent: np.ndarray, present: np.ndarray, state: dict,
                               block: int = 4096) -> np.ndarray:
    """Mean squared standardised distance to the nearest prototype, (n,).

    Over the latent dimensions of the modalities each cell has.
    """
    prototypes = np.asarray(state["prototypes"], dtype=np.float64)
    scale = 1.0 / np.asarray(state["variance"], dtype=np.float64)
    blocks = state["blocks"]
    dims = np.zeros((len(blocks), prototypes.shape[1]))
    for m, (start, stop) in enumerate(blocks):
        dims[m, start:stop] = 1.0
    out = np.empty(len(latent))
    for start in range(0, len(latent), block):
        x = np.asarray(latent[start:start + block], dtype=np.float64)
        mask = present[start:start + block].astype(float) @ dims  # (b, D) 1 on own dims
        sq = (x[:, None, :] - prototypes[None]) ** 2 * scale * mask[:, None, :]
        out[start:start + block] = sq.sum(-1).min(1) / np.maximum(mask.sum(1), 1.0)
    return out


def modality_distances(latent: np.ndarray, present: np.ndarray, state: dict,
                       block: int = 4096) -> np.ndarray:
    """Per modality, the mean squared standardised distance to the nearest prototype, (n, M).

    Over that modality's latent dimensions and the prototypes of classes with training cells
    of the modality; NaN where the cell lacks the modality.
    """
    prototypes = np.asarray(state["prototypes"], dtype=np.float64)
    scale = 1.0 / np.asarray(state["variance"], dtype=np.float64)
    has = np.asarray(state["prototype_present"], dtype=bool)  # (prototypes, M)
    out = np.full(present.shape, np.nan)
    for m, (a, b) in enumerate(state["blocks"]):
        own = prototypes[has[:, m], a:b]
        if not len(own):
            continue
        for start in range(0, len(latent), block):
            x = np.asarray(latent[start:start + block, a:b], dtype=np.float64)
            d = (((x[:, None, :] - own[None]) ** 2) * scale[a:b]).mean(-1).min(1)
            out[start:start + block, m] = np.where(present[start:start + block, m], d, np.nan)
    return out


def _log_distance_reference(log_distance: np.ndarray) -> tuple[float, float]:
    """Median and median-to-90th-percentile spread (at least 1e-3) of finite log distances."""
    values = log_distance[np.isfinite(log_distance)]
    if not len(values):
        return 0.0, 1.0
    median = float(np.median(values))
    spread = float(np.quantile(values, 0.9) - median) if len(values) > 1 else 1.0
    return median, max(spread, 1e-3)


def fit_novelty(latent: np.ndarray, weights: np.ndarray, present: np.ndarray,
                labels: np.ndarray, n_classes: int, blocks: list,
                reference: np.ndarray) -> dict:
    """The novelty state: class prototypes, variance and the reference distances.

    Prototypes and pooled per-dimension variance come from the training cells' latents, the
    log-distance median and spread from the ``reference`` cells (boolean over rows).
    """
    x = unweighted(latent, weights, blocks)
    seen = [c for c in range(n_classes) if (labels[~reference] == c).any()]
    prototypes = np.zeros((len(seen), x.shape[1]))
    residual_sq, counts = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    train = ~reference
    for i, c in enumerate(seen):
        members = train & (labels == c)
        for m, (start, stop) in enumerate(blocks):
            rows = members & present[:, m]
            if rows.any():
                block = x[rows, start:stop]
                prototypes[i, start:stop] = block.mean(0)
                residual_sq[start:stop] += ((block - block.mean(0)) ** 2).sum(0)
                counts[start:stop] += rows.sum()
    variance = residual_sq / np.maximum(counts, 1.0)
    variance = variance + 1e-3 * max(float(variance.mean()), 1e-12)
    prototype_present = np.array([[(train & (labels == c) & present[:, m]).any()
                                   for m in range(len(blocks))] for c in seen], dtype=bool)
    state = {"prototypes": prototypes.astype(np.float32), "variance": variance.astype(np.float32),
             "prototype_present": prototype_present.reshape(len(seen), len(blocks)).tolist(),
             "blocks": [[int(a), int(b)] for a, b in blocks]}
    rows = reference if reference.any() else train
    log_distance = np.log(np.maximum(
        modality_distances(x[rows], present[rows], state), 1e-12))
    reference_values = [_log_distance_reference(log_distance[:, m])
                        for m in range(len(blocks))]
    # the pooled reference of 0.2.0's novelty, which the pseudo-label score still uses
    pooled = np.log(np.maximum(nearest_prototype_distance(x[rows], present[rows], state), 1e-12))
    state["log_distance_median"], state["log_distance_spread"] = \
        _log_distance_reference(pooled)
    state["novelty"] = {
        "rule": "largest over modalities", "rate": NOVELTY_RATE,
        "log_distance_median": [median for median, _ in reference_values],
        "log_distance_spread": [spread for _, spread in reference_values],
        "reference": "validation cells" if reference.any() else "training cells"}
    state["agreement_power"] = 0.0
    state["novelty_reference"] = state["novelty"]["reference"]
    return state


def novelty(state: dict, latent: np.ndarray, weights: np.ndarray,
            present: np.ndarray) -> np.ndarray:
    """The novelty factor (n,) in (0, 1]: 1 for cells as familiar as the validation cells."""
    if "prototypes" not in state:
        return np.ones(len(latent))
    x = unweighted(latent, weights, state["blocks"])
    rule = state.get("novelty")
    if rule is None:  # saved by 0.2.0: one distance over all modalities, rate 1
        distance = nearest_prototype_distance(x, present, state)
        z = (np.log(np.maximum(distance, 1e-12)) - state["log_distance_median"]) \
            / state["log_distance_spread"]
        return np.exp(-np.maximum(0.0, z - 1.0))
    z = (np.log(np.maximum(modality_distances(x, present, state), 1e-12))
         - np.asarray(rule["log_distance_median"])) / np.asarray(rule["log_distance_spread"])
    z = np.where(np.isfinite(z), z, -np.inf).max(1)  # NaN: the cell lacks the modality
    return np.exp(-rule["rate"] * np.maximum(0.0, z - 1.0))


# ------------------------------------------------------------------------------ certainty
def certainty(state: dict | None, result) -> np.ndarray:
    """Per-cell certainty (n,) in [0, 1] of an inference ``result``.

    ``state=None`` (a model saved before 0.2.0): the highest class probability.
    """
    proba = np.asarray(result.proba, dtype=np.float64)
    if state is None:
        return proba.max(1)
    value = calibrate(proba.max(1), state["platt"])
    power = state.get("agreement_power", LEGACY_AGREEMENT_POWER)
    if power:
        value = value * agreement(result.modality_proba, result.present,
                                  proba.argmax(1)) ** power
    return value * novelty(state, result.latent, result.weights, result.present)


def pseudo_label_score(state: dict | None, result) -> np.ndarray:
    """The score by which the transductive fit ranks a class's cells for pseudo-labels.

    The certainty formula of 0.2.0: Platt-calibrated highest probability x modality
    agreement ** (1/4) x pooled novelty. Pseudo-labels are best taken from cells on which
    the modalities' own classifiers agree (as in co-training), even though that agreement
    costs the certainty its ranking on a shifted donor: ranked by the certainty itself the
    transductive option lost its pbmc10k gain (macro F1 0.799 against 0.810; the notes of
    ``benchmarks/results/peers.md``).
    """
    if state is None:
        return np.asarray(result.proba, dtype=np.float64).max(1)
    legacy = {k: v for k, v in state.items() if k not in ("novelty", "agreement_power")}
    return certainty(legacy, result)


def modality_certainty(state: dict | None, modalities: list[str],
                       modality_proba: list[np.ndarray], present: np.ndarray) -> np.ndarray:
    """Per cell and modality (n, M): the modality classifier's calibrated top probability.

    NaN where the cell lacks the modality.
    """
    platts = (state or {}).get("modality_platt", {})
    out = np.full(present.shape, np.nan)
    for m, mod in enumerate(modalities):
        top = calibrate(modality_proba[m].max(1), platts.get(mod, IDENTITY))
        out[:, m] = np.where(present[:, m], top, np.nan)
    return out


def _fit_calibrations(result, labels, modalities) -> dict:
    platt, where = fit_platt(result.proba.max(1), result.proba.argmax(1) == labels)
    state = {"platt": list(platt), "calibrated_on": where, "platt_prior": PLATT_PRIOR,
             "modality_platt": {}}
    for m, mod in enumerate(modalities):
        rows = np.flatnonzero(result.present[:, m])
        own = result.modality_proba[m][rows]
        state["modality_platt"][mod] = list(fit_platt(own.max(1),
                                                      own.argmax(1) == labels[rows])[0])
    return state


def _diagnostics(result, labels, modalities, novelty_state, seed: int = 0) -> dict:
    """Calibration of the certainty on the validation cells.

    Cross-fitted when there are enough of them (calibrations fitted on one half, measured on
    the other).
    """
    from ._results import subset

    n = len(labels)
    correct = result.proba.argmax(1) == labels
    if n < MIN_CROSS_FIT_CELLS:
        state = {**_fit_calibrations(result, labels, modalities), **novelty_state}
        return {**calibration_report(certainty(state, result), correct),
                "cells": "validation, in-sample"}
    folds = np.random.default_rng(seed).permutation(n) % 2
    values = np.empty(n)
    for fold in (0, 1):
        fit_rows, out_rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        state = {**_fit_calibrations(subset(result, fit_rows), labels[fit_rows], modalities),
                 **novelty_state}
        values[out_rows] = certainty(state, subset(result, out_rows))
    return {**calibration_report(values, correct),
            "cells": "validation, cross-fitted (2 folds; the novelty reference is not)"}


def fit_certainty(result, labels: np.ndarray, modalities: list[str],
                  novelty_state: dict | None = None) -> dict:
    """The certainty state of a model.

    From the inference ``result`` on the validation cells and their ``labels`` (class codes),
    with the novelty state of :func:`fit_novelty`: calibrations, what they were fitted on,
    diagnostics.
    """
    state = _fit_calibrations(result, labels, modalities) if len(labels) else {
        "platt": list(IDENTITY), "modality_platt": {m: list(IDENTITY) for m in modalities},
        "calibrated_on": "none: no validation cells"}
    state.update(novelty_state or {})
    state["n_cells"] = int(len(labels))
    if len(labels) >= MIN_VALIDATION_CELLS:
        state["diagnostics"] = _diagnostics(result, labels, modalities, novelty_state or {})
    return state


def model_state(model) -> dict | None:
    """The model's certainty state; ``None`` (with a logged note) for models saved before."""
    state = getattr(model, "certainty_", None)
    if state is None:
        logger.info("the model has no fitted certainty (saved before mmdyn_sc 0.2.0): the "
                    "certainty is the highest class probability, uncalibrated")
    return state
