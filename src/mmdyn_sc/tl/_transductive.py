"""The transductive path of ``tl.fit``: unlabelled cells shape the model through pseudo-labels.

A first fit on the labelled cells predicts the unlabelled ones. Per predicted class, the
``fraction`` of its unlabelled cells with the highest pseudo-label score
(``model._certainty.pseudo_label_score``: the certainty of 0.2.0, which asks that the
modalities' own classifiers agree) get that class as their pseudo-label, so that rare
classes keep pseudo-labels too. A second fit, from scratch with the same seed, trains on
the labelled and the pseudo-labelled cells;
it validates, stops early and calibrates its certainty on labelled cells only. The labels of
unlabelled cells are never read: they are missing, by definition of the query. Measured in
``benchmarks/results/peers.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..model import MMDynamics, _certainty
from ..model._training import is_ddp_strategy

#: Default share of each predicted class's unlabelled cells that gets a pseudo-label.
PSEUDO_LABEL_FRACTION = 0.5


@dataclass(frozen=True)
class PseudoLabels:
    """The pseudo-labels of a transductive fit.

    ``rows``: the pseudo-labelled cells (global indices), ``codes``: their class codes,
    ``n_unlabeled``: how many cells had no label.
    """

    rows: np.ndarray
    codes: np.ndarray
    n_unlabeled: int


def check_transductive_options(fraction: float, checkpoint_dir, train_kwargs: dict) -> None:
    """Errors for options a transductive fit cannot honour."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not (
            0.0 < fraction <= 1.0):
        raise ValueError(f"pseudo_label_fraction must be in (0, 1], got {fraction!r}.")
    if checkpoint_dir is not None:
        raise ValueError("transductive=True runs two fits; checkpoint_dir (resuming) is only "
                         "supported for one fit. Fit without checkpoint_dir.")
    if is_ddp_strategy(train_kwargs.get("strategy")):
        raise ValueError("transductive=True is not supported with a DDP strategy: the "
                         "pseudo-labels would have to be shared between processes.")


def select_pseudo_labels(predicted: np.ndarray, score: np.ndarray,
                         unlabeled: np.ndarray, fraction: float) -> PseudoLabels:
    """Per predicted class, the ``ceil(fraction * n)`` top-scored of its ``n`` unlabelled cells.

    Parameters
    ----------
    predicted
        Predicted class code per cell.
    score
        Pseudo-label score per cell (higher: more likely right).
    unlabeled
        Boolean mask of the cells without a label.
    fraction
        Share of each predicted class's unlabelled cells that is kept, in (0, 1].
    """
    rows = []
    for code in np.unique(predicted[unlabeled]):
        cells = np.flatnonzero(unlabeled & (predicted == code))
        n_keep = math.ceil(fraction * len(cells))
        # stable order: ties keep the cells' order, so the choice is deterministic
        order = np.argsort(-score[cells], kind="stable")
        rows.append(cells[order[:n_keep]])
    rows = np.sort(np.concatenate(rows)) if rows else np.array([], dtype=int)
    return PseudoLabels(rows=rows, codes=predicted[rows], n_unlabeled=int(unlabeled.sum()))


def pseudo_labels(model: MMDynamics, fraction: float, labels_key: str) -> PseudoLabels:
    """Predict the cells without a label with ``model`` and choose the pseudo-labels."""
    unlabeled = model.label_codes < 0
    if not unlabeled.any():
        raise ValueError(
            f"transductive=True learns from the cells without a label in {labels_key!r}, "
            "and every cell has one. Put the query cells into the MuData with a missing "
            "label (e.g. mudata.concat of reference and query, then set the query's labels "
            "to NaN)."
        )
    result = model.infer()
    score = _certainty.pseudo_label_score(_certainty.model_state(model), result)
    return select_pseudo_labels(result.proba.argmax(1), score, unlabeled, fraction)


def training_labels(model: MMDynamics, chosen: PseudoLabels, index: pd.Index) -> pd.Series:
    """The user's labels, with the pseudo-labels filled in (categorical over the classes)."""
    codes = model.label_codes.copy()
    codes[chosen.rows] = chosen.codes
    return pd.Series(pd.Categorical.from_codes(codes, categories=list(model.classes_)),
                     index=index)


def transductive_record(chosen: PseudoLabels, fraction: float, classes, training_key: str,
                        first_fit_epochs: int | None) -> dict:
    """What ``uns[key]["transductive"]`` records."""
    counts = np.bincount(chosen.codes, minlength=len(classes))
    return {
        "method": "pseudo_labels",
        "pseudo_label_fraction": float(fraction),
        "n_unlabeled": chosen.n_unlabeled,
        "n_pseudo_labeled": len(chosen.rows),
        "pseudo_labeled_per_class": dict(zip(map(str, classes), counts.tolist(), strict=True)),
        "training_label_key": training_key,
        "first_fit_epochs": "none" if first_fit_epochs is None else int(first_fit_epochs),
    }
