"""Seeded, stratified train/validation split of the labelled cells."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .._utils import warn


def _class_name(code: int, classes: Sequence[str] | None) -> str:
    if classes is not None and 0 <= code < len(classes):
        return repr(str(classes[code]))
    return f"with code {code}"


def stratified_split(
    labels: np.ndarray, train_size: float, seed: int, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split the labelled cells (label >= 0) per class into train and validation indices.

    Each class keeps ``round(train_size * n_class)`` cells for training, at least one. A class
    with a single labelled cell cannot be stratified: its cell goes to training only, and,
    when a validation split is asked for (``train_size < 1``), a ``UserWarning`` names the
    class. Unlabelled cells (-1) are in neither set.

    Parameters
    ----------
    labels
        Integer class code per cell; -1 for unlabelled cells.
    train_size
        Fraction of each class's labelled cells used for training, in (0, 1].
    seed
        Seed of the per-class permutations.
    classes
        Class names, indexed by code, for the warning (default: the codes).

    Returns
    -------
    Sorted train and validation indices into ``labels``.
    """
    if not 0.0 < train_size <= 1.0:
        raise ValueError(f"train_size must be in (0, 1], got {train_size}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, validation, single = [], [], []
    for code in np.unique(labels[labels >= 0]):
        idx = rng.permutation(np.flatnonzero(labels == code))
        if len(idx) == 1:
            single.append(int(code))
        n_train = max(1, int(round(train_size * len(idx))))
        train.append(idx[:n_train])
        validation.append(idx[n_train:])
    if single and train_size < 1.0:
        names = [_class_name(code, classes) for code in single]
        subject = (f"Class {names[0]} has" if len(names) == 1
                   else f"Classes {', '.join(names)} have")
        warn(
            f"{subject} a single labelled cell: it is used for training only and excluded from "
            "the validation split (stratification needs at least two cells per class). Label "
            "more cells of that class for it to be validated."
        )
    train_idx = np.sort(np.concatenate(train)) if train else np.array([], dtype=int)
    val_idx = np.sort(np.concatenate(validation)) if validation else np.array([], dtype=int)
    return train_idx, val_idx


def calibration_split(
    labels: np.ndarray, train_idx: np.ndarray, size: float, seed: int
) -> np.ndarray:
    """Held-out calibration cells: a seeded per-class fraction ``size`` of ``train_idx``.

    Each class of the training cells gives ``n - max(1, round((1 - size) n))`` cells, so a
    class keeps at least one fitted cell (and a class of one or two cells usually gives none).

    Returns
    -------
    Sorted indices into ``labels``, a subset of ``train_idx``.
    """
    if not 0.0 < size < 1.0:
        raise ValueError(f"calibration size must be in (0, 1), got {size}.")
    train_idx = np.asarray(train_idx)
    with warnings.catch_warnings():  # a class with one training cell simply keeps it
        warnings.simplefilter("ignore", UserWarning)
        _, held = stratified_split(np.asarray(labels)[train_idx], 1.0 - size, seed)
    return np.sort(train_idx[held])
