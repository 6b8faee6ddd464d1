from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from .._keys import DEFAULT_KEY
from .._utils import warn
from ._utils import doc_show_return_fig, finish, history_arrays, new_axes, new_panels

#: Second-panel metrics with ``scores=True``.
DEFAULT_SCORES = ("validation_accuracy", "validation_f1_macro")


@doc_show_return_fig
def training_history(
    mdata_or_model,
    *,
    key: str = DEFAULT_KEY,
    metrics: Sequence[str] = ("train_loss", "validation_loss"),
    scores: bool | Sequence[str] = False,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Plot metrics per epoch of a fit: losses, and optionally validation scores.

    Reads ``mdata.uns[key]["history"]`` (one array per logged metric, written by
    :func:`mmdyn_sc.tl.fit`), or the ``history`` of a trained model (a dict of one-column
    DataFrames, as scvi-tools models keep it).

    Parameters
    ----------
    mdata_or_model
        MuData annotated by :func:`mmdyn_sc.tl.fit`, or a trained
        :class:`~mmdyn_sc.MMDynamics`.
    key
        The fit's ``key_added`` (MuData only).
    metrics
        History entries of the first panel, one line each; entries absent from the history
        are skipped.
    scores
        Add a second panel with score metrics: ``True`` for ``validation_accuracy`` and
        ``validation_f1_macro``, or the names to draw. Entries absent from the history are
        skipped; if none is present (no validation cells) only the first panel is drawn,
        with a warning.
    ax
        One Axes, or two with a score panel.
    {show_return_fig}

    Returns
    -------
    :class:`~matplotlib.axes.Axes`, list of Axes, :class:`~matplotlib.figure.Figure` or None
        The Axes, or ``[loss_axes, score_axes]`` with a score panel, or the Figure with
        ``return_fig=True``; ``None`` when the plot is shown.
    """
    history = history_arrays(mdata_or_model, key)
    if not history:
        raise KeyError("The training history is empty: train the model first.")
    drawn = [m for m in metrics if m in history]
    if not drawn:
        raise KeyError(f"None of {list(metrics)} in the history; available: {sorted(history)}.")
    if scores is True:
        scores = DEFAULT_SCORES
    score_names = [m for m in (scores or ()) if m in history]
    if scores and not score_names:
        warn(f"None of {list(scores)} in the history (no validation cells?); drawing losses "
             "only.")
    if score_names:
        fig, axes = new_panels(2, ax, panel_size=(4.5, 3.8))
    else:
        fig, single = new_axes(ax)
        axes = [single]
    _lines(axes[0], history, drawn, "loss" if all("loss" in m for m in drawn) else "value")
    if score_names:
        _lines(axes[1], history, score_names, "score")
    return finish(fig, axes if score_names else axes[0], show, return_fig)


def _lines(ax, history, names, ylabel):
    for name in names:
        values = np.asarray(history[name], dtype=float)
        ax.plot(np.arange(1, len(values) + 1), values, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
