"""``pl.reliability``: whether the stored certainty is a probability you can act on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from mudata import MuData

from .._calibration import (
    area_under_risk_coverage,
    equal_mass_bins,
    expected_calibration_error,
    risk_coverage,
)
from .._keys import DEFAULT_KEY, Key
from ._utils import (
    doc_show_return_fig,
    finish,
    fit_record,
    labels_column,
    new_panels,
    obs_column,
    obsm_frame,
)

CERTAINTY_COLOR, PROBABILITY_COLOR = "#4477aa", "#bbbbbb"


@doc_show_return_fig
def reliability(
    mdata: MuData,
    *,
    labels: str | None = None,
    key: str = DEFAULT_KEY,
    split: str | None = None,
    n_bins: int = 15,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Reliability diagram and risk-coverage curve of the certainty, from the stored keys.

    Left: the labelled cells sorted by ``obs[f"{key}_certainty"]`` and cut into ``n_bins``
    bins of equal size; each bin's accuracy against its mean certainty (on the diagonal: the
    certainty is the probability that the call is right), with the expected calibration
    error in the legend. Right: the error rate among the cells kept when only the most certain
    are kept, against the share kept (lower is better; the area under it, AURC, in the
    legend). Both also for the highest class probability (``obsm[f"{key}_proba"]``), in grey.

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit` or :func:`mmdyn_sc.tl.predict`, with
        true labels.
    labels
        Column of ``mdata.obs`` with the true labels (default: the fit's labels column,
        ``uns[key]["labels_key"]``). Cells without a label are left out; cells whose label is
        not a class of the model count as wrong calls (unless called ``Unknown``).
    key
        The fit's ``key_added``.
    split
        Only cells of this ``obs[f"{key}_split"]`` value (e.g. ``"validation"`` after a fit,
        ``"query"`` after a prediction); default: every labelled cell.
    n_bins
        Bins of the reliability diagram.
    ax
        Two Axes to draw into (default: a new figure).
    {show_return_fig}

    Returns
    -------
    list of :class:`~matplotlib.axes.Axes`, :class:`~matplotlib.figure.Figure` or None
        The two Axes ``[reliability, risk-coverage]``, or the Figure with
        ``return_fig=True``; ``None`` when the plot is shown.
    """
    record = fit_record(mdata, key)
    labels = labels_column(mdata, labels, record, "labels")
    certainty = obs_column(mdata, Key.obs.certainty(key), key).to_numpy(dtype=float)
    proba = obsm_frame(mdata, Key.obsm.proba(key), key).to_numpy(dtype=float)
    calls = obs_column(mdata, Key.obs.prediction(key), key).astype(str).to_numpy()
    truth = mdata.obs[labels]
    keep = truth.notna().to_numpy()
    if split is not None:
        keep &= (obs_column(mdata, Key.obs.split(key), key).astype(str) == split).to_numpy()
    if not keep.any():
        raise ValueError(f"No labelled cells{'' if split is None else f' in split {split!r}'}.")
    classes = [str(c) for c in record.get("classes", [])]
    truth = truth.astype(str).to_numpy()
    most_probable = np.asarray(classes, dtype=object)[proba.argmax(1)] if classes else calls
    unseen = ~np.isin(truth, classes)
    correct = np.where(unseen, calls == "Unknown", most_probable == truth)[keep]
    scores = {"certainty": (certainty[keep], CERTAINTY_COLOR),
              "highest probability": (proba.max(1)[keep], PROBABILITY_COLOR)}
    fig, (left, right) = new_panels(2, ax, panel_size=(4.2, 4.0))
    left.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    for name, (score, color) in reversed(scores.items()):
        bins = equal_mass_bins(score, n_bins)
        mean_score = [score[b].mean() for b in bins]
        accuracy = [correct[b].mean() for b in bins]
        ece = expected_calibration_error(score, correct, n_bins)
        left.plot(mean_score, accuracy, marker="o", markersize=4, color=color,
                  label=f"{name} (ECE {ece:.3f})")
        coverage, risk = risk_coverage(score, correct)
        right.plot(coverage, risk, color=color,
                   label=f"{name} (AURC {area_under_risk_coverage(score, correct):.3f})")
    left.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="mean certainty in bin",
             ylabel="accuracy in bin", title=f"reliability ({int(keep.sum())} cells)")
    right.set(xlim=(0, 1), ylim=(0, None), xlabel="share of cells kept (most certain first)",
              ylabel="error rate among kept cells", title="risk-coverage")
    for axis in (left, right):
        axis.legend(frameon=False, fontsize=8, loc="upper left")
    return finish(fig, [left, right], show, return_fig)
