"""Align each modality of a MuData to the global cells, with a presence mask.

scvi-tools' loader indexes every registered modality by global cell position, which is only
right when all modalities hold the same cells in the same order. :func:`align_mudata` builds a
private, fully paired MuData for the model: each modality's chosen layer, restricted to the
model's features (in the model's order), with one row per global cell (zeros where the cell
lacks the modality) and a presence column per modality. Nothing is written into the user's
object; float32 and float64 matrices are shared, not copied, whenever no reordering is
needed (other numeric dtypes are converted to float32, other sparse formats to CSR). A
modality of an h5mu opened backed stays on disk when it is float CSR (or dense) over all
cells in order with exactly the model's features: the loader then reads minibatches from disk.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from mudata import MuData
from scipy import sparse

from .._utils import layer_names, logger, mudata_options
from ._chunks import is_backed
from ._images import (
    ALIGNED_IMAGE_KEY,
    absent_images,
    image_storage,
    reindex_images,
)
from ._validation import (
    check_finite,
    check_modality_cells,
    check_numeric,
    check_unique_cells,
    check_unique_features,
)

#: Column of the aligned copy's ``obs`` holding integer label codes (-1: no label).
LABELS_COLUMN = "_mmdyn_labels"
#: Column of the aligned copy flagging the held-out calibration cells of a fit (1.0), set by
#: :meth:`~mmdyn_sc.MMDynamics.train`.
CALIBRATION_COLUMN = "_mmdyn_calibration"


def presence_column(index: int) -> str:
    """Column of the aligned copy's ``obs`` that is 1 where a cell has modality ``index``."""
    return f"_mmdyn_present_{index}"


@dataclass
class AlignedData:
    """A private, fully paired MuData and what it was built from.

    Attributes
    ----------
    mdata
        One modality per requested modality, every one over ``obs_names`` (the user's global
        cells), plus ``obs[LABELS_COLUMN]``, ``obs[CALIBRATION_COLUMN]`` (zeros) and
        ``obs[presence_column(i)]``.
    present
        Boolean array (n_cells, n_modalities): cell has that modality.
    """

    mdata: MuData
    present: np.ndarray


def _get_matrix(adata: ad.AnnData, layer: str | None, where: str):
    if layer is None:
        if adata.X is None:
            raise ValueError(f"{where} has no .X; name a layer holding the data.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} not found in {where} (available: {layer_names(adata)})."
        )
    return adata.layers[layer]


def _feature_indexer(adata: ad.AnnData, features: Sequence[str], mod: str, where: str):
    """Position of each of ``features`` in ``adata.var_names``; duplicates elsewhere are fine."""
    names = adata.var_names
    check_unique_features(names, mod, among=features)
    if not names.is_unique:  # repeated names the model does not use
        names = names[~names.duplicated(keep=False)]
        positions = np.flatnonzero(~adata.var_names.duplicated(keep=False))
    else:
        positions = np.arange(adata.n_vars)
    idx = names.get_indexer(pd.Index(features))
    if (idx < 0).any():
        missing = [f for f, i in zip(features, idx, strict=True) if i < 0]
        raise KeyError(
            f"{where} lacks {len(missing)} of the model's features: {missing[:20]}"
            + (" ..." if len(missing) > 20 else "")
        )
    return positions[idx]


def _backed_or_loaded(matrix, aligned: bool, where: str):
    """A backed (on-disk) matrix kept on disk when the loader can read it as it is.

    That is CSR or dense, float32 or float64, with the modality's cells in ``mdata``'s order
    and exactly the model's features: then minibatches are read from disk and nothing is
    loaded whole. Otherwise the matrix is read into memory, with a warning saying why.
    """
    fmt = getattr(matrix, "format", "dense")
    reasons = []
    if not aligned:
        reasons.append("its cells or features differ from the model's (order, subset)")
    if fmt not in ("csr", "dense"):
        reasons.append(f"it is {fmt.upper()}, not CSR")
    if np.dtype(matrix.dtype) not in (np.float32, np.float64):
        reasons.append(f"its dtype is {matrix.dtype}, not float32")
    if not reasons:
        return matrix
    logger.warning("%s is backed but is read into memory: %s. Write it as float32 CSR with "
                   "all cells in mdata order to train from disk.", where, "; ".join(reasons))
    return matrix[:] if fmt == "dense" else matrix.to_memory()


