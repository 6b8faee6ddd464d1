from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from mudata import MuData

from .._keys import DEFAULT_KEY
from ._utils import finish, fit_record, new_axes


def training_history(
    mdata: MuData,
    *,
    key: str = DEFAULT_KEY,
    metrics: tuple[str, ...] = ("train_loss", "validation_loss"),
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Plot metrics per epoch from ``mdata.uns[key]["history"]`` (from :func:`~mmdyn_sc.tl.fit`).

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit`.
    key
        The fit's ``key_added``.
    metrics
        History entries to draw, one line each; entries absent from the history are skipped.
    ax, show, return_fig
        scanpy's plotting conventions.

    Returns
    -------
    The Axes (or the Figure with ``return_fig=True``), unless shown.
    """
    history = fit_record(mdata, key).get("history", {})
    drawn = [m for m in metrics if m in history]
    if not drawn:
        raise KeyError(f"None of {list(metrics)} in the history; available: {sorted(history)}.")
    fig, ax = new_axes(ax)
    for name in drawn:
        values = np.asarray(history[name], dtype=float)
        ax.plot(np.arange(1, len(values) + 1), values, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("value")
    ax.legend(frameon=False)
    return finish(fig, ax, show, return_fig)
