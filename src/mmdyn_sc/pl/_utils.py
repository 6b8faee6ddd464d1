"""Shared plumbing of the plotting functions (scanpy's ax / show / return_fig convention)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from mudata import MuData

from .._keys import Key


def fit_record(mdata: MuData, key: str) -> dict:
    """``mdata.uns[key]`` written by :func:`mmdyn_sc.tl.fit`, or a clear error."""
    record = mdata.uns.get(Key.uns.params(key))
    if record is None:
        raise KeyError(
            f"mdata.uns[{key!r}] not found: run mmdyn_sc.tl.fit(..., key_added={key!r})."
        )
    return record


def new_axes(ax, figsize=(5, 4)):
    """The given Axes and its figure, or a new figure with one Axes."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def finish(fig, ax, show: bool | None, return_fig: bool):
    """Show, or return the Figure / Axes as scanpy does."""
    if show is None:
        show = False
    if show:
        plt.show()
        return None
    return fig if return_fig else ax
