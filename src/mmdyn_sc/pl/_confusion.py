from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from mudata import MuData

from .._keys import DEFAULT_KEY, Key
from ._utils import doc_show_return_fig, finish, fit_record, labels_column, new_axes, obs_column

#: Values are written into the cells when the matrix has at most this many rows and columns.
ANNOTATE_MAX = 20


def confusion_table(
    mdata: MuData, labels_key: str | None = None, *, key: str = DEFAULT_KEY,
    split: str | None = None, normalize: bool = True,
) -> pd.DataFrame:
    """Confusion matrix, rows = true labels, columns = predicted classes (row-normalised).

    Columns are the fit's classes; rows are the same classes first (so that the diagonal is
    correct), then labels the model does not know. Only labelled cells count.
    ``labels_key=None``: the fit's labels column (``uns[key]["labels_key"]``).
    """
    record = fit_record(mdata, key)
    predicted = obs_column(mdata, Key.obs.prediction(key), key)
    labels_key = labels_column(mdata, labels_key, record, "labels_key")
    labels = mdata.obs[labels_key]
    cells = labels.notna().to_numpy()
    if split is not None:
        cells &= (obs_column(mdata, Key.obs.split(key), key) == split).to_numpy()
    if not cells.any():
        raise ValueError(
            f"No labelled cells in mdata.obs[{labels_key!r}]"
            + (f" with split {split!r}." if split is not None else ".")
        )
    classes = [str(c) for c in record.get("classes", [])]
    if isinstance(predicted.dtype, pd.CategoricalDtype):
        classes += [str(c) for c in predicted.cat.categories if str(c) not in classes]
    true = labels[cells].astype(str).to_numpy()
    pred = predicted[cells].astype(str).to_numpy()
    classes += sorted(set(pred) - set(classes))
    rows = [c for c in classes if c in set(true)] + sorted(set(true) - set(classes))
    counts = np.zeros((len(rows), len(classes)))
    np.add.at(counts, (pd.Index(rows).get_indexer(true), pd.Index(classes).get_indexer(pred)), 1)
    table = pd.DataFrame(counts, index=pd.Index(rows, name="true"),
                         columns=pd.Index(classes, name="predicted"))
    if normalize:
        return table.div(table.sum(axis=1), axis=0)
    return table


@doc_show_return_fig
def confusion(
    mdata: MuData,
    labels_key: str | None = None,
    *,
    key: str = DEFAULT_KEY,
    normalize: bool = True,
    split: str | None = None,
    annotate: bool | None = None,
    cmap: str = "Blues",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Confusion matrix of the predicted classes against known labels.

    Reads ``mdata.obs[f"{key}_prediction"]``, the classes in ``mdata.uns[key]`` and
    ``mdata.obs[labels_key]`` (cells without a label are left out); with ``split``, also
    ``mdata.obs[f"{key}_split"]``. Rows are the true labels, columns the predicted classes;
    a label the model does not know gets a row of its own below the classes.

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit` or :func:`mmdyn_sc.tl.predict`.
    labels_key
        Column of ``mdata.obs`` with the true labels (default: the fit's labels column,
        ``uns[key]["labels_key"]``).
    key
        The fit's ``key_added``.
    normalize
        Divide each row by its number of cells (rows sum to 1); else counts.
    split
        Only cells of this split (e.g. ``"validation"``); default all labelled cells.
    annotate
        Write the values in the cells; default when the matrix is at most
        20 x 20.
    cmap
        Colour map.
    ax
        Axes to draw into (default: a new figure).
    {show_return_fig}

    Returns
    -------
    :class:`~matplotlib.axes.Axes`, :class:`~matplotlib.figure.Figure` or None
        The Axes, or the Figure with ``return_fig=True``; ``None`` when the plot is shown.
    """
    labels_key = labels_column(mdata, labels_key, fit_record(mdata, key), "labels_key")
    table = confusion_table(mdata, labels_key, key=key, split=split, normalize=normalize)
    values = table.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    if annotate is None:
        annotate = max(n_rows, n_cols) <= ANNOTATE_MAX
    size = 0.42 if annotate else 0.25
    fig, ax = new_axes(ax, figsize=(size * n_cols + 3.2, size * n_rows + 2.4))
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)
    image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks(np.arange(n_cols), labels=list(table.columns), rotation=90)
    ax.set_yticks(np.arange(n_rows), labels=list(table.index))
    ax.set_xlabel(f"predicted ({Key.obs.prediction(key)})")
    ax.set_ylabel(f"true ({labels_key})")
    if annotate:
        fontsize = 8 if max(n_rows, n_cols) <= 14 else 7
        for i in range(n_rows):
            for j in range(n_cols):
                value = values[i, j]
                if value == 0:
                    continue
                if not normalize:
                    text = f"{int(value)}"
                else:
                    text = "1" if value == 1 else f"{value:.2f}".lstrip("0")
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                        color="white" if value > 0.6 * vmax else "black")
    title = "confusion matrix" + (" (row-normalised)" if normalize else "")
    ax.set_title(title if split is None else f"{title}, {split} cells")
    fig.colorbar(image, ax=ax, label="fraction of true label" if normalize else "cells",
                 shrink=0.8)
    return finish(fig, ax, show, return_fig)