def _as_model_input(matrix):
    """``matrix`` as float32 (or float64) and, when sparse, CSR; shared when it is already so.

    Integer, unsigned, bool and float16 inputs are converted once here, so that everything
    downstream (feature scaling, the loader) sees the same numbers whatever the input dtype,
    and small integer types cannot overflow. CSR keeps the loader's row slicing fast.
    """
    if sparse.issparse(matrix) and matrix.format != "csr":
        matrix = matrix.tocsr()
    if matrix.dtype in (np.float32, np.float64):
        return matrix
    return matrix.astype(np.float32)


def _reindex_rows(matrix, rows: np.ndarray, n_rows: int):
    """Rows of ``matrix`` placed at the positions of the global cells; zeros where rows < 0."""
    present = rows >= 0
    if sparse.issparse(matrix):
        # A selection matrix keeps the data sparse and never densifies the modality.
        selector = sparse.csr_matrix(
            (np.ones(present.sum(), dtype=matrix.dtype), (np.flatnonzero(present), rows[present])),
            shape=(n_rows, matrix.shape[0]),
        )
        return (selector @ sparse.csr_matrix(matrix)).tocsr()
    values = np.asarray(matrix[rows[present]])
    out = np.zeros((n_rows, matrix.shape[1]), dtype=values.dtype)
    out[present] = values
    return out


def _absent_modality(obs_names: pd.Index, features: Sequence[str]) -> ad.AnnData:
    """An all-zero (sparse) modality over ``obs_names``, for a modality the data lacks."""
    return ad.AnnData(
        X=sparse.csr_matrix((len(obs_names), len(features)), dtype=np.float32),
        obs=pd.DataFrame(index=obs_names.copy()),
        var=pd.DataFrame(index=pd.Index(list(features), dtype=str)),
    )


def _image_modality(images, obs_names: pd.Index) -> ad.AnnData:
    """An aligned image modality: no features, the images in ``obsm[ALIGNED_IMAGE_KEY]``."""
    adata = ad.AnnData(
        X=sparse.csr_matrix((len(obs_names), 0), dtype=np.float32),
        obs=pd.DataFrame(index=obs_names.copy()),
    )
    adata.obsm[ALIGNED_IMAGE_KEY] = images
    return adata


def _global_rows(adata: ad.AnnData, obs_names: pd.Index) -> tuple[np.ndarray, bool]:
    """Row of each global cell in ``adata`` (-1: absent); whether those are its rows in order."""
    rows = adata.obs_names.get_indexer(obs_names)
    return rows, len(rows) == adata.n_obs and np.array_equal(rows, np.arange(adata.n_obs))


def _align_images(adata: ad.AnnData, spec: Mapping, obs_names: pd.Index):
    """The image modality's images over the global cells, and the rows that have one.

    The images were checked when the setup was resolved (``resolve_images``).
    """
    images = image_storage(adata.obsm[spec["obsm_key"]])
    rows, same_rows = _global_rows(adata, obs_names)
    if not same_rows:
        images = reindex_images(images, rows, len(obs_names))
    return _image_modality(images, obs_names), rows >= 0


