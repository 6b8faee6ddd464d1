"""Checks on user input that name the modality, key or cell count at fault."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from mudata import MuData
from scipy import sparse

#: How many offending names an error message shows.
N_EXAMPLES = 10


def suggest(name: str, choices: Sequence[str]) -> str:
    """Return ' Did you mean ...?' for close matches of ``name`` in ``choices``, or ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3, cutoff=0.6)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def examples(names: Sequence, n: int = N_EXAMPLES) -> str:
    """``names`` as a short list for an error message: the first ``n``, then '...'."""
    names = [str(x) for x in names]
    return str(names[:n])[:-1] + (", ...]" if len(names) > n else "]")


def duplicate_names(index: pd.Index) -> list[str]:
    """Names that occur more than once in ``index``, each listed once, in order of appearance."""
    if index.is_unique:
        return []
    return [str(x) for x in index[index.duplicated()].unique()]


def check_unique_cells(mdata: MuData, modalities: Sequence[str]) -> None:
    """Raise if a modality or ``mdata`` itself has duplicate cell names (obs_names).

    Cells are matched across modalities by name, so a name must identify one cell.
    """
    for mod in modalities:
        duplicates = duplicate_names(mdata.mod[mod].obs_names)
        if duplicates:
            raise ValueError(
                f"Modality {mod!r} has {len(duplicates)} duplicate cell name(s) (obs_names): "
                f"{examples(duplicates)}. Cells are matched across modalities by name; make "
                f"them unique, e.g. with mdata[{mod!r}].obs_names_make_unique()."
            )
    duplicates = duplicate_names(mdata.obs_names)
    if duplicates:
        raise ValueError(
            f"mdata has {len(duplicates)} duplicate cell name(s) (obs_names): "
            f"{examples(duplicates)}. Make them unique, e.g. with mdata.obs_names_make_unique()."
        )


def check_unique_features(names: pd.Index, mod: str, among: Sequence[str] | None = None) -> None:
    """Raise if feature names of modality ``mod`` repeat (only those in ``among``, if given).

    The same name in two modalities (a gene and its protein) is fine; within one modality a
    name must identify one feature.
    """
    duplicates = duplicate_names(names)
    if among is not None:
        wanted = {str(f) for f in among}
        duplicates = [d for d in duplicates if d in wanted]
    if duplicates:
        raise ValueError(
            f"Modality {mod!r} has {len(duplicates)} duplicate feature name(s) (var_names): "
            f"{examples(duplicates)}. Make them unique, e.g. with "
            f"mdata[{mod!r}].var_names_make_unique()."
        )


def check_modality_cells(
    mdata: MuData,
    modalities: Sequence[str],
    require_overlap: bool = True,
    image_modalities: Sequence[str] = (),
) -> None:
    """Raise if a modality is empty, holds none of ``mdata``'s cells, or shares no cell.

    Parameters
    ----------
    mdata
        The data.
    modalities
        Modalities to check.
    require_overlap
        Training data: modalities must be linked by shared cells (directly or through other
        modalities); a group of modalities whose cells overlap none of the others' is an
        error naming one modality of each side and their cell counts. Query data may hold
        each cell in any subset of the modalities.
    """
    obs_names = mdata.obs_names
    membership = {}
    for mod in modalities:
        adata = mdata.mod[mod]
        if adata.n_obs == 0:
            raise ValueError(
                f"Modality {mod!r} has no cells (0 observations), so it shares no cells with "
                "mdata.obs_names; drop it or pass modalities=[...] without it."
            )
        if adata.n_vars == 0 and mod not in image_modalities:
            raise ValueError(
                f"Modality {mod!r} has no features (0 variables); drop it or pass "
                "modalities=[...] without it."
            )
        inside = obs_names.isin(adata.obs_names)
        if not inside.any():
            raise ValueError(
                f"Modality {mod!r} shares no cells with mdata.obs_names ({adata.n_obs} cells in "
                f"the modality, {len(obs_names)} in mdata); call mdata.update() after editing "
                "a modality."
            )
        membership[mod] = inside
    if not require_overlap or len(modalities) < 2:
        return
    groups = _overlap_groups(list(modalities), membership)
    if len(groups) > 1:
        first, second = groups[0][0], groups[1][0]
        detail = "" if len(groups) == 2 and len(modalities) == 2 else (
            f" Groups of modalities sharing no cell with each other: {groups}."
        )
        raise ValueError(
            f"Modalities {first!r} ({int(membership[first].sum())} cells) and {second!r} "
            f"({int(membership[second].sum())} cells) share no cell: the model learns to combine "
            "modalities from cells measured in several of them. Match cell names (obs_names) "
            "across modalities, or train on fewer modalities." + detail
        )


def _overlap_groups(modalities: list[str], membership: dict[str, np.ndarray]) -> list[list[str]]:
    """Modalities grouped by shared cells (connected components), in the given order."""
    # Distinct groups never share a cell, so a modality joins every group it touches.
    groups: list[tuple[list[str], np.ndarray]] = []
    for mod in modalities:
        mods, cells = [mod], membership[mod].copy()
        apart = []
        for group_mods, group_cells in groups:
            if (group_cells & cells).any():
                mods, cells = group_mods + mods, cells | group_cells
            else:
                apart.append((group_mods, group_cells))
        groups = apart + [(mods, cells)]
    order = {m: i for i, m in enumerate(modalities)}
    ordered = [sorted(mods, key=order.__getitem__) for mods, _ in groups]
    return sorted(ordered, key=lambda mods: order[mods[0]])


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


def _values(matrix) -> np.ndarray:
    return matrix.data if sparse.issparse(matrix) else np.asarray(matrix)


def check_numeric(matrix, where: str) -> None:
    """Raise ``TypeError`` unless ``matrix`` holds real numbers (bool, integer or float)."""
    dtype = matrix.dtype if hasattr(matrix, "dtype") else _values(matrix).dtype
    if not (dtype.kind == "b" or np.issubdtype(dtype, np.integer)
            or np.issubdtype(dtype, np.floating)):
        raise TypeError(
            f"{where} has non-numeric dtype {dtype}; store numbers, e.g. as "
            "matrix.astype(np.float32)."
        )


def check_finite(matrix, where: str) -> None:
    """Raise if ``matrix`` (dense, sparse or backed) is not numeric or holds NaN or inf.

    A backed (on-disk) matrix is read in blocks of rows.
    """
    from ._chunks import is_backed, row_blocks

    check_numeric(matrix, where)
    if not np.issubdtype(np.dtype(matrix.dtype), np.floating):
        return
    blocks = row_blocks(matrix) if is_backed(matrix) else [matrix]
    n_bad = sum(int((~np.isfinite(_values(block))).sum()) for block in blocks)
    if n_bad:
        raise ValueError(
            f"{where} contains {n_bad} NaN or infinite value(s); "
            "impute them, or drop those cells or features, first."
        )


def check_nonnegative(matrix, where: str) -> None:
    """Raise if ``matrix`` holds negative values where counts are expected."""
    values = matrix.data if sparse.issparse(matrix) else np.asarray(matrix)
    if values.size and values.min() < 0:
        raise ValueError(
            f"{where} contains negative values ({int((values < 0).sum())} entries) but raw counts "
            "are expected here. Pass the layer holding counts."
        )
