"""Class names made safe to write as keys of an ``.h5mu`` / ``.zarr`` store.

``tl.fit`` and ``tl.predict`` write class names as keys: the columns of
``obsm[f"{key}_proba"]`` and of each modality's ``varm[f"{key}_feature_weights"]`` (and the keys
of any dict stored in ``uns[key]``). HDF5 and zarr read a ``"/"`` in a key as a path separator:
anndata warns on writing such a key to ``.h5mu`` ("Forward slashes will be disallowed") and
refuses it in ``.zarr``. BMMC's ``"MK/E prog"`` and ``"G/M prog"`` are such names.

The rule (:func:`safe_names`), applied by every writer of class-named keys:

1. every name becomes a string, and every ``"/"`` in it becomes ``"_"``
   (``"MK/E prog"`` -> ``"MK_E prog"``);
2. ``"_index"`` (reserved by anndata for DataFrame columns) becomes ``"_index_2"``;
3. a name left unchanged by 1-2 keeps its name; a changed name that would equal another name
   gets the first free suffix ``"_2"``, ``"_3"``, ... (``["G_M", "G/M"]`` ->
   ``["G_M", "G_M_2"]``).

The result is unique and depends only on the list of names. The original names stay in
``uns[key]["classes"]``, in the order of the columns; :func:`original_names` maps stored
columns back to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

#: What replaces each forward slash of a class name.
SLASH_REPLACEMENT = "_"
#: DataFrame column names that anndata refuses to write.
RESERVED = ("_index",)


def _cleaned(name) -> str:
    text = str(name).replace("/", SLASH_REPLACEMENT)
    return f"{text}_2" if text in RESERVED else text


def safe_names(names: Iterable) -> list[str]:
    """Names safe to write as h5mu / zarr keys, one per name, in order (rule: module docstring).

    Parameters
    ----------
    names
        Class names (e.g. ``model.classes_`` or ``uns[key]["classes"]``), unique.

    Returns
    -------
    As many unique strings as ``names``; a name without ``"/"`` (and not ``"_index"``) is
    returned unchanged.
    """
    names = [str(n) for n in names]
    kept = [n == _cleaned(n) for n in names]
    taken: set[str] = set()
    out: list[str | None] = [None] * len(names)
    for i, name in enumerate(names):  # unchanged names first: they keep their name
        if kept[i] and name not in taken:
            out[i] = name
            taken.add(name)
    for i, name in enumerate(names):
        if out[i] is not None:
            continue
        base = candidate = _cleaned(name)
        suffix = 2
        while candidate in taken:
            candidate = f"{base}_{suffix}"
            suffix += 1
        out[i] = candidate
        taken.add(candidate)
    return out


def safe_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its column names made safe by :func:`safe_names` (a new DataFrame)."""
    return frame.set_axis(safe_names(frame.columns), axis=1)


def original_names(columns: Sequence, classes: Sequence) -> list[str]:
    """The original class names of stored columns named by :func:`safe_names`.

    Each column whose name is the safe name of one of ``classes`` (``uns[key]["classes"]``)
    gets that class's original name; other columns keep theirs.

    Parameters
    ----------
    columns
        Column names as stored, e.g. ``mdata.obsm["mmdyn_proba"].columns``.
    classes
        The original class names, ``mdata.uns["mmdyn"]["classes"]``.

    Returns
    -------
    One name per column, as strings.
    """
    classes = [str(c) for c in classes]
    original = dict(zip(safe_names(classes), classes, strict=True))
    return [original.get(str(c), str(c)) for c in columns]
