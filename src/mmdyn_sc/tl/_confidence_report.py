"""How well each modality's confidence tracks the true class probability, on unseen cells."""

from __future__ import annotations

import numpy as np

from .._metrics import relative_tcp_error, spearman
from ..model import MMDynamics
from ..model._certainty import modality_certainty
from ..model._inference import InferenceResult

NOT_APPLICABLE = "n/a"


def confidence_report(
    model: MMDynamics,
    result: InferenceResult,
    true_tcp: np.ndarray,
    rows: np.ndarray,
) -> dict:
    """The study's diagnosis of the confidence, per modality, on the cells ``rows``.

    Parameters
    ----------
    model
        The model (its ``confidence`` option decides what is compared).
    result
        Its inference on the cells.
    true_tcp
        (n, M) true class probability of each modality's classifier, NaN where unknown.
    rows
        Cells to evaluate on: validation cells after a fit (never trained on), labelled
        query cells after a prediction.

    Returns
    -------
    ``{"option": ..., "cells": ..., "modalities": {mod: {"relative_error", "spearman",
    "n_cells"}}}``: ``relative_error`` is ``mean |t^ - t| / mean t`` of the predicted TCP
    (``"n/a"`` when the option predicts none), ``spearman`` the rank correlation of the
    predicted TCP (else of the confidence) with the true TCP, ``certainty_spearman`` that of
    the modality certainty (``obsm[f"{key}_modality_certainty"]``).
    """
    module = model.module
    option = module.confidence if module.modality_informativeness else "none (MI off)"
    predicted = result.tcp_hat
    certainty = modality_certainty(getattr(model, "certainty_", None), model.modalities_,
                                   result.modality_proba, result.present)
    per_modality = {}
    for m, mod in enumerate(model.modalities_):
        cells = rows[result.present[rows, m] & np.isfinite(true_tcp[rows, m])]
        truth = true_tcp[cells, m]
        score = (predicted if predicted is not None else result.confidence)[cells, m]
        per_modality[mod] = {
            "relative_error": (relative_tcp_error(score, truth) if predicted is not None
                               else NOT_APPLICABLE),
            "spearman": spearman(score, truth),
            "certainty_spearman": spearman(certainty[cells, m], truth),
            "n_cells": int(len(cells)),
        }
    return {"option": option, "modalities": per_modality}
