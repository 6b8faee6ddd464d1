"""Shared plumbing of the plotting functions (scanpy's ax / show / return_fig convention).

Every plot reads what :func:`mmdyn_sc.tl.fit` / :func:`mmdyn_sc.tl.predict` stored, through
the helpers here, so that a missing entry always gives the same kind of error: a
:class:`KeyError` naming the entry and the function that writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from mudata import MuData

from .._keys import Key
from .._utils import check_not_image, history_to_arrays

#: One colour per modality, in the order of the fit's modalities (Paul Tol's bright scheme).
MODALITY_COLORS = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")


def _run_hint(key: str) -> str:
    return (
        f"run mmdyn_sc.tl.fit(..., key_added={key!r}) or "
        f"mmdyn_sc.tl.predict(..., key_added={key!r}) first"
    )


def fit_record(mdata: MuData, key: str) -> dict:
    """``mdata.uns[key]`` written by :func:`mmdyn_sc.tl.fit`, or a clear error."""
    record = mdata.uns.get(Key.uns.params(key))
    if record is None:
        raise KeyError(f"mdata.uns[{key!r}] not found: {_run_hint(key)}.")
    return record


def check_modality(mdata: MuData, modality: str) -> None:
    """Raise a :class:`KeyError` listing the modalities if ``modality`` is not one of them."""
    if modality not in mdata.mod:
        raise KeyError(f"Modality {modality!r} not in mdata.mod ({list(mdata.mod)}).")


def stored(container: Mapping, name: str, where: str, key: str):
    """``container[name]``, or a :class:`KeyError` naming ``where[name]`` and what writes it.

    ``where`` is how the container is spelled in the message, e.g. ``"mdata.obsm"``.
    """
    if name not in container:
        raise KeyError(f"{where}[{name!r}] not found: {_run_hint(key)}.")
    return container[name]


def obs_column(mdata: MuData, name: str, key: str) -> pd.Series:
    """Column ``name`` of ``mdata.obs`` written by a fit, or a clear error."""
    return stored(mdata.obs, name, "mdata.obs", key)


def obsm_frame(mdata: MuData, name: str, key: str) -> pd.DataFrame:
    """``mdata.obsm[name]`` (cells x modalities or classes) as a DataFrame, or a clear error."""
    value = stored(mdata.obsm, name, "mdata.obsm", key)
    if isinstance(value, pd.DataFrame):
        return value
    return pd.DataFrame(np.asarray(value), index=mdata.obs_names)


def var_column(mdata: MuData, modality: str, name: str, key: str) -> pd.Series:
    """Column ``name`` of ``mdata[modality].var``, or a clear error."""
    check_modality(mdata, modality)
    check_not_image(mdata, modality, key)
    return stored(mdata.mod[modality].var, name, f"mdata[{modality!r}].var", key)


def labels_column(mdata: MuData, given: str | None, record: dict, argument: str) -> str:
    """The ``mdata.obs`` column of the true labels: ``given``, else the fit's labels column.

    ``argument`` is the caller's parameter that names it, for the error message.
    """
    name = given or record.get("labels_key")
    if not name or name == "none":
        raise KeyError(f"The fit recorded no labels column: name the true labels with "
                       f"{argument}=.")
    if name not in mdata.obs.columns:
        what = (f"{argument}={name!r}: mdata.obs[{name!r}] not found" if given else
                f"The fit's labels column {name!r} is not in mdata.obs: name the true labels "
                f"with {argument}=")
        raise KeyError(f"{what}. Available columns: {list(mdata.obs.columns)}.")
    return name


def varm_frame(mdata: MuData, modality: str, name: str, key: str) -> pd.DataFrame:
    """``mdata[modality].varm[name]`` (features x classes) as a DataFrame, or a clear error."""
    check_modality(mdata, modality)
    check_not_image(mdata, modality, key)
    value = stored(mdata.mod[modality].varm, name, f"mdata[{modality!r}].varm", key)
    if isinstance(value, pd.DataFrame):
        return value
    return pd.DataFrame(np.asarray(value), index=mdata.mod[modality].var_names)


def modality_colors(modalities: Sequence[str]) -> dict[str, str]:
    """One colour per modality, stable across plots for the same fit."""
    return {m: MODALITY_COLORS[i % len(MODALITY_COLORS)] for i, m in enumerate(modalities)}


def history_arrays(source, key: str) -> dict[str, np.ndarray]:
    """Training history as one float array per metric (index = epoch).

    ``source`` is a MuData annotated by :func:`mmdyn_sc.tl.fit` (reads
    ``uns[key]["history"]``) or a trained model: any object with a ``history_`` or
    ``history`` dict of one-column DataFrames (duck-typed; the model class is not imported).
    """
    if isinstance(source, MuData):
        history = fit_record(source, key).get("history", {})
        return {name: np.asarray(values, dtype=float) for name, values in history.items()}
    history = getattr(source, "history_", None)
    if history is None:
        history = getattr(source, "history", None)
    if history is None and (hasattr(source, "history_") or hasattr(source, "history")):
        raise KeyError("The model has no training history: train it first.")
    if not isinstance(history, Mapping):
        raise TypeError(
            "Expected a MuData annotated by mmdyn_sc.tl.fit or a trained model with a "
            f"`history` dict, got {type(source).__name__}."
        )
    return history_to_arrays(history)


def new_axes(ax, figsize=(5, 4)):
    """The given Axes and its figure, or a new figure with one Axes."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def new_panels(n: int, ax=None, panel_size=(4.0, 4.0)) -> tuple:
    """A figure with ``n`` side-by-side Axes, or the given ones (an Axes or ``n`` of them)."""
    if ax is None:
        fig, axes = plt.subplots(
            1, n, figsize=(panel_size[0] * n, panel_size[1]), squeeze=False, layout="constrained"
        )
        return fig, list(axes[0])
    axes = [ax] if isinstance(ax, Axes) else list(ax)
    if len(axes) != n:
        raise ValueError(f"This plot draws {n} panel(s) but {len(axes)} Axes were given.")
    return axes[0].figure, axes


def finish(fig, ax, show: bool | None, return_fig: bool):
    """End a plot as scanpy's plotting functions do (e.g. :func:`scanpy.pl.embedding`).

    ``return_fig=True``: return the Figure (not shown). Else, if ``show`` is ``True``, or
    ``None`` and ``scanpy.settings.autoshow`` is true (scanpy's default), call
    :func:`matplotlib.pyplot.show` and return ``None``; otherwise return the Axes (or list of
    Axes). As in scanpy, a given ``ax`` does not change this: pass ``show=False`` to keep
    drawing into it.
    """
    if return_fig:
        return fig
    if show is None:
        from scanpy import settings

        show = settings.autoshow
    if show:
        plt.show()
        return None
    return ax


#: The ``show`` / ``return_fig`` parameters, as every plot documents them.
SHOW_RETURN_FIG_DOC = """show, return_fig
        As scanpy's plots: with ``return_fig=True`` the Figure is returned, not shown; else
        the figure is shown (:func:`matplotlib.pyplot.show`, nothing returned) if ``show``
        is ``True``, or ``None`` and ``scanpy.settings.autoshow`` is true (scanpy's
        default), and the Axes are returned if not. Pass ``show=False`` to go on drawing."""


def doc_show_return_fig(function):
    """Put :data:`SHOW_RETURN_FIG_DOC` where the docstring says ``{show_return_fig}``."""
    function.__doc__ = function.__doc__.replace("{show_return_fig}", SHOW_RETURN_FIG_DOC)
    return function
