"""Resolving what a model reads from a MuData: modalities, layers, features, classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from mudata import MuData

from .._data import check_modalities
from .._data._images import IMAGE_KEY, check_image_modality, check_image_size, image_spec
from .._data._labels import class_list, encode_labels, resolve_labels
from .._data._validation import (
    check_modality_cells,
    check_unique_cells,
    check_unique_features,
    duplicate_names,
    examples,
)
from .._keys import PREPARED_LAYER
from .._utils import layer_names, logger


def holds_images(adata, image_key: str = IMAGE_KEY) -> bool:
    """Whether ``adata`` is an image modality for training: its ``.obsm`` holds ``image_key``."""
    return isinstance(image_key, str) and image_key in adata.obsm


def resolve_images(
    mdata: MuData,
    modalities: Sequence[str],
    image_key: str = IMAGE_KEY,
    images: Mapping[str, Mapping] | None = None,
) -> dict[str, dict]:
    """Image modalities and what the model reads from each (see ``image_spec``).

    Without ``images`` (training), a modality is an image modality when its ``.obsm`` holds
    ``image_key``; its images are checked (4-D, numeric, in range, square). With ``images``
    (a trained model's record), exactly those modalities are image modalities, and each one
    present in ``mdata`` must hold images of the recorded channel count and size.
    """
    if images is not None:
        resolved = {m: dict(spec) for m, spec in images.items() if m in modalities}
        for mod, spec in resolved.items():
            if mod in mdata.mod:
                found = check_image_modality(mdata.mod[mod], spec["obsm_key"],
                                             channels=spec["channels"])
                check_image_size(found, f"modality {mod!r} obsm[{spec['obsm_key']!r}]",
                                 spec["image_size"])
        return resolved
    if not isinstance(image_key, str) or not image_key:
        raise ValueError(f"image_key must be a non-empty string, got {image_key!r}.")
    resolved = {}
    for mod in modalities:
        adata = mdata.mod[mod]
        if holds_images(adata, image_key):
            found = check_image_modality(adata, image_key)
            check_image_size(found, f"modality {mod!r} obsm[{image_key!r}]")
            resolved[mod] = image_spec(found, image_key)
    return resolved


def resolve_layers(
    mdata: MuData,
    modalities: Sequence[str],
    layers: Mapping[str, str | None] | None,
    image_modalities: Sequence[str] = (),
) -> dict[str, str | None]:
    """Layer per modality: as given, else the layer of :func:`mmdyn_sc.pp.prepare`, else X.

    Image modalities read ``.obsm``: they take no layer.
    """
    layers = dict(layers or {})
    unknown = set(layers) - set(modalities)
    if unknown:
        raise KeyError(f"layers names modalities that are not used: {sorted(unknown)}.")
    given_for_images = [m for m in image_modalities if layers.get(m) is not None]
    if given_for_images:
        raise ValueError(f"layers names image modalities {given_for_images}; their images are "
                         "read from .obsm (see image_key), not from a layer.")
    resolved = {}
    for mod in modalities:
        if mod in image_modalities:
            layer = None
        elif mod in layers:
            layer = layers[mod]
            if layer is not None and layer not in mdata.mod[mod].layers:
                raise KeyError(
                    f"Layer {layer!r} not found in modality {mod!r} "
                    f"(available: {layer_names(mdata.mod[mod])})."
                )
        elif PREPARED_LAYER in mdata.mod[mod].layers:
            layer = PREPARED_LAYER
            logger.info("modality %r: using layer %r from pp.prepare", mod, layer)
        else:
            layer = None
        resolved[mod] = layer
    return resolved


def resolve_features(
    mdata: MuData,
    modalities: Sequence[str],
    mask_var: Mapping[str, str] | None,
    image_modalities: Sequence[str] = (),
) -> dict[str, list[str]]:
    """Feature names per modality, restricted to ``var[mask_var[mod]]`` where given.

    Image modalities have none (an empty list): the model reads their images.
    """
    mask_var = dict(mask_var or {})
    unknown = set(mask_var) - set(modalities)
    if unknown:
        raise KeyError(f"mask_var names modalities that are not used: {sorted(unknown)}.")
    features = {}
    for mod in modalities:
        if mod in image_modalities:
            if mod in mask_var:
                raise ValueError(f"mask_var names the image modality {mod!r}, which has no "
                                 "features to select.")
            features[mod] = []
            continue
        adata = mdata.mod[mod]
        if adata.n_vars == 0:
            raise ValueError(f"Modality {mod!r} has no features (0 variables).")
        names = adata.var_names
        if mod in mask_var:
            column = mask_var[mod]
            if column not in adata.var.columns:
                raise KeyError(
                    f"mask_var column {column!r} not found in modality {mod!r}.var "
                    f"(available: {list(adata.var.columns)})."
                )
            mask = adata.var[column].to_numpy()
            if mask.dtype != bool:
                raise TypeError(f"{mod!r}.var[{column!r}] must be boolean, got {mask.dtype}.")
            if not mask.any():
                raise ValueError(f"{mod!r}.var[{column!r}] selects no feature.")
            names = names[mask]
        check_unique_features(names, mod)
        features[mod] = [str(n) for n in names]
    return features


def resolve_label_codes(
    mdata: MuData,
    labels_key: str | None,
    classes: Sequence[str] | None,
    labels_required: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """Integer label per global cell (-1: unlabeled) and the class list.

    With ``classes`` given (a trained model), labels are encoded against it; a missing label
    column is then allowed when ``labels_required`` is False (query data).
    """
    n_cells = mdata.n_obs
    if labels_key is None:
        if classes is None:
            raise ValueError("labels_key is required to train a model.")
        return np.full(n_cells, -1, dtype=np.int64), list(classes)
    try:
        labels = resolve_labels(mdata, labels_key)
    except KeyError:
        if classes is not None and not labels_required:
            return np.full(n_cells, -1, dtype=np.int64), list(classes)
        raise
    if classes is None:
        if labels.isna().all():
            raise ValueError(
                f"Labels key {labels_key!r}: all {n_cells} cells are unlabeled (missing values); "
                "at least two classes need labelled cells to train a classifier."
            )
        classes = class_list(labels)
        if len(classes) < 2:
            raise ValueError(
                f"Labels key {labels_key!r} has {len(classes)} class(es) among labelled cells "
                f"({classes}); at least two are needed to train a classifier."
            )
        return encode_labels(labels, classes), classes
    if labels_required:
        return encode_labels(labels, list(classes)), list(classes)
    # Query data: labels outside the model's classes are kept as unlabeled.
    known = labels.astype(object).where(labels.astype(object).isin(list(classes)), None)
    return encode_labels(known, list(classes)), list(classes)


def resolve_setup(
    mdata: MuData,
    labels_key: str | None,
    modalities: Sequence[str] | None,
    layers: Mapping[str, str | None] | None,
    mask_var: Mapping[str, str] | None,
    features: Mapping[str, Sequence[str]] | None,
    classes: Sequence[str] | None,
    labels_required: bool = True,
    image_key: str = IMAGE_KEY,
    images: Mapping[str, Mapping] | None = None,
) -> dict:
    """Everything a model needs to read ``mdata``, resolved and checked.

    ``labels_required`` is True for training data: then the label column must exist and the
    modalities must share cells (see :func:`~mmdyn_sc._data._validation.check_modality_cells`).
    For query data (False) each cell may hold any subset of the modalities. ``image_key`` and
    ``images``: see :func:`resolve_images`.

    Returns
    -------
    dict with ``modalities``, ``layers``, ``features``, ``classes``, ``images`` (all explicit,
    so that the same setup can be replayed on new data), ``absent`` (modalities of a trained
    model that the query lacks) and ``label_codes`` (per global cell, -1 unlabeled).

    Raises
    ------
    KeyError
        Unknown modality, layer, ``mask_var`` column or labels key (with close matches).
    ValueError
        Duplicate cell or feature names, an empty modality, modalities sharing no cell
        (training), no or a single labelled class (training).
    TypeError
        ``mdata`` is not a MuData, or a ``mask_var`` column is not boolean.
    """
    absent = []
    if not labels_required and features is not None and modalities is not None:
        # A query may lack whole modalities of a trained model: predicted from the others.
        absent = [m for m in modalities if isinstance(mdata, MuData) and m not in mdata.mod]
        if len(absent) == len(list(modalities)):
            raise KeyError(
                f"The MuData has none of the model's modalities {list(modalities)} "
                f"(it has {list(mdata.mod)})."
            )
    all_modalities = list(modalities) if modalities is not None else None
    modalities = check_modalities(mdata, [m for m in all_modalities if m not in absent]
                                  if all_modalities is not None else None)
    images = resolve_images(mdata, all_modalities if images is not None else modalities,
                            image_key, images)
    check_unique_cells(mdata, modalities)
    check_modality_cells(mdata, modalities, require_overlap=labels_required,
                         image_modalities=list(images))
    given_layers, given_features = dict(layers or {}), features
    if absent and layers is not None:
        layers = {m: layer for m, layer in given_layers.items() if m not in absent}
    layers = resolve_layers(mdata, modalities, layers, list(images))
    if features is None:
        features = resolve_features(mdata, modalities, mask_var, list(images))
    else:
        missing_mods = [m for m in modalities if m not in features]
        if missing_mods:
            raise KeyError(f"features lacks modalities {missing_mods}.")
        features = {m: [str(f) for f in features[m]] for m in modalities}
        for mod in modalities:
            if mod in images:
                continue
            if not features[mod]:
                raise ValueError(f"features[{mod!r}] is empty.")
            repeated = duplicate_names(pd.Index(features[mod]))
            if repeated:
                raise ValueError(f"features[{mod!r}] lists names twice: {examples(repeated)}.")
    label_codes, classes = resolve_label_codes(mdata, labels_key, classes, labels_required)
    if absent:  # the absent modalities keep the model's layers and features
        layers = {m: given_layers.get(m) if m in absent else layers[m] for m in all_modalities}
        features = {m: [str(f) for f in given_features[m]] if m in absent else features[m]
                    for m in all_modalities}
        modalities = all_modalities
    return {
        "absent": absent,
        "modalities": modalities,
        "layers": layers,
        "features": features,
        "classes": classes,
        "images": images,
        "label_codes": label_codes,
    }
