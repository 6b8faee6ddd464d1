"""Seeded, stratified train/validation split of the labelled cells."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, train_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split the labelled cells (label >= 0) per class into train and validation indices.

    Each class keeps ``round(train_size * n_class)`` cells for training, at least one; a class
    with a single cell goes to training. Unlabelled cells (-1) are in neither set.

    Returns
    -------
    Sorted train and validation indices into ``labels``.
    """
    if not 0.0 < train_size <= 1.0:
        raise ValueError(f"train_size must be in (0, 1], got {train_size}.")
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for code in np.unique(labels[labels >= 0]):
        idx = rng.permutation(np.flatnonzero(labels == code))
        n_train = max(1, int(round(train_size * len(idx))))
        train.append(idx[:n_train])
        validation.append(idx[n_train:])
    train_idx = np.sort(np.concatenate(train)) if train else np.array([], dtype=int)
    val_idx = np.sort(np.concatenate(validation)) if validation else np.array([], dtype=int)
    return train_idx, val_idx