def align_mudata(
    mdata: MuData,
    modalities: Sequence[str],
    layers: Mapping[str, str | None],
    features: Mapping[str, Sequence[str]],
    label_codes: np.ndarray | None = None,
    absent: Sequence[str] = (),
    images: Mapping[str, Mapping] | None = None,
) -> AlignedData:
    """Build the private, fully paired MuData that the model trains and predicts on.

    Parameters
    ----------
    mdata
        The user's MuData; not modified.
    modalities
        Modality names, in the model's order.
    layers
        Layer per modality (``None``: ``.X``).
    features
        Feature names per modality, in the model's order; matched by name.
    label_codes
        Integer class code per global cell (-1: unlabeled). ``None``: all unlabeled.
    absent
        Modalities of ``modalities`` that ``mdata`` lacks altogether (a query without them):
        all-zero, absent for every cell.
    images
        Image modalities: per modality ``obsm_key``, ``channels`` and ``image_size`` (see
        :func:`~mmdyn_sc._data._images.image_spec`), already checked by
        ``resolve_images``. Their images, stored as ``uint8`` or ``float32``, go to
        ``obsm[ALIGNED_IMAGE_KEY]`` of an aligned modality without features (zero images
        where a cell has none).

    Returns
    -------
    The aligned data and the presence mask.
    """
    measured = [m for m in modalities if m not in absent]
    images = dict(images or {})
    check_unique_cells(mdata, measured)
    check_modality_cells(mdata, measured, require_overlap=False, image_modalities=list(images))
    obs_names = mdata.obs_names
    n_cells = len(obs_names)
    obs = pd.DataFrame(index=obs_names.copy())
    obs[LABELS_COLUMN] = (
        np.full(n_cells, -1.0, dtype=np.float32)
        if label_codes is None
        else np.asarray(label_codes, dtype=np.float32)
    )
    obs[CALIBRATION_COLUMN] = np.zeros(n_cells, dtype=np.float32)
    present = np.zeros((n_cells, len(modalities)), dtype=bool)
    mods = {}
    for i, mod in enumerate(modalities):
        if mod in images:
            spec = images[mod]
            if mod in absent:
                mods[mod] = _image_modality(
                    absent_images(n_cells, spec["channels"], spec["image_size"]), obs_names)
            else:
                mods[mod], present[:, i] = _align_images(mdata.mod[mod], spec, obs_names)
            obs[presence_column(i)] = present[:, i].astype(np.float32)
            continue
        if mod in absent:
            mods[mod] = _absent_modality(obs_names, features[mod])
            obs[presence_column(i)] = np.zeros(n_cells, dtype=np.float32)
            continue
        adata = mdata.mod[mod]
        where = f"modality {mod!r}" + ("" if layers.get(mod) is None else f" layer {layers[mod]!r}")
        matrix = _get_matrix(adata, layers.get(mod), where)
        if len(matrix.shape) != 2 or matrix.shape != adata.shape:
            raise ValueError(
                f"{where} must be a matrix of shape {adata.shape} (cells x features), got "
                f"shape {matrix.shape}."
            )
        check_numeric(matrix, where)
        if sparse.issparse(matrix) and matrix.format not in ("csr", "csc"):
            matrix = matrix.tocsr()  # COO and others cannot select columns
        cols = _feature_indexer(adata, features[mod], mod, where)
        rows, same_rows = _global_rows(adata, obs_names)
        present[:, i] = rows >= 0
        same_cols = len(cols) == adata.n_vars and np.array_equal(cols, np.arange(adata.n_vars))
        if is_backed(matrix):
            matrix = _backed_or_loaded(matrix, same_rows and same_cols, where)
        if not same_cols:
            matrix = matrix[:, cols]
        check_finite(matrix, where)
        matrix = _as_model_input(matrix)
        if not same_rows:
            matrix = _reindex_rows(matrix, rows, n_cells)
        mods[mod] = ad.AnnData(
            X=matrix,
            obs=pd.DataFrame(index=obs_names.copy()),
            var=pd.DataFrame(index=pd.Index(list(features[mod]), dtype=str)),
        )
        obs[presence_column(i)] = present[:, i].astype(np.float32)
    with mudata_options(), warnings.catch_warnings():
        # The same name in two modalities (a gene and its protein) is normal here.
        warnings.filterwarnings("ignore", message="var_names are not unique")
        warnings.filterwarnings("ignore", message="Cannot join columns with the same name")
        aligned = MuData(mods)
        aligned.obs = obs
    return AlignedData(mdata=aligned, present=present)
