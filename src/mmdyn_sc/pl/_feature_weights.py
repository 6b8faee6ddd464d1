from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from mudata import MuData

from .._keys import DEFAULT_KEY, Key
from ._utils import finish, fit_record, new_axes


def feature_weights(
    mdata: MuData,
    modality: str,
    *,
    key: str = DEFAULT_KEY,
    n_top: int = 20,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Bar chart of the ``n_top`` most informative features of a modality.

    Reads ``mdata[modality].var[f"{key}_informativeness"]`` (mean feature-gate value over
    cells, written by :func:`mmdyn_sc.tl.fit`).

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit`.
    modality
        Modality whose features to rank.
    key
        The fit's ``key_added``.
    n_top
        Number of features shown.
    ax, show, return_fig
        scanpy's plotting conventions.

    Returns
    -------
    The Axes (or the Figure with ``return_fig=True``), unless shown.
    """
    fit_record(mdata, key)
    if modality not in mdata.mod:
        raise KeyError(f"Modality {modality!r} not in mdata.mod ({list(mdata.mod)}).")
    column = Key.var.informativeness(key)
    var = mdata.mod[modality].var
    if column not in var.columns:
        raise KeyError(f"mdata[{modality!r}].var[{column!r}] not found: was it part of the fit?")
    scores = var[column].dropna().sort_values(ascending=False).head(n_top)
    fig, ax = new_axes(ax, figsize=(5, max(2.5, 0.25 * len(scores) + 1)))
    positions = np.arange(len(scores))[::-1]
    ax.barh(positions, scores.to_numpy(), color="#4477aa")
    ax.set_yticks(positions, labels=[str(i) for i in scores.index])
    ax.set_xlabel("mean gate value")
    ax.set_title(f"{modality}: top {len(scores)} informative features")
    return finish(fig, ax, show, return_fig)
