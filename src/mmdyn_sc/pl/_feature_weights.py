from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from mudata import MuData

from .._keys import DEFAULT_KEY, Key
from .._names import original_names
from ._utils import (
    check_modality,
    doc_show_return_fig,
    finish,
    fit_record,
    new_axes,
    var_column,
    varm_frame,
)

#: ``groupby`` values meaning "per predicted class" (besides the prediction and label columns).
PER_CLASS = ("class", "classes", "prediction", "predicted_class")

TOP_COLOR = "#4477aa"
LOWEST_COLOR = "#bbbbbb"


@doc_show_return_fig
def feature_weights(
    mdata: MuData,
    modality: str,
    *,
    n_top: int = 20,
    groupby: str | None = None,
    include_lowest: bool = True,
    key: str = DEFAULT_KEY,
    cmap: str = "viridis",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """The feature gate values of MM dynamics (the study's quantity), overall or per class.

    The gate says how much of each feature the network lets through; it is not the package's
    explanation of a class (:func:`mmdyn_sc.pl.attribution` draws that; on BMMC the gate
    ranks canonical markers far less often, ``benchmarks/results/explain.md``).

    Without ``groupby``: a bar chart of the ``n_top`` features with the highest
    mean gate value, then (``include_lowest``, as :func:`scanpy.pl.pca_loadings`) the
    ``n_top`` with the lowest, below a dotted line. Reads
    ``mdata[modality].var[f"{key}_informativeness"]`` (mean feature-gate value over the cells
    that have the modality). Features the model did not use (NaN) are left out.

    With ``groupby="class"``: a heat map features x classes of
    ``mdata[modality].varm[f"{key}_feature_weights"]`` (mean gate value over the cells
    predicted as each class), on the union of each class's ``n_top`` highest features, in
    class order, labelled with the fit's class names (``mdata.uns[key]["classes"]``; the
    stored columns have ``"/"`` replaced to be safe to write). Classes no cell was predicted
    as have no weights (grey).

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit` or :func:`mmdyn_sc.tl.predict`.
    modality
        Modality whose features to rank.
    n_top
        Number of features shown at each end of the ranking, or per class with ``groupby``.
        With many classes, a small value (e.g. 5) keeps the heat map legible.
    groupby
        ``None`` for the overall ranking; ``"class"`` (also ``"classes"``, ``"prediction"``,
        the prediction column ``f"{key}_prediction"`` or the fit's labels column) for the
        per-class heat map. The stored weights are per *predicted* class; nothing is
        recomputed, so other groupings are not available.
    include_lowest
        Also show the ``n_top`` features with the lowest mean gate value (overall ranking
        only).
    key
        The fit's ``key_added``.
    cmap
        Colour map of the heat map.
    ax
        Axes to draw into (default: a new figure).
    {show_return_fig}

    Returns
    -------
    :class:`~matplotlib.axes.Axes`, :class:`~matplotlib.figure.Figure` or None
        The Axes, or the Figure with ``return_fig=True``; ``None`` when the plot is shown.
    """
    record = fit_record(mdata, key)
    check_modality(mdata, modality)
    if int(n_top) < 1:
        raise ValueError(f"n_top must be a positive integer, got {n_top}.")
    if groupby is None:
        fig, ax = _ranking(mdata, modality, int(n_top), include_lowest, key, ax)
    else:
        labels_key = record.get("labels_key")
        accepted = (*PER_CLASS, Key.obs.prediction(key), labels_key)
        if groupby not in accepted:
            raise ValueError(
                f"groupby={groupby!r}: feature weights are stored per predicted class only "
                f"(varm[{Key.varm.feature_weights(key)!r}]); use groupby='class' or None."
            )
        classes = record.get("classes", [])
        fig, ax = _heatmap(mdata, modality, int(n_top), key, cmap, ax, classes)
    return finish(fig, ax, show, return_fig)


def _ranking(mdata, modality, n_top, include_lowest, key, ax):
    column = Key.var.informativeness(key)
    scores = var_column(mdata, modality, column, key).astype(float).dropna()
    scores = scores.sort_values(ascending=False, kind="stable")
    top = scores.iloc[:n_top]
    lowest = scores.iloc[n_top:].iloc[-n_top:] if include_lowest else scores.iloc[:0]
    n_rows = len(top) + len(lowest) + (1 if len(lowest) else 0)
    fig, ax = new_axes(ax, figsize=(5, max(2.5, 0.22 * n_rows + 1.2)))
    top_pos = np.arange(len(top))
    low_pos = len(top) + 1 + np.arange(len(lowest))
    ax.barh(top_pos, top.to_numpy(), color=TOP_COLOR, label="highest")
    if len(lowest):
        ax.barh(low_pos, lowest.to_numpy(), color=LOWEST_COLOR, label="lowest")
        ax.axhline(len(top), color="0.5", linestyle=":", linewidth=1)
    ax.set_yticks(
        np.concatenate([top_pos, low_pos]),
        labels=[str(i) for i in top.index] + [str(i) for i in lowest.index],
    )
    ax.set_ylim(n_rows - 0.5, -0.5)  # first rank on top
    ax.set_xlabel(f"mean gate value\nvar[{column!r}]")
    title = f"{modality}: highest {len(top)}"
    if len(lowest):
        title += f" and lowest {len(lowest)}"
    ax.set_title(f"{title} mean gate values of {len(scores)} features")
    return fig, ax


def per_class_rows(frame: pd.DataFrame, n_top: int) -> list:
    """Union of each class's ``n_top`` highest-weighted features, in class order."""
    rows: list = []
    seen: set = set()
    for cls in frame.columns:
        ranked = frame[cls].astype(float).dropna().sort_values(ascending=False, kind="stable")
        for feature in ranked.index[:n_top]:
            if feature not in seen:
                seen.add(feature)
                rows.append(feature)
    return rows


def _heatmap(mdata, modality, n_top, key, cmap, ax, classes):
    name = Key.varm.feature_weights(key)
    frame = varm_frame(mdata, modality, name, key)
    rows = per_class_rows(frame, n_top)
    if not rows:
        raise ValueError(f"mdata[{modality!r}].varm[{name!r}] holds no weights (all NaN).")
    values = frame.loc[rows].to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    fontsize, row_height = (8, 0.17) if n_rows <= 60 else (7, 0.145)
    fig, ax = new_axes(ax, figsize=(0.32 * n_cols + 3.2, max(3.0, row_height * n_rows + 2.5)))
    colormap = mpl.colormaps[cmap].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=colormap,
                      interpolation="nearest")
    # The stored columns are safe names ("/" -> "_"): label them with the original classes.
    ax.set_xticks(np.arange(n_cols), labels=original_names(frame.columns, classes), rotation=90,
                  fontsize=8)
    ax.set_yticks(np.arange(n_rows), labels=[str(r) for r in rows], fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_title(f"{modality}: highest {n_top} mean gate values per class ({n_rows} features)")
    fig.colorbar(image, ax=ax, label="mean gate value", shrink=min(1.0, 12 / max(n_rows, 1) + 0.3))
    return fig, ax
