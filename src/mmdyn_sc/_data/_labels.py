"""Finding the label column of a MuData and encoding it against a class list."""

from __future__ import annotations

import numpy as np
import pandas as pd
from mudata import MuData

from ._validation import duplicate_names, examples, suggest


def _available_label_columns(mdata: MuData) -> list[str]:
    cols = [str(c) for c in mdata.obs.columns]
    for mod, adata in mdata.mod.items():
        cols += [f"{mod}:{c}" for c in adata.obs.columns]
    return cols


def _modality_column(mdata: MuData, mod: str, column: str) -> pd.Series:
    """Column of ``mdata.mod[mod].obs`` indexed by the global cells (missing where absent)."""
    duplicates = duplicate_names(mdata.mod[mod].obs_names)
    if duplicates:
        raise ValueError(
            f"Modality {mod!r} has {len(duplicates)} duplicate cell name(s) (obs_names): "
            f"{examples(duplicates)}; its column {column!r} cannot be matched to cells."
        )
    return mdata.mod[mod].obs[column].reindex(mdata.obs_names)


def resolve_labels(mdata: MuData, labels_key: str) -> pd.Series:
    """Return the label column of ``mdata`` indexed by the global cells.

    The column is looked up in ``mdata.obs``; else as ``"mod:column"`` in that modality's
    ``.obs``; else in the single modality whose ``.obs`` has it. Cells that a modality does
    not cover get a missing label.

    Raises
    ------
    KeyError
        If no such column exists (the message lists the available ones), or several
        modalities hold it with different values.
    """
    if not isinstance(labels_key, str):
        raise TypeError(f"labels_key must be a column name (str), got {type(labels_key).__name__}.")
    if labels_key in mdata.obs.columns:
        return mdata.obs[labels_key]
    if ":" in labels_key:
        mod, col = labels_key.split(":", 1)
        if mod in mdata.mod and col in mdata.mod[mod].obs.columns:
            return _modality_column(mdata, mod, col)
    holders = [mod for mod, adata in mdata.mod.items() if labels_key in adata.obs.columns]
    if len(holders) == 1:
        return _modality_column(mdata, holders[0], labels_key)
    if len(holders) > 1:
        columns = [_modality_column(mdata, m, labels_key) for m in holders]
        merged = columns[0].astype(object)
        for other in columns[1:]:
            other = other.astype(object)
            both = merged.notna() & other.notna()
            if (merged[both] != other[both]).any():
                raise KeyError(
                    f"Labels key {labels_key!r} is present in modalities {holders} with different "
                    f"values; name one of them as 'mod:{labels_key}'."
                )
            merged = merged.where(merged.notna(), other)
        return merged
    available = _available_label_columns(mdata)
    raise KeyError(
        f"Labels key {labels_key!r} not found in mdata.obs or in any modality's .obs. "
        f"Available columns: {available}." + suggest(labels_key, available)
    )


def class_list(labels: pd.Series) -> list[str]:
    """Classes of a label column as strings: category order if categorical, else sorted."""
    present = labels[labels.notna()]
    if isinstance(labels.dtype, pd.CategoricalDtype):
        used = set(present.astype(object))
        classes = [c for c in labels.cat.categories if c in used]
    else:
        classes = sorted(pd.unique(present.astype(object)), key=str)
    return [str(c) for c in classes]


def encode_labels(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """Integer code of each label in ``classes``; -1 where missing.

    Raises
    ------
    ValueError
        If a non-missing label is not one of ``classes``.
    """
    values = labels.astype(object)
    known = values.notna().to_numpy()
    as_str = values[known].map(str)
    categorical = pd.Categorical(as_str, categories=classes)
    codes = np.full(len(labels), -1, dtype=np.int64)
    codes[known] = categorical.codes
    unknown = set(as_str[categorical.codes == -1])
    if unknown:
        raise ValueError(
            f"Labels {sorted(unknown)} are not among the model's classes {classes}."
        )
    return codes
