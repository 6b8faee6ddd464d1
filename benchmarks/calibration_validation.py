"""Which calibration map generalises on validation cells? (issue 19; exploratory, 2026-12-07)

For each fit (BMMC: training donor s1d1 or s1d2, seeds 0-4; pbmc10k ``cell_type``: the
training part of ``confidence.py``'s split, seeds 0-2), the fit's own **validation cells**
only: the fused highest probability and each modality classifier's, and whether that call
is right. Each map is scored by leave-one-out log loss (fitted on the other validation
cells of the same fit, evaluated on the one left out), pooled over fits:

- ``identity``: the highest probability as it is;
- ``platt``: the package's map until 2026-12-07 (two parameters, Platt's smoothed targets,
  no prior; kept here as :func:`unshrunk_platt`);
- ``temperature``: slope only;
- ``prior<L>``: Platt with a Gaussian prior toward the identity, penalty
  ``L / 2 ((a - 1)^2 + b^2)``.

No query cell and no test donor enters. Results (``results/calibration_validation.md``).
Usage: ``python benchmarks/calibration_validation.py {bmmc,pbmc10k}``.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

KINDS = ("identity", "platt", "temperature", "prior1", "prior5", "prior25")


def nll(params, x, y, lam: float = 0.0, slope_only: bool = False) -> float:
    """Negative log likelihood of ``sigmoid(a x + b)`` plus the prior's penalty."""
    a, b = (params[0], 0.0) if slope_only else params
    z = a * x + b
    loglik = y * -np.logaddexp(0, -z) + (1 - y) * -np.logaddexp(0, z)
    return -loglik.sum() + lam / 2 * ((a - 1) ** 2 + b ** 2)


def unshrunk_platt(x: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """mmdyn_sc 0.2.0's ``fit_platt`` on the logit ``x``: Platt's smoothed targets, no prior.

    Every call right (or wrong) or a slope that is not positive: the logit only shifted so
    that the mean is the smoothed target.
    """
    from scipy.optimize import brentq
    from sklearn.linear_model import LogisticRegression

    n_right, n_wrong = int(correct.sum()), int((~correct).sum())
    t_right, t_wrong = (n_right + 1) / (n_right + 2), 1 / (n_wrong + 2)
    target = np.where(correct, t_right, t_wrong)

    def shift() -> tuple[float, float]:
        mean = float(target.mean())
        return 1.0, brentq(lambda b: np.mean(1 / (1 + np.exp(-(x + b)))) - mean, -30, 30)

    if n_wrong == 0 or n_right == 0:
        return shift()
    fit = LogisticRegression(C=1e4).fit(
        np.concatenate([x, x])[:, None], np.r_[np.ones(len(x)), np.zeros(len(x))],
        sample_weight=np.r_[target, 1 - target])
    slope = float(fit.coef_[0, 0])
    return (slope, float(fit.intercept_[0])) if slope > 0 else shift()


def fit_map(kind: str, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) on the logit ``x`` of the highest probability."""
    from scipy.optimize import minimize

    if kind == "identity":
        return 1.0, 0.0
    if kind == "platt":
        return unshrunk_platt(x, y.astype(bool))
    if kind == "temperature":
        return float(minimize(nll, [1.0], args=(x, y, 0.0, True)).x[0]), 0.0
    lam = float(kind.removeprefix("prior"))
    return tuple(map(float, minimize(nll, [1.0, 0.0], args=(x, y, lam)).x))


def leave_one_out(top: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """Summed leave-one-out log loss of each map over one fit's validation cells."""
    from mmdyn_sc.model._certainty import logit

    x, y = logit(top), correct.astype(float)
    out = dict.fromkeys(KINDS, 0.0)
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        for kind in KINDS:
            a, b = fit_map(kind, x[keep], y[keep])
            p = np.clip(1 / (1 + np.exp(-(a * x[i] + b))), 1e-6, 1 - 1e-6)
            out[kind] -= y[i] * np.log(p) + (1 - y[i]) * np.log(1 - p)
    return out


def validation_calls(train, key: str, seed: int) -> dict[str, tuple]:
    """Per score (fused, each modality): highest probability and rightness, validation cells."""
    import mmdyn_sc as ms

    model = ms.tl.fit(train, key, seed=seed, enable_progress_bar=False, attribution=False)
    val = train[(train.obs["mmdyn_split"] == "validation").to_numpy()].copy()
    result = model.infer(val)
    names = [str(c) for c in model.classes_]
    codes = np.array([names.index(c) for c in val.obs[key].astype(str)])
    calls = {"fused": (result.proba.max(1), result.proba.argmax(1) == codes)}
    for m, mod in enumerate(model.modalities_):
        present = result.present[:, m]
        p = result.modality_proba[m][present]
        calls[mod] = (p.max(1), p.argmax(1) == codes[present])
    return calls


def main(which: str) -> None:
    from _data import donor, load_bmmc
    from _harness import quiet_process

    warnings.simplefilter("ignore")
    quiet_process(1)
    if which == "bmmc":
        mdata, _ = load_bmmc()
        jobs = [(donor(mdata, d), "cell_type", s) for d in ("s1d1", "s1d2") for s in range(5)]
    else:
        from confidence import pbmc10k_split

        jobs = []
        for s in range(3):
            mdata, _, train_rows, _ = pbmc10k_split(s)
            jobs.append((mdata[train_rows].copy(), "cell_type", s))
    totals: dict[str, dict] = {}
    for train, key, seed in jobs:
        for score, (top, correct) in validation_calls(train, key, seed).items():
            total = totals.setdefault(score, {**dict.fromkeys(KINDS, 0.0), "n": 0, "errors": 0})
            for kind, value in leave_one_out(top, correct).items():
                total[kind] += value
            total["n"] += len(top)
            total["errors"] += int((~correct).sum())
    print("| data | score | cells | wrong calls | " + " | ".join(KINDS) + " |")
    print("|---|---|---|---|" + "---|" * len(KINDS))
    for score, t in totals.items():
        print(f"| {which} | {score} | {t['n']} | {t['errors']} | "
              + " | ".join(f"{t[k] / t['n']:.4f}" for k in KINDS) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
