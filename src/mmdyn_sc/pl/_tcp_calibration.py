from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from mudata import MuData

from .._keys import DEFAULT_KEY, Key
from .._metrics import relative_tcp_error, spearman
from ._modality_confidence import axis_label
from ._utils import doc_show_return_fig, finish, modality_colors, new_panels, obs_column, obsm_frame


@doc_show_return_fig
def tcp_calibration(
    mdata: MuData,
    *,
    modality: str | None = None,
    key: str = DEFAULT_KEY,
    split: str | None = "validation",
    values: str = "confidence",
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Predicted vs true class probability (TCP) of each modality's classifier.

    The confidence network of MM dynamics learns to predict, for each cell, the TCP of each
    modality's own classifier. This plot puts the prediction,
    ``mdata.obsm[f"{key}_tcp_predicted"]`` (or, for fits that predict no TCP such as
    ``confidence="energy"``, the confidence ``mdata.obsm[f"{key}_confidence"]``), against the
    truth, ``mdata.obsm[f"{key}_tcp_true"]`` (labelled cells only), for the cells whose
    ``mdata.obs[f"{key}_split"]`` equals ``split``; one panel per modality with the diagonal
    y = x, the relative error ``mean |predicted - true| / mean true`` (predicted TCP only)
    and the Spearman correlation in the title. Without modality informativeness the
    confidence is 1 and the plot shows nothing useful.

    With ``values="certainty"`` the y axis is the per-modality certainty,
    ``mdata.obsm[f"{key}_modality_certainty"]`` (the calibrated probability that the
    modality's own classifier is right), which every fit writes whatever its ``confidence``
    option: the title gives its Spearman correlation with the true TCP, which is how well
    it tracks that modality. A certainty is the probability of the modality's *own* call,
    so cells whose modality calls another class than the true one sit above the diagonal.

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit` (or by :func:`mmdyn_sc.tl.predict` on
        labelled cells, with ``split="query"``).
    modality
        One modality; default: one panel per modality.
    key
        The fit's ``key_added``.
    split
        ``"validation"`` (cells the confidence network was not trained on), ``"train"``,
        ``"query"``, or ``None`` for every cell with a true TCP.
    values
        ``"confidence"`` (the predicted TCP, or the fusion weight where the fit predicts
        none) or ``"certainty"`` (the per-modality certainty).
    ax
        One Axes per panel drawn (a single Axes for one panel).
    {show_return_fig}

    Returns
    -------
    :class:`~matplotlib.axes.Axes`, list of Axes, :class:`~matplotlib.figure.Figure` or None
        The Axes (one panel) or the list of Axes (several panels, one per modality), or the
        Figure with ``return_fig=True``; ``None`` when the plot is shown.
    """
    if values not in ("confidence", "certainty"):
        raise ValueError(f"values must be 'confidence' or 'certainty', got {values!r}.")
    predicts_tcp = values == "confidence" and Key.obsm.tcp_predicted(key) in mdata.obsm
    if values == "certainty":
        source = Key.obsm.modality_certainty(key)
    else:
        source = Key.obsm.tcp_predicted(key) if predicts_tcp else Key.obsm.confidence(key)
    predicted = obsm_frame(mdata, source, key)
    true = obsm_frame(mdata, Key.obsm.tcp_true(key), key)
    modalities = [str(c) for c in predicted.columns]
    colors = modality_colors(modalities)
    if modality is not None:
        if modality not in modalities:
            raise KeyError(
                f"Modality {modality!r} not in mdata.obsm[{source!r}] "
                f"(modalities: {modalities})."
            )
        modalities = [modality]
    cells = np.ones(mdata.n_obs, dtype=bool)
    if split is not None:
        split_column = obs_column(mdata, Key.obs.split(key), key)
        cells = (split_column == split).to_numpy()
        if not cells.any():
            counts = split_column.value_counts()
            available = {str(k): int(v) for k, v in counts.items() if v > 0}
            raise ValueError(
                f"No cells with mdata.obs[{Key.obs.split(key)!r}] == {split!r}; cells per "
                f"split: {available}. Pass split= one of those, or split=None for all cells."
            )
    pairs = {}
    for mod in modalities:
        x = true.loc[cells, mod].to_numpy(dtype=float)
        y = predicted.loc[cells, mod].to_numpy(dtype=float)
        both = np.isfinite(x) & np.isfinite(y)
        if not both.any():
            raise ValueError(
                f"No {split or 'labelled'} cells with both a true TCP and a {values} for "
                f"{mod!r}: the true TCP needs labelled cells "
                f"(mdata.obsm[{Key.obsm.tcp_true(key)!r}] is NaN elsewhere)."
            )
        pairs[mod] = (x[both], y[both])

    if predicts_tcp:
        y_label = "predicted TCP"
    elif values == "confidence":
        y_label = "confidence (predicts no TCP)"
    else:
        y_label = axis_label(mdata, key, values)
    fig, axes = new_panels(len(modalities), ax, panel_size=(4.0, 4.2))
    for panel, mod in zip(axes, modalities, strict=True):
        x, y = pairs[mod]
        panel.scatter(x, y, s=8, alpha=0.6, color=colors[mod], linewidths=0)
        lo = min(0.0, float(x.min()), float(y.min()))
        hi = max(1.0, float(x.max()), float(y.max()))
        panel.plot([lo, hi], [lo, hi], linestyle="--", color="0.3", linewidth=1, label="y = x")
        panel.set_xlim(lo, hi)
        panel.set_ylim(lo, hi)
        panel.set_aspect("equal")
        panel.set_xlabel("true TCP")
        panel.set_ylabel(y_label)
        error = f"relative error {relative_tcp_error(y, x):.3f}, " if predicts_tcp else ""
        panel.set_title(f"{mod}: {error}Spearman {spearman(x, y):.2f}\n"
                        f"{len(x)} {split or 'labelled'} cells")
        panel.legend(frameon=False, loc="upper left")
    return finish(fig, axes[0] if len(axes) == 1 else axes, show, return_fig)
