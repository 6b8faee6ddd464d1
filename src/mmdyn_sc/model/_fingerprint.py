"""A fingerprint of a fit (data, split, settings): what must match to resume a checkpoint."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import sparse

from .._data._chunks import is_backed, row_blocks
from .._data._images import ALIGNED_IMAGE_KEY


def _digest(*arrays) -> str:
    h = hashlib.sha1()
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def _matrix_digest(matrix) -> str:
    if is_backed(matrix):  # read from disk block by block
        h = hashlib.sha1()
        for block in row_blocks(matrix):
            h.update(_matrix_digest(block).encode())
        return h.hexdigest()[:16]
    if sparse.issparse(matrix):
        matrix = sparse.csr_matrix(matrix)
        return _digest(matrix.data, matrix.indices, matrix.indptr, np.asarray(matrix.shape))
    return _digest(np.asarray(matrix), np.asarray(matrix.shape))


def run_fingerprint(model, train_idx, val_idx, train_params: dict) -> dict[str, str]:
    """What identifies a fit of ``model``: one short string per item, compared on resumption.

    Items: model settings, modalities and features, classes, labels, training/validation
    split, training settings, and a digest of each modality's data.
    """
    params = model.init_params_.get("non_kwargs", {})
    out = {
        "model settings": repr(sorted((k, repr(v)) for k, v in params.items())),
        "modalities": repr(list(model.modalities_)),
        "features": _digest(np.array([f for m in model.modalities_ for f in model.features_[m]],
                                     dtype=str)),
        "classes": repr(list(model.classes_)),
        "labels": _digest(model.label_codes),
        "split": _digest(np.asarray(train_idx), np.asarray([-1]), np.asarray(val_idx)),
        "training settings": repr(sorted((k, repr(v)) for k, v in train_params.items())),
    }
    for mod in model.modalities_:
        adata = model.adata.mod[mod]
        data = adata.obsm[ALIGNED_IMAGE_KEY] if mod in model.images_ else adata.X
        out[f"data of {mod!r}"] = _matrix_digest(data)
    return out
