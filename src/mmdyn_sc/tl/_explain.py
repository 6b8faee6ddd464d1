"""``tl.explain``: which features drove each cell's predicted label."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from mudata import MuData

from .._utils import logger
from ..model import MMDynamics
from ..model._attribution import IG_BATCH, IG_STEPS
from ..model._seeding import kept_random_state

#: ``tl.explain``'s default ``max_cells``: cells returned in memory (above: ``path=``).
EXPLAIN_MAX_CELLS = 10_000


def select_cells(mdata: MuData, cells) -> np.ndarray:
    """Sorted positions in ``mdata`` of ``cells``, or a named error.

    ``cells``: ``None`` (all), a boolean mask of length ``n_obs``, obs names, or integer
    positions.
    """
    n = mdata.n_obs
    if cells is None:
        return np.arange(n)
    if isinstance(cells, str):
        cells = [cells]
    values = np.asarray(cells.to_numpy() if isinstance(cells, pd.Series | pd.Index) else cells)
    if values.ndim != 1:
        raise ValueError(f"cells must be one-dimensional, got shape {values.shape}.")
    if values.dtype == bool:
        if len(values) != n:
            raise ValueError(f"cells is a boolean mask of length {len(values)}, but mdata has "
                             f"{n} cells.")
        rows = np.flatnonzero(values)
    elif np.issubdtype(values.dtype, np.integer):
        bad = values[(values < 0) | (values >= n)]
        if len(bad):
            raise IndexError(f"cells holds positions outside 0..{n - 1}: {bad[:5].tolist()}.")
        rows = values.astype(np.int64)
    elif values.dtype.kind in "OUS":
        rows = mdata.obs_names.get_indexer(values.astype(str))
        if (rows < 0).any():
            missing = values[rows < 0][:5].tolist()
            raise KeyError(f"cells: {int((rows < 0).sum())} name(s) not in mdata.obs_names, "
                           f"e.g. {missing}.")
    else:
        raise TypeError(f"cells must be None, a boolean mask, obs names or integer positions, "
                        f"got an array of {values.dtype}.")
    if len(np.unique(rows)) != len(rows):
        raise ValueError("cells names some cells more than once.")
    if len(rows) == 0:
        raise ValueError("cells selects no cell.")
    return np.sort(rows)


def _check_modality(model: MMDynamics, mdata: MuData, modality: str | None) -> str:
    tabular = [m for m in model.modalities_ if m not in model.images_]
    if not tabular:
        raise ValueError("The model has image modalities only: their per-cell explanation is "
                         "the patch attribution (model.get_image_attribution, "
                         "pl.heatmaps(values='attribution')).")
    if modality is None:
        if len(tabular) != 1:
            raise ValueError(f"The model has the tabular modalities {tabular}: name one with "
                             "modality=.")
        modality = tabular[0]
    if modality not in model.modalities_:
        raise KeyError(f"modality {modality!r} is not one of the model's modalities "
                       f"{model.modalities_}.")
    if modality in model.images_:
        raise ValueError(f"modality {modality!r} is an image modality: its per-cell "
                         "explanation is the patch attribution (model.get_image_attribution, "
                         "pl.heatmaps(values='attribution')); name a tabular one of "
                         f"{tabular}.")
    if modality not in mdata.mod:
        raise KeyError(f"modality {modality!r} is not in mdata (it has {list(mdata.mod)}).")
    return modality


def _h5ad_writer(path: Path, n_cells: int, n_features: int):
    """An open h5py file with an (n_cells, n_features) float32 ``X`` to fill block by block."""
    import h5py

    handle = h5py.File(path, "w")
    x = handle.create_dataset("X", shape=(n_cells, n_features), dtype="float32",
                              chunks=(min(n_cells, 256), n_features))
    x.attrs["encoding-type"] = "array"
    x.attrs["encoding-version"] = "0.2.0"
    return handle, x


def _finish_h5ad(handle, obs: pd.DataFrame, var: pd.DataFrame, uns: dict) -> None:
    from anndata.io import write_elem

    write_elem(handle, "obs", obs)
    write_elem(handle, "var", var)
    write_elem(handle, "uns", uns)
    for empty in ("obsm", "varm", "obsp", "varp", "layers"):
        write_elem(handle, empty, {})
    handle.attrs["encoding-type"] = "anndata"
    handle.attrs["encoding-version"] = "0.1.0"
    handle.close()


@kept_random_state()  # data loaders draw from the global generators
def explain(
    mdata: MuData,
    model: MMDynamics,
    *,
    cells: Sequence | np.ndarray | pd.Index | None = None,
    modality: str | None = None,
    max_cells: int = EXPLAIN_MAX_CELLS,
    path: str | Path | None = None,
    batch_size: int = IG_BATCH,
) -> ad.AnnData:
    """Per-cell explanation: each feature's contribution to the cell's predicted class.

    For every selected cell, integrated gradients of the log probability of the class the
    model predicts for it, from the training mean of the input to the cell (16 steps; every
    tabular modality moves together, images stay as they are): a feature's value says how
    much its difference from an average training cell raised (positive) or lowered
    (negative) that log probability. Summed over the features of all tabular modalities it
    is about ``log p(prediction | cell) - log p(prediction | average cell)``. These are the
    cell-level values that :func:`mmdyn_sc.tl.fit` averages into
    ``varm["mmdyn_attribution_direct"]`` (without the credit to co-expressed features). They
    explain the network that made the call: for a model fitted with ``n_fits > 1``, its own
    (first) fit, not the extra fits that the per-class attribution also averages.

    Parameters
    ----------
    mdata
        MuData with the model's modalities (the training data or a query, as for
        :func:`mmdyn_sc.tl.predict`). Not changed.
    model
        A trained model.
    cells
        ``None`` (every cell), a boolean mask over ``mdata``'s cells, obs names, or integer
        positions. Results are in the order of ``mdata``'s cells.
    modality
        The tabular modality whose features are explained; may be left out when the model
        has only one.
    max_cells
        At most this many cells are returned in memory; more need ``path``.
    path
        Write the result to this ``.h5ad`` file block by block (any number of cells) and
        return it opened backed (``anndata.read_h5ad(path, backed="r")``). Peak memory then
        stays at about ``batch_size x 16`` rows of every modality's input and gradient
        (forward and backward passes), plus one block of the result, whatever the number of
        cells.
    batch_size
        Cells per block.

    Returns
    -------
    :class:`~anndata.AnnData`
        Cells x the modality's features of the model. ``X`` holds the contributions
        (float32; NaN rows for cells without the modality), ``obs["prediction"]`` the
        predicted class (categorical, the model's classes), ``obs["probability"]`` its
        probability, ``obs["attribution_sum"]`` the sum of the row and ``uns["explain"]``
        how it was computed.
    """
    if not isinstance(model, MMDynamics):
        raise TypeError(f"model must be an MMDynamics, got {type(model).__name__}.")
    if not isinstance(mdata, MuData):
        raise TypeError(f"mdata must be a MuData, got {type(mdata).__name__}.")
    modality = _check_modality(model, mdata, modality)
    rows = select_cells(mdata, cells)
    if not isinstance(max_cells, int | np.integer) or max_cells < 1:
        raise ValueError(f"max_cells must be a positive integer, got {max_cells!r}.")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if path is None and len(rows) > max_cells:
        raise ValueError(f"{len(rows)} cells selected, more than max_cells={max_cells}: pass "
                         "path= to write them block by block to an .h5ad file, select fewer "
                         "cells with cells=, or raise max_cells.")
    features = list(model.features_[modality])
    n, d = len(rows), len(features)
    classes = list(model.classes_)
    predicted = np.zeros(n, dtype=np.int64)
    probability = np.zeros(n, dtype=np.float32)
    totals = np.zeros(n, dtype=np.float32)
    handle = None
    if path is None:
        values = np.empty((n, d), dtype=np.float32)
    else:
        path = Path(path)
        if path.suffix != ".h5ad":
            raise ValueError(f"path must end in .h5ad, got {str(path)!r}.")
        handle, values = _h5ad_writer(path, n, d)
    try:
        for where, block, proba in model.attribution_blocks(mdata, rows, modality, batch_size):
            values[where] = block.astype(np.float32)
            predicted[where] = proba.argmax(1)
            probability[where] = proba.max(1)
            totals[where] = block.sum(1)
    except BaseException:
        if handle is not None:
            handle.close()
            path.unlink(missing_ok=True)
        raise
    obs = pd.DataFrame({
        "prediction": pd.Categorical.from_codes(predicted, categories=classes),
        "probability": probability,
        "attribution_sum": totals,
    }, index=pd.Index(mdata.obs_names[rows].astype(str), name=None))
    var = pd.DataFrame(index=pd.Index(features))
    uns = {"explain": {
        "modality": modality,
        "method": "integrated_gradients",
        "target": "log_softmax of the fused classifier at the predicted class",
        "baseline": "training mean of each tabular modality's input",
        "n_steps": IG_STEPS,
    }}
    if handle is None:
        return ad.AnnData(X=values, obs=obs, var=var, uns=uns)
    _finish_h5ad(handle, obs, var, uns)
    logger.info("wrote the explanation of %d cells to %s", n, path)
    return ad.read_h5ad(path, backed="r")
