"""What every benchmark shares: process setup, ``--seeds``, timing, the metrics, the baseline.

- :func:`quiet_process` (:func:`limit_threads` + :func:`quiet`): one benchmark process.
- :func:`add_seeds_argument`: ``--seeds N`` means seeds ``0..N-1`` in every script.
- :func:`timed`: wall seconds of one call (``time.perf_counter``).
- :func:`score`: the one metric code, ``mmdyn_sc._metrics.classification_metrics`` (what
  ``tl.fit`` stores and logs): macro and weighted F1 over the labels present in the truth or
  the predictions (``zero_division=0``), balanced accuracy over the classes in the truth,
  accuracy.
- :func:`fit_lr`: the study's winner, class-balanced logistic regression on standardised
  features with C chosen by 3-fold stratified CV (macro F1) on the training cells only.

Scripts import this module (and :mod:`_data`, :mod:`_mmfit`), never each other.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

#: Default C grid of the logistic regression: ``np.logspace(-3, 1, 9)``.
C_RANGE = (-3.0, 1.0, 9)


# ---------------------------------------------------------------------------- process
def limit_threads(n: int) -> None:
    """Torch and BLAS threads; more than the free cores makes training many times slower."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)


def quiet() -> None:
    """Silence the per-fit chatter of Lightning, scvi-tools and the package (and warnings)."""
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "mmdyn_sc"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def quiet_process(threads: int) -> None:
    """A benchmark process: ``threads`` torch/BLAS threads, no Lightning/scvi/package chatter."""
    limit_threads(threads)
    quiet()


# ---------------------------------------------------------------------------- arguments
def seed_count(text: str) -> list[int]:
    """``"N"`` -> ``[0, ..., N-1]`` (argparse type of ``--seeds``)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes a number of seeds N (seeds 0..N-1), got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--seeds must be at least 1, got {n}")
    return list(range(n))


def add_seeds_argument(parser: argparse.ArgumentParser, default: int, *,
                       flag: str = "--seeds", what: str = "seeds") -> None:
    """``flag N``: run seeds ``0..N-1`` (default ``default``); ``args.<flag>`` is that list.

    Every script's ``--seeds`` means this: a number of seeds, never a list of seed values.
    """
    parser.add_argument(flag, type=seed_count, default=list(range(default)), metavar="N",
                        help=f"{what}: N runs with seeds 0..N-1 (default {default})")


def add_c_range_argument(parser: argparse.ArgumentParser) -> None:
    """``--lr-c-range LOW HIGH N``: the logistic regression's C grid, ``logspace(LOW, HIGH, N)``."""
    parser.add_argument("--lr-c-range", type=float, nargs=3, default=list(C_RANGE),
                        metavar=("LOG10_LOW", "LOG10_HIGH", "N"),
                        help="LR C grid: np.logspace(LOW, HIGH, N) (default -3 1 9)")


def c_grid(c_range) -> np.ndarray:
    """``np.logspace(low, high, n)`` of ``--lr-c-range``."""
    low, high, n = c_range
    return np.logspace(low, high, int(n))


# ---------------------------------------------------------------------------- timing
def timed(function, *args, **kwargs):
    """``(function(*args, **kwargs), wall seconds)``."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


# ---------------------------------------------------------------------------- metrics
def score(y_true, y_pred) -> dict[str, float]:
    """Accuracy, macro F1, weighted F1, balanced accuracy of string labels (see the module)."""
    from mmdyn_sc._metrics import classification_metrics

    y_true = np.asarray(y_true, dtype=object).astype(str)
    y_pred = np.asarray(y_pred, dtype=object).astype(str)
    return classification_metrics(y_true, y_pred)


def fmt(values, digits: int = 3, *, scale: float = 1.0) -> str:
    """``"mean ± sd"`` (sd with ddof 1; 0 for one value) of the values that are not None."""
    values = np.asarray([v for v in values if v is not None], dtype=float) * scale
    if len(values) == 0:
        return ""
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f}"


# ---------------------------------------------------------------------------- baseline
def fit_lr(x_train: np.ndarray, y_train: np.ndarray, c_values=None):
    """Class-balanced logistic regression, C chosen by CV on the training cells.

    ``StandardScaler`` + ``LogisticRegression(class_weight="balanced", max_iter=5000)``; C
    from ``c_values`` (default ``logspace(-3, 1, 9)``) by ``GridSearchCV`` with 3-fold
    ``StratifiedKFold(shuffle=True, random_state=0)``, scoring macro F1, refitted on all
    training cells. Deterministic.

    Returns
    -------
    ``(search, seconds, C)``: the fitted ``GridSearchCV`` (``search.predict``; the scaler is
    ``search.best_estimator_.named_steps["standardscaler"]``), the fit's wall seconds and
    the chosen C.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if c_values is None:
        c_values = c_grid(C_RANGE)
    pipe = make_pipeline(StandardScaler(),
                         LogisticRegression(class_weight="balanced", max_iter=5000))
    search = GridSearchCV(pipe, {"logisticregression__C": c_values}, scoring="f1_macro",
                          cv=StratifiedKFold(3, shuffle=True, random_state=0), n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes (< 3 cells) in the training cells
        _, seconds = timed(search.fit, x_train, y_train)
    return search, seconds, float(search.best_params_["logisticregression__C"])
