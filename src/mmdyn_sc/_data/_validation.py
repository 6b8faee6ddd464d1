"""Checks on user input that name the modality, key or cell count at fault."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
from mudata import MuData
from scipy import sparse


def suggest(name: str, choices: Sequence[str]) -> str:
    """Return ' Did you mean ...?' for close matches of ``name`` in ``choices``, or ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3, cutoff=0.6)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def check_modalities(mdata: MuData, modalities: Sequence[str] | None) -> list[str]:
    """Return the requested modality names, checking that each exists in ``mdata.mod``."""
    if not isinstance(mdata, MuData):
        raise TypeError(f"Expected a MuData object, got {type(mdata).__name__}.")
    available = list(mdata.mod.keys())
    if modalities is None:
        modalities = available
    elif isinstance(modalities, str):
        modalities = [modalities]
    modalities = list(modalities)
    if len(modalities) == 0:
        raise ValueError("No modality given: pass at least one name from mdata.mod.")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"Modalities listed twice: {modalities}.")
    for mod in modalities:
        if mod not in mdata.mod:
            raise KeyError(
                f"Modality {mod!r} not found in mdata.mod (available: {available})."
                + suggest(mod, available)
            )
    return modalities


def check_finite(matrix, where: str) -> None:
    """Raise if ``matrix`` (dense or sparse) is not numeric or holds NaN or infinite values."""
    values = matrix.data if sparse.issparse(matrix) else np.asarray(matrix)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise TypeError(f"{where} has non-numeric dtype {values.dtype}.")
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"{where} contains {int(bad.sum())} NaN or infinite value(s); "
                "impute or drop them before fitting."
            )


def check_nonnegative(matrix, where: str) -> None:
    """Raise if ``matrix`` holds negative values where counts are expected."""
    values = matrix.data if sparse.issparse(matrix) else np.asarray(matrix)
    if values.size and values.min() < 0:
        raise ValueError(
            f"{where} contains negative values ({int((values < 0).sum())} entries) but raw counts "
            "are expected here. Pass the layer holding counts."
        )
