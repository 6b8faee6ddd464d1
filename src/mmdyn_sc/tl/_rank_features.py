"""``tl.rank_features``: a fit's per-class attribution in scanpy's ``rank_genes_groups`` layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
from mudata import MuData

from .._keys import CLASS_TABLES, DEFAULT_KEY, Key
from .._names import original_names, safe_names
from .._utils import check_not_image, logger


def rank_features(
    mdata: MuData,
    modality: str,
    *,
    key: str = DEFAULT_KEY,
    key_added: str | None = None,
    values: str = "attribution",
) -> None:
    """Rank each class's features by the fit's attribution, as ``sc.tl.rank_genes_groups``.

    Reads ``mdata[modality].varm[f"{key}_{values}"]`` (written by :func:`mmdyn_sc.tl.fit` or
    :func:`mmdyn_sc.tl.predict`) and stores, per class the model predicted for some
    attributed cell, every feature the model uses in decreasing order, in the layout of
    :func:`scanpy.tl.rank_genes_groups`, so that :func:`scanpy.get.rank_genes_groups_df`,
    :func:`scanpy.pl.rank_genes_groups_dotplot` and the other ``rank_genes_groups`` plots
    read it (e.g. ``sc.pl.rank_genes_groups_dotplot(mdata[modality], key=...,
    layer="mmdyn_prepared")`` shows the top features' values by predicted class).

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit` or :func:`mmdyn_sc.tl.predict`.
    modality
        A tabular modality of the fit.
    key
        The fit's ``key_added``.
    key_added
        Where the result goes in ``mdata[modality].uns`` (default ``f"{key}_rank_features"``).
    values
        ``"attribution"`` (the default explanation), ``"attribution_direct"`` or
        ``"feature_weights"`` (the gate values).

    Returns
    -------
    None
        Writes ``mdata[modality].uns[key_added]``, in ``rank_genes_groups``' layout:
        ``names`` and ``scores`` (record arrays, one field per class, best first),
        ``logfoldchanges``, ``pvals`` and ``pvals_adj`` (NaN, as this is not a test; a
        ``pval_cutoff`` in :func:`scanpy.get.rank_genes_groups_df` keeps nothing), and
        ``params`` with ``groupby`` (the column below), ``reference="rest"``,
        ``method=f"mmdyn_{values}"``, ``use_raw=False``. Also writes
        ``mdata[modality].obs[f"{key}_prediction"]``, the predicted class (a copy of
        ``mdata.obs[f"{key}_prediction"]`` for the modality's cells) with ``/`` in class
        names written as ``_`` as in the fit's ``obsm`` and ``varm`` columns
        (``rank_genes_groups`` uses the names as field names).
    """
    if not isinstance(mdata, MuData):
        raise TypeError(f"mdata must be a MuData, got {type(mdata).__name__}.")
    if modality not in mdata.mod:
        raise KeyError(f"modality {modality!r} is not in mdata (it has {list(mdata.mod)}).")
    if values not in CLASS_TABLES:
        raise ValueError(f"values must be one of {list(CLASS_TABLES)}, got {values!r}.")
    check_not_image(mdata, modality, key)
    adata = mdata.mod[modality]
    varm_key = CLASS_TABLES[values](key)
    if varm_key not in adata.varm:
        hint = (" (fit or predict with attribution=True writes it)"
                if values.startswith("attribution") else "")
        raise KeyError(f"mdata[{modality!r}].varm has no {varm_key!r}: run "
                       f"mmdyn_sc.tl.fit or tl.predict with key_added={key!r} first{hint}.")
    prediction_key = Key.obs.prediction(key)
    if prediction_key not in mdata.obs:
        raise KeyError(f"mdata.obs has no {prediction_key!r}: run mmdyn_sc.tl.fit or "
                       f"tl.predict with key_added={key!r} first.")
    table = pd.DataFrame(adata.varm[varm_key], index=adata.var_names)
    table = table.loc[table.notna().any(axis=1), table.notna().any(axis=0)]
    if table.empty:
        raise ValueError(f"mdata[{modality!r}].varm[{varm_key!r}] holds no value.")
    groups = [str(c) for c in table.columns]
    order = {g: np.argsort(-table[g].to_numpy(), kind="stable") for g in groups}
    names = np.rec.fromarrays([table.index.to_numpy(dtype=str)[order[g]] for g in groups],
                              names=groups)
    scores = np.rec.fromarrays([table[g].to_numpy(dtype=np.float32)[order[g]] for g in groups],
                               names=groups)
    empty = np.rec.fromarrays([np.full(len(table), np.nan, dtype=np.float32)] * len(groups),
                              names=groups)

    prediction = mdata.obs[prediction_key].reindex(adata.obs_names)
    categories = list(prediction.cat.categories)
    prediction = prediction.cat.rename_categories(safe_names(categories))
    adata.obs[prediction_key] = prediction
    key_added = key_added or f"{key}_rank_features"
    adata.uns[key_added] = {
        "params": {"groupby": prediction_key, "reference": "rest",
                   "method": f"mmdyn_{values}", "use_raw": False, "layer": "none",
                   "corr_method": "none", "classes": original_names(groups, categories)},
        "names": names, "scores": scores, "logfoldchanges": empty, "pvals": empty.copy(),
        "pvals_adj": empty.copy(),
    }
    logger.info("added\n    mod[%r].uns[%r]\n    mod[%r].obs[%r]", modality, key_added,
                modality, prediction_key)
