"""``pp.prepare``: per-cell normalisation of each modality into a layer."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
from mudata import MuData
from scipy import sparse

from .._data import check_finite, check_modalities
from .._data._validation import check_nonnegative
from .._keys import PREPARED_LAYER
from .._utils import copy_mudata, layer_names, logger

KINDS = ("rna", "protein", "none")
_KIND_BY_NAME = {
    "rna": "rna", "gex": "rna", "mrna": "rna",
    "prot": "protein", "protein": "protein", "adt": "protein",
}


def _kind(mod: str, kinds: Mapping[str, str]) -> str:
    kind = kinds.get(mod, _KIND_BY_NAME.get(mod.lower()))
    if kind is None:
        raise ValueError(
            f"Cannot tell how to normalise modality {mod!r}: pass kinds={{{mod!r}: ...}} with "
            f"one of {KINDS}."
        )
    if kind not in KINDS:
        raise ValueError(f"kinds[{mod!r}] must be one of {KINDS}, got {kind!r}.")
    return kind


def _counts(adata: ad.AnnData, layer: str | None, where: str):
    matrix = adata.X if layer is None else adata.layers.get(layer)
    if matrix is None:
        raise KeyError(
            f"{where}: no counts found (layer {layer!r}; available: {layer_names(adata)})."
        )
    check_finite(matrix, where)
    check_nonnegative(matrix, where)
    matrix = matrix.astype(np.float32, copy=True)
    return matrix


def _normalise(matrix, kind: str, target_sum: float | None):
    import scanpy as sc

    tmp = ad.AnnData(X=matrix)
    if kind == "rna":
        sc.pp.normalize_total(tmp, target_sum=target_sum)
        sc.pp.log1p(tmp)
    elif kind == "protein":
        if sparse.issparse(tmp.X):
            tmp.X = tmp.X.toarray()  # protein panels are small; CLR is dense anyway
        # muon reads scanpy.__version__ (deprecated) on import and in clr
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*__version__.*", category=FutureWarning)
            import muon as mu

            mu.prot.pp.clr(tmp, axis=1)
    return tmp.X


def prepare(
    mdata: MuData,
    *,
    modalities: Sequence[str] | None = None,
    kinds: Mapping[str, str] | None = None,
    counts_layer: str | Mapping[str, str | None] | None = None,
    target_sum: float | None = 1e4,
    layer_added: str = PREPARED_LAYER,
    copy: bool = False,
) -> MuData | None:
    """Normalise each modality per cell into a layer; the counts stay untouched.

    RNA: total-count normalisation to ``target_sum`` and ``log1p`` (scanpy). Protein:
    centred log-ratio per cell (muon's implementation, ``axis=1``). ``"none"``: copied as
    is. Scalings that depend on which cells are present (min-max, z-score) are not done here:
    the model fits them on its training cells (``feature_scaling`` of :func:`mmdyn_sc.tl.fit`)
    and reapplies them in :func:`mmdyn_sc.tl.predict`.

    Parameters
    ----------
    mdata
        MuData holding raw counts.
    modalities
        Modalities to prepare (default: all with features; an image modality, whose ``.X``
        has no features, is left alone).
    kinds
        ``"rna"``, ``"protein"`` or ``"none"`` per modality; by default guessed from the name
        (rna/gex/mrna: rna; prot/protein/adt: protein).
    counts_layer
        Layer holding the counts (one name, or per modality); ``None``: ``.X``.
    target_sum
        Total counts per cell after RNA normalisation.
    layer_added
        Layer written into each modality.
    copy
        Return a prepared copy instead of changing ``mdata``.

    Returns
    -------
    :class:`~mudata.MuData` or None
        The prepared copy with ``copy=True``, else ``None``. Sets
        ``mdata[mod].layers[layer_added]`` (float32) for each modality.

    Raises
    ------
    ValueError
        For negative, NaN or infinite values in the counts.
    """
    if modalities is None:  # image modalities (no features, images in .obsm) need nothing
        modalities = [m for m in mdata.mod if mdata.mod[m].n_vars > 0] or None
    modalities = check_modalities(mdata, modalities)
    kinds = dict(kinds or {})
    target = copy_mudata(mdata) if copy else mdata
    for mod in modalities:
        kind = _kind(mod, kinds)
        layer = counts_layer.get(mod) if isinstance(counts_layer, Mapping) else counts_layer
        adata = target.mod[mod]
        where = f"modality {mod!r} " + ("X" if layer is None else f"layer {layer!r}")
        matrix = _counts(adata, layer, where)
        adata.layers[layer_added] = _normalise(matrix, kind, target_sum)
        logger.info("added mod[%r].layers[%r] (%s)", mod, layer_added, kind)
    return target if copy else None
