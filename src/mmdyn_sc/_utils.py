"""Small helpers shared across the package."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import mudata

logger = logging.getLogger("mmdyn_sc")


@contextlib.contextmanager
def mudata_options() -> Iterator[None]:
    """Silence mudata's ``pull_on_update`` warning inside our own functions only.

    mudata 0.3 warns on every ``update()`` unless ``pull_on_update`` is set; setting it globally
    would change the user's session, so it is set for the duration of the block. Versions
    without the option are left alone.
    """
    try:
        ctx = mudata.set_options(pull_on_update=False)
    except (KeyError, ValueError, TypeError, AttributeError):
        ctx = contextlib.nullcontext()
    with ctx:
        yield


def layer_names(adata) -> list[str]:
    """Names of ``adata.layers`` (anndata 0.13 also lists ``None``, an alias of ``.X``)."""
    return [k for k in adata.layers.keys() if k is not None]


def copy_mudata(mdata):
    """``mdata.copy()`` without mudata 0.3 pulling modality columns into the copy's ``.obs``.

    mudata 0.3 cannot copy (without pulling) a MuData whose ``.obs`` index is named unlike
    its modalities' (``mdata[cells].copy()`` drops the name, e.g. ``"barcode"``, from
    ``.obs`` but not from the modalities): the index is given the modalities' name for the
    copy, and both ``mdata`` and the copy get the name back that ``mdata`` had. mudata's
    warning that the global ``var_names`` are not unique (a gene and its protein named
    alike, as in CITE-seq) is not repeated: the copy has the names ``mdata`` has.
    """
    names = {a.obs.index.name for a in mdata.mod.values()}
    name = mdata.obs.index.name
    renamed = len(names) == 1 and name not in names
    try:
        if renamed:
            mdata.obs.index.name = next(iter(names))
        with mudata_options(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="var_names are not unique")
            copied = mdata.copy()
    finally:
        if renamed:
            mdata.obs.index.name = name
    if renamed:
        copied.obs.index.name = name
    return copied


def history_to_arrays(history) -> dict:
    """A Lightning/scvi-tools history (metric -> one-column DataFrame) as float arrays per epoch."""
    import numpy as np
    import pandas as pd

    out = {}
    for name, frame in (history or {}).items():
        if isinstance(frame, pd.DataFrame):
            frame = frame[name] if name in frame.columns else frame.iloc[:, 0]
        out[name] = np.asarray(frame, dtype=float).ravel()
    return out


def looks_like_counts(matrix, n_values: int = 10_000) -> bool:
    """Whether ``matrix`` (dense or sparse) looks like raw counts: non-negative integers.

    A seeded sample of up to ``n_values`` stored values is checked (a local generator: the
    global random state is not touched); all zeros, NaN or infinity are not counts.
    """
    import numpy as np
    from scipy import sparse

    if sparse.issparse(matrix):
        values = np.asarray(matrix.data).ravel()
    else:
        values = np.asarray(matrix).reshape(-1)
    if values.size == 0 or values.dtype.kind not in "biuf":
        return False
    if values.size > n_values:
        values = values[np.random.default_rng(0).choice(values.size, n_values, replace=False)]
    values = values.astype(np.float64)
    return bool(np.isfinite(values).all() and (values >= 0).all() and values.max() > 0
                and (values == np.round(values)).all())


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the user's line: the first caller outside ``mmdyn_sc``.

    A fixed ``stacklevel`` points at the right line only for one call path (``tl.fit`` ->
    ``MMDynamics.train`` -> helper differs from ``MMDynamics.train`` -> helper); this one
    skips the package's own frames instead, and those of :mod:`contextlib` (a context
    manager used as a decorator adds one).
    """
    import contextlib
    import os
    import sys
    import warnings

    skipped = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
               os.path.abspath(contextlib.__file__))
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skipped):
        level += 1
        frame = frame.f_back
    warnings.warn(message, category, stacklevel=level)


def check_not_image(mdata, modality: str, key: str) -> None:
    """Raise a named error when ``modality`` is an image modality of the fit ``key``.

    An image modality has no per-feature tables (``.varm``); its explanation is per patch.
    Read from ``mdata.uns[key]["images"]``, so that plotting needs no model.
    """
    images = (mdata.uns.get(key) or {}).get("images")
    if isinstance(images, dict) and modality in images:
        raise ValueError(
            f"mdata[{modality!r}] is an image modality of the fit {key!r}: it has no "
            f"per-feature tables. Its explanation is per patch, in "
            f"obsm[{key + '_heatmap'!r}] and obsm[{key + '_attribution'!r}]: draw them with "
            "mmdyn_sc.pl.heatmaps(values='gate' or 'attribution').")

