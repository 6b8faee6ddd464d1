"""Reading a matrix by blocks of rows, in memory or backed on disk (an h5mu opened backed)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import sparse

#: Rows read at a time: bounds the temporary memory of a pass over a large matrix.
ROW_CHUNK = 16384


def is_backed(matrix) -> bool:
    """Whether ``matrix`` lives on disk: anndata's backed sparse dataset or an h5py dataset."""
    if isinstance(matrix, np.ndarray) or sparse.issparse(matrix):
        return False
    try:
        from anndata.abc import CSCDataset, CSRDataset
    except ImportError:  # pragma: no cover - anndata < 0.10
        from anndata.experimental import CSCDataset, CSRDataset
    import h5py

    return isinstance(matrix, CSRDataset | CSCDataset | h5py.Dataset)


def row_blocks(matrix, rows: np.ndarray | None = None,
               chunk: int = ROW_CHUNK) -> Iterator[np.ndarray | sparse.csr_matrix]:
    """Blocks of ``matrix[rows]`` (all rows when ``None``), ``chunk`` rows at a time.

    Each block is an in-memory ``numpy`` array or CSR matrix; a backed matrix is read from
    disk block by block, with the row indices sorted as h5py needs (``rows`` is taken in
    sorted order: use this for order-free reductions only).
    """
    n_rows = matrix.shape[0]
    if rows is None:
        for start in range(0, n_rows, chunk):
            yield _read(matrix, slice(start, min(start + chunk, n_rows)))
        return
    rows = np.sort(np.asarray(rows))
    for start in range(0, len(rows), chunk):
        yield _read(matrix, rows[start : start + chunk])


def _read(matrix, index):
    block = matrix[index]
    return block.tocsr() if sparse.issparse(block) else np.asarray(block)
