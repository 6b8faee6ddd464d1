"""Small helpers shared across the package."""

from __future__ import annotations

import contextlib
import logging
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
    """``mdata.copy()`` without mudata 0.3 pulling modality columns into the copy's ``.obs``."""
    with mudata_options():
        return mdata.copy()


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
