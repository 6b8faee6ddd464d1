"""``pl.attribution``: each class's top features by the fit's attribution, as a matrix plot."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from mudata import MuData

from .._keys import CLASS_TABLES, DEFAULT_KEY
from .._names import original_names
from ._utils import doc_show_return_fig, finish, fit_record, varm_frame

#: Colour bar titles per ``values``.
TITLES = {"attribution": "attribution\n(log-prob.)",
          "attribution_direct": "direct attribution\n(log-prob.)",
          "feature_weights": "mean gate value"}


#: ``values`` that are means over the cells predicted as each class (their counts are shown).
AVERAGED = ("attribution", "attribution_direct")


def row_labels(classes: Sequence[str], record: dict, modality: str) -> list[str]:
    """Each class with the number of cells its attribution averages, ``"NK (16 cells)"``.

    From ``uns[key]["attribution"]["n_cells"][modality]``; a class without a count (a fit
    saved before the counts were stored) keeps its bare name.
    """
    stored = record.get("attribution", {}).get("n_cells", {}).get(modality, {})
    # keys as stored are the safe names of the classes (h5mu keys cannot hold "/")
    counts = dict(zip(original_names(list(stored), record.get("classes", [])),
                      stored.values(), strict=True))
    labels = []
    for c in classes:
        n = counts.get(c)
        labels.append(c if n is None else f"{c} ({int(n)} cell{'' if int(n) == 1 else 's'})")
    return labels


def top_features(table: pd.DataFrame, classes: Sequence[str], n_top: int) -> dict[str, list]:
    """Each class's ``n_top`` features with the highest values (NaN never), best first."""
    return {c: list(table[c].dropna().sort_values(ascending=False, kind="stable")
                    .index[:n_top]) for c in classes}


@doc_show_return_fig
def attribution(
    mdata: MuData,
    modality: str,
    *,
    n_top: int = 5,
    classes: Sequence[str] | None = None,
    values: str = "attribution",
    key: str = DEFAULT_KEY,
    gene_symbols: str | None = None,
    standard_scale: str | None = None,
    cmap: str | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs,
):
    """Classes x their top features by attribution, in scanpy's matrix-plot layout.

    Reads ``mdata[modality].varm[f"{key}_attribution"]`` (what :func:`mmdyn_sc.tl.fit` and
    :func:`mmdyn_sc.tl.predict` write: how much each feature raises the log probability of
    each class), takes each class's ``n_top`` features with the highest values and draws
    the values of every class for them, each class's features bracketed and labelled with
    the class, as :func:`scanpy.pl.rank_genes_groups_matrixplot` draws a Wilcoxon test's top
    genes. A feature high for its own class and low (blue) for the others is a marker as the
    model uses it; compare with ``sc.tl.rank_genes_groups`` on the same cells, which ranks
    by expression difference alone. Each row names the number of cells its class's values
    average (``uns[key]["attribution"]["n_cells"]``): read a class averaged over a handful of
    cells with care.

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit` or :func:`mmdyn_sc.tl.predict`.
    modality
        A tabular modality of the fit.
    n_top
        Features per class.
    classes
        Classes to show, in this order (default: every class with values, in the fit's
        order; original names such as ``"MK/E prog"``).
    values
        ``"attribution"`` (default), ``"attribution_direct"`` (without the credit to
        co-expressed features) or ``"feature_weights"`` (the mean gate values of the study).
    key
        The fit's ``key_added``.
    gene_symbols
        Column of ``mdata[modality].var`` with the names to label features with.
    standard_scale
        ``"var"`` or ``"group"``: scale each feature (each class) to 0-1, as scanpy does;
        default: the values as stored, on a colour scale centred on 0.
    cmap
        Colour map (default: ``"RdBu_r"`` centred on 0; ``"viridis"`` with
        ``standard_scale`` or for gate values).
    **kwargs
        Passed to :func:`scanpy.pl.matrixplot` (e.g. ``figsize``, ``swap_axes``, ``ax``).
    {show_return_fig}

    Returns
    -------
    dict, :class:`~matplotlib.figure.Figure` or None
        With ``return_fig=True`` the Figure; else, when the plot is not shown (e.g.
        ``show=False``), the dict of Axes of :func:`scanpy.pl.matrixplot`; ``None`` when it
        is shown.
    """
    import scanpy as sc

    record = fit_record(mdata, key)
    if values not in CLASS_TABLES:
        raise ValueError(f"values must be one of {list(CLASS_TABLES)}, got {values!r}.")
    if not isinstance(n_top, int | np.integer) or n_top < 1:
        raise ValueError(f"n_top must be a positive integer, got {n_top!r}.")
    if standard_scale not in (None, "var", "group"):
        raise ValueError(f"standard_scale must be None, 'var' or 'group', got "
                         f"{standard_scale!r}.")
    table = varm_frame(mdata, modality, CLASS_TABLES[values](key), key)
    table = table.set_axis(original_names(table.columns, record.get("classes", [])), axis=1)
    available = [c for c in table.columns if table[c].notna().any()]
    if classes is None:
        classes = available
    else:
        classes = [str(c) for c in classes]
        unknown = [c for c in classes if c not in table.columns]
        if unknown:
            raise KeyError(f"classes {unknown} are not classes of the fit {list(table.columns)}.")
        empty = [c for c in classes if c not in available]
        if empty:
            raise ValueError(f"classes {empty} have no values (no attributed cell was "
                             "predicted as them).")
    if not classes:
        name = CLASS_TABLES[values](key)
        raise ValueError(f"mdata[{modality!r}].varm[{name!r}] holds no value.")
    labels = table.index.astype(str)
    if gene_symbols is not None:
        var = mdata.mod[modality].var
        if gene_symbols not in var:
            raise KeyError(f"gene_symbols={gene_symbols!r} is not a column of "
                           f"mdata[{modality!r}].var.")
        labels = pd.Index(var[gene_symbols].reindex(table.index).astype(str))
    table = table.set_axis(pd.Index(labels), axis=0)
    table = table.loc[~table.index.duplicated()]
    chosen = top_features(table, classes, n_top)
    features = list(dict.fromkeys(f for fs in chosen.values() for f in fs))
    rows = row_labels(classes, record, modality) if values in AVERAGED else list(classes)
    grid = ad.AnnData(
        X=table.loc[features, classes].to_numpy(dtype=np.float32).T,
        obs=pd.DataFrame({"class": pd.Categorical(rows, categories=rows)},
                         index=[f"class{i}" for i in range(len(classes))]),
        var=pd.DataFrame(index=pd.Index(features)),
    )
    grid.X = np.nan_to_num(grid.X)
    if cmap is None:
        cmap = "viridis" if standard_scale or values == "feature_weights" else "RdBu_r"
    if not standard_scale and values != "feature_weights" and "vmin" not in kwargs:
        limit = float(np.abs(grid.X).max()) or 1.0
        kwargs = {"vmin": -limit, "vmax": limit, **kwargs}
    plot = sc.pl.matrixplot(grid, chosen, groupby="class", standard_scale=standard_scale,
                            cmap=cmap, colorbar_title=TITLES[values], show=False,
                            return_fig=True, **kwargs)
    plot.make_figure()
    return finish(plot.fig, plot.get_axes(), show, return_fig)
