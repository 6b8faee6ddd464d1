from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Patch
from mudata import MuData

from .._keys import DEFAULT_KEY, Key
from ._utils import doc_show_return_fig, finish, modality_colors, new_axes, obsm_frame


def group_labels(mdata: MuData, groupby: str, key: str) -> tuple[pd.Series, list]:
    """``mdata.obs[groupby]`` and its groups in display order (categories, else sorted)."""
    if groupby not in mdata.obs.columns:
        raise KeyError(
            f"mdata.obs[{groupby!r}] not found; e.g. the prediction "
            f"{Key.obs.prediction(key)!r} or the labels column. Available columns: "
            f"{list(mdata.obs.columns)}."
        )
    column = mdata.obs[groupby]
    present = set(column.dropna().unique())
    if isinstance(column.dtype, pd.CategoricalDtype):
        groups = [g for g in column.cat.categories if g in present]
    else:
        groups = sorted(present, key=str)
    return column, groups


@doc_show_return_fig
def modality_confidence(
    mdata: MuData,
    *,
    groupby: str | None = None,
    key: str = DEFAULT_KEY,
    modalities: Sequence[str] | None = None,
    kind: str = "box",
    values: str = "confidence",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Per-cell confidence or certainty of each modality, by group of cells.

    Reads ``mdata.obsm[f"{key}_confidence"]`` (``values="confidence"``: the weight the fusion
    gave each modality; its meaning depends on the fit's ``confidence`` option and the axis
    says which) or ``mdata.obsm[f"{key}_modality_certainty"]`` (``values="certainty"``: the
    calibrated probability that the modality's own classifier is right), cells x
    modalities, written by :func:`mmdyn_sc.tl.fit` / :func:`mmdyn_sc.tl.predict`, and
    ``mdata.obs[groupby]``. For
    each group, one box (or violin) per modality, side by side, one colour per modality.
    NaN confidences (the cell lacks the modality) are skipped; a group with no value for a
    modality gets no box. Without modality informativeness every weight is 1.

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit` or :func:`mmdyn_sc.tl.predict`.
    groupby
        Column of ``mdata.obs`` grouping the cells, e.g. the labels (default: the prediction,
        ``f"{key}_prediction"``).
    key
        The fit's ``key_added``.
    modalities
        Modalities to show (default: all columns of the confidence).
    kind
        ``"box"`` or ``"violin"``.
    values
        ``"confidence"`` (the fusion weights) or ``"certainty"`` (per-modality certainty).
    ax
        Axes to draw into (default: a new figure).
    {show_return_fig}

    Returns
    -------
    :class:`~matplotlib.axes.Axes`, :class:`~matplotlib.figure.Figure` or None
        The Axes, or the Figure with ``return_fig=True``; ``None`` when the plot is shown.
    """
    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin', got {kind!r}.")
    if values not in ("confidence", "certainty"):
        raise ValueError(f"values must be 'confidence' or 'certainty', got {values!r}.")
    drawn = values
    name = (Key.obsm.confidence(key) if drawn == "confidence"
            else Key.obsm.modality_certainty(key))
    confidence = obsm_frame(mdata, name, key)
    colors = modality_colors([str(c) for c in confidence.columns])
    if modalities is None:
        modalities = [str(c) for c in confidence.columns]
    else:
        modalities = [modalities] if isinstance(modalities, str) else list(modalities)
        missing = [m for m in modalities if m not in confidence.columns]
        if missing:
            raise KeyError(
                f"{missing} not in mdata.obsm[{name!r}] "
                f"(modalities: {list(confidence.columns)})."
            )
    if groupby is None:
        groupby = Key.obs.prediction(key)
    column, groups = group_labels(mdata, groupby, key)
    if not groups:
        raise ValueError(f"mdata.obs[{groupby!r}] has no values.")
    labels = column.to_numpy()
    n_groups, n_mods = len(groups), len(modalities)
    width = 0.8 / n_mods
    fig, ax = new_axes(ax, figsize=(max(4.0, 0.28 * n_groups * n_mods + 1.8), 4.0))
    for m, mod in enumerate(modalities):
        values = confidence[mod].to_numpy(dtype=float)
        data, positions = [], []
        for g, group in enumerate(groups):
            cell_values = values[(labels == group) & np.isfinite(values)]
            if len(cell_values):
                data.append(cell_values)
                positions.append(g + (m - (n_mods - 1) / 2) * width)
        if not data:
            continue
        if kind == "box":
            _boxes(ax, data, positions, width * 0.85, colors[mod], mod)
        else:
            _violins(ax, data, positions, width * 0.9, colors[mod])
    ax.set_xticks(np.arange(n_groups), labels=[str(g) for g in groups], rotation=45,
                  ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.6, n_groups - 0.4)
    ax.set_xlabel(groupby)
    ax.set_ylabel(axis_label(mdata, key, drawn))
    ax.legend(handles=[Patch(facecolor=colors[m], label=m) for m in modalities],
              title="modality", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return finish(fig, ax, show, return_fig)


#: What ``obsm[f"{key}_confidence"]`` holds under each ``confidence`` option of the fit.
CONFIDENCE_MEANING = {
    "energy": "fusion weight (share of softmax(-energy))",
    "pdf": "fusion weight (PDF share)",
    "tcp": "fusion weight (predicted TCP)",
    "tcp_calibrated": "fusion weight (predicted TCP, calibrated head)",
}


def axis_label(mdata: MuData, key: str, values: str) -> str:
    """The y-axis label: what the drawn values are under the fit's options."""
    if values == "certainty":
        return "modality certainty\n(P(modality's own call is right))"
    option = str(mdata.uns.get(key, {}).get("confidence", {}).get("option", ""))
    if option.startswith("none"):
        return "fusion weight (1: MI off)"
    return CONFIDENCE_MEANING.get(option, "modality confidence")


def _boxes(ax, data, positions, width, color, mod):
    parts = ax.boxplot(
        data, positions=positions, widths=width, patch_artist=True, manage_ticks=False,
        medianprops={"color": "black", "linewidth": 1, "gid": f"median:{mod}"},
        flierprops={"marker": ".", "markersize": 2, "markeredgecolor": color, "alpha": 0.6},
    )
    for box in parts["boxes"]:
        box.set_facecolor(color)
        box.set_alpha(0.85)


def _violins(ax, data, positions, width, color):
    # A KDE needs spread: constant groups (e.g. no MI: all 1) are drawn as a short line.
    spread = [i for i, d in enumerate(data) if len(d) > 1 and np.ptp(d) > 0]
    for i, d in enumerate(data):
        if i not in spread:
            ax.hlines(np.median(d), positions[i] - width / 2, positions[i] + width / 2,
                      color=color, linewidth=2)
    if not spread:
        return
    parts = ax.violinplot([data[i] for i in spread], positions=[positions[i] for i in spread],
                          widths=width, showmedians=True, showextrema=False)
    for body in parts["bodies"]:
        body.set_facecolor(color)
        body.set_edgecolor("black")
        body.set_linewidth(0.5)
        body.set_alpha(0.85)
    parts["cmedians"].set_color("black")
