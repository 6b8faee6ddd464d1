"""Writing a model's per-cell and per-feature results into the user's MuData."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from mudata import MuData

from .._calibration import calibration_report
from .._keys import SPLIT_CATEGORIES, SPLIT_QUERY, SPLIT_VALIDATION, Key
from .._metrics import classification_metrics
from .._names import safe_columns, safe_names
from .._utils import history_to_arrays, logger
from ..model import MMDynamics, _certainty
from ..model._inference import InferenceResult
from ._confidence_report import confidence_report


def h5_safe(value):
    """Convert ``value`` into types that survive ``write_h5mu`` (``None`` becomes ``"none"``).

    The keys of every dict pass through :func:`mmdyn_sc._names.safe_names` (no ``"/"``).
    """
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        keys = safe_names(value.keys())
        return {k: h5_safe(v) for k, v in zip(keys, value.values(), strict=True)}
    if isinstance(value, list | tuple):
        if all(isinstance(v, str) for v in value):
            return np.asarray(value, dtype=object) if value else np.array([], dtype=object)
        if all(isinstance(v, bool | int | float | np.number) for v in value):
            return np.asarray(value)
        return {str(i): h5_safe(v) for i, v in enumerate(value)}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _safe(values):
    """A DataFrame with safe column names; anything else as it is."""
    return safe_columns(values) if isinstance(values, pd.DataFrame) else values


class ResultWriter:
    """Stores entries into a MuData and logs each key it adds (squidpy's ``_save_data``).

    Every DataFrame written into ``obsm`` / ``varm`` gets column names safe to write
    (:func:`mmdyn_sc._names.safe_columns`: class names such as ``MK/E prog``), and every dict
    written into ``uns`` safe keys (:func:`h5_safe`), so no writer has to remember it.
    """

    def __init__(self, mdata: MuData):
        self.mdata = mdata
        self.added: list[str] = []

    def obs(self, key: str, values) -> None:
        self.mdata.obs[key] = values
        self.added.append(f"obs[{key!r}]")

    def obsm(self, key: str, values) -> None:
        self.mdata.obsm[key] = _safe(values)
        self.added.append(f"obsm[{key!r}]")

    def mod_obsm(self, mod: str, key: str, values) -> None:
        self.mdata.mod[mod].obsm[key] = _safe(values)
        self.added.append(f"mod[{mod!r}].obsm[{key!r}]")

    def varm(self, mod: str, key: str, values) -> None:
        self.mdata.mod[mod].varm[key] = _safe(values)
        self.added.append(f"mod[{mod!r}].varm[{key!r}]")

    def var(self, mod: str, key: str, values) -> None:
        self.mdata.mod[mod].var[key] = values
        self.added.append(f"mod[{mod!r}].var[{key!r}]")

    def uns(self, key: str, values: dict) -> None:
        self.mdata.uns[key] = h5_safe(values)
        self.added.append(f"uns[{key!r}]")

    def log(self) -> None:
        logger.info("added\n    %s", "\n    ".join(self.added))


#: Label of cells below ``unknown_threshold`` in :func:`mmdyn_sc.tl.predict`.
UNKNOWN = "Unknown"


def prediction_column(
    proba: np.ndarray, classes: list[str], unknown_threshold: float | None,
    certainty: np.ndarray | None = None,
) -> pd.Categorical:
    """Most probable class per cell; :data:`UNKNOWN` below ``unknown_threshold``.

    Compared with ``certainty`` (default: the highest class probability).
    """
    predicted = proba.argmax(1)
    if unknown_threshold is None:
        return pd.Categorical.from_codes(predicted, categories=classes)
    score = proba.max(1) if certainty is None else certainty
    codes = np.where(score < unknown_threshold, len(classes), predicted)
    return pd.Categorical.from_codes(codes, categories=[*classes, UNKNOWN])


def all_labelled_metrics(label_codes: np.ndarray, unseen_class: np.ndarray, calls: np.ndarray,
                         classes: list[str]) -> dict:
    """Metrics over every labelled query cell.

    A cell of a class the model never saw is right only when called :data:`UNKNOWN`;
    ``n_labelled`` and ``n_unseen_class`` say how many cells there are.
    """
    known = label_codes >= 0
    rows = np.flatnonzero(known | unseen_class)
    truth = np.where(unseen_class[rows], UNKNOWN,
                     np.asarray(classes, dtype=object)[np.clip(label_codes[rows], 0, None)])
    return {**classification_metrics(truth.astype(str), calls[rows]),
            "n_labelled": int(len(rows)), "n_unseen_class": int(unseen_class.sum())}


def certainty_record(state: dict | None, certainty: np.ndarray, predicted: np.ndarray,
                     label_codes: np.ndarray, split: np.ndarray,
                     unseen_class: np.ndarray | None) -> dict:
    """What ``uns[key]["certainty"]`` records.

    The fitted state and its diagnostics, and on labelled query cells the same diagnostics
    (``query``: known classes; ``query_all``: cells of classes the model never saw counted
    as wrong calls).
    """
    if state is None:
        record = {"calibrated_on": "none: model saved before mmdyn_sc 0.2.0, certainty is the "
                                   "highest class probability"}
    else:
        # the latent prototypes stay with the model
        record = {k: v for k, v in state.items()
                  if k not in ("prototypes", "variance", "prototype_present")}
    query = np.flatnonzero((split == SPLIT_QUERY) & (label_codes >= 0))
    if len(query):
        record["query"] = calibration_report(certainty[query],
                                             predicted[query] == label_codes[query])
    if unseen_class is not None and unseen_class.any():
        rows = np.flatnonzero((label_codes >= 0) | unseen_class)
        correct = (predicted[rows] == label_codes[rows]) & ~unseen_class[rows]
        record["query_all"] = calibration_report(certainty[rows], correct)
    return record


def true_class_probability(
    result: InferenceResult, label_codes: np.ndarray, modalities: list[str], index: pd.Index
) -> pd.DataFrame:
    """TCP of each modality's classifier for labelled cells that have it; NaN elsewhere."""
    values = np.full((len(index), len(modalities)), np.nan)
    labelled = label_codes >= 0
    rows = np.flatnonzero(labelled)
    for m in range(len(modalities)):
        tcp = result.modality_proba[m][rows, label_codes[rows]]
        values[rows, m] = np.where(result.present[rows, m], tcp, np.nan)
    return pd.DataFrame(values, index=index, columns=modalities)


def image_record(model: MMDynamics, attribution: bool = False) -> dict:
    """What ``uns[key]["images"]`` records per image modality.

    ``obsm_key``, ``channels``, ``image_size``, ``patch_size`` (pixels of the stored image
    per patch side), ``grid_size`` (the heatmap is grid_size x grid_size), ``heatmap``
    (whether one was written: only with FI) and ``attribution`` (whether the patch
    attribution was written).
    """
    branches = {mod: model.module.branches[model.modalities_.index(mod)]
                for mod in model.images_}
    return {
        mod: {**spec, "patch_size": branches[mod].stored_patch_size,
              "grid_size": branches[mod].grid_size,
              "heatmap": bool(model.module.feature_informativeness),
              "attribution": bool(attribution)}
        for mod, spec in model.images_.items()
    }


def history_arrays(model: MMDynamics) -> dict[str, np.ndarray]:
    """The training history as one float array per metric (index = epoch)."""
    return history_to_arrays(getattr(model, "history_", None))


def write_results(
    mdata: MuData,
    model: MMDynamics,
    result: InferenceResult,
    key_added: str,
    split: np.ndarray,
    label_codes: np.ndarray,
    uns: dict,
    unknown_threshold: float | None = None,
    attribution: dict | None = None,
    unseen_class: np.ndarray | None = None,
) -> None:
    """Write every documented key of a fit or prediction into ``mdata`` and log them.

    Class-named columns (``obsm[f"{key_added}_proba"]``,
    ``varm[f"{key_added}_feature_weights"]``) get the names of
    :func:`mmdyn_sc._names.safe_names` through :class:`ResultWriter`, in the order of
    ``model.classes_`` (kept as they are in ``uns[key_added]["classes"]``). With
    ``unknown_threshold``, cells whose highest class
    probability is below it are labelled :data:`UNKNOWN` in the prediction column
    (probabilities and metrics unchanged). ``attribution`` describes ``result.attribution``
    (:func:`mmdyn_sc.model._attribution.describe`) when there is one. ``unseen_class``
    (query cells whose label is not a class of the model) adds ``metrics["query_all"]``.
    """
    writer = ResultWriter(mdata)
    index = mdata.obs_names
    classes = model.classes_
    predicted = result.proba.argmax(1)
    state = _certainty.model_state(model)
    certainty = _certainty.certainty(state, result)
    writer.obs(Key.obs.prediction(key_added),
               prediction_column(result.proba, classes, unknown_threshold, certainty))
    writer.obs(Key.obs.certainty(key_added), certainty.astype(np.float32))
    writer.obs(Key.obs.split(key_added), pd.Categorical(split, categories=SPLIT_CATEGORIES))
    writer.obsm(Key.obsm.proba(key_added), pd.DataFrame(result.proba, index=index,
                                                        columns=classes))
    writer.obsm(Key.obsm.confidence(key_added), model.confidence_frame(result, index))
    writer.obsm(Key.obsm.modality_certainty(key_added), pd.DataFrame(
        _certainty.modality_certainty(state, model.modalities_, result.modality_proba,
                                      result.present), index=index, columns=model.modalities_))
    tcp_predicted = model.predicted_tcp_frame(result, index)
    if tcp_predicted is not None:
        writer.obsm(Key.obsm.tcp_predicted(key_added), tcp_predicted)
    true_tcp = true_class_probability(result, label_codes, model.modalities_, index)
    writer.obsm(Key.obsm.tcp_true(key_added), true_tcp)
    writer.obsm(Key.obsm.latent(key_added), result.latent.astype(np.float32))
    frames = model.feature_weight_frames(result)
    for m, mod in enumerate(model.modalities_):
        if mod not in mdata.mod:  # a query without this modality
            continue
        if mod in model.images_:
            rows = index.get_indexer(mdata.mod[mod].obs_names)
            if result.heatmaps[m] is not None:
                writer.mod_obsm(mod, Key.obsm.heatmap(key_added), result.heatmaps[m][rows])
            if result.image_attribution is not None:
                writer.mod_obsm(mod, Key.obsm.image_attribution(key_added),
                                result.image_attribution[m][rows])
            continue
        var_names = mdata.mod[mod].var_names
        writer.varm(mod, Key.varm.feature_weights(key_added), frames[mod].reindex(var_names))
        if result.attribution is not None:
            for grouped, name in ((True, Key.varm.attribution(key_added)),
                                  (False, Key.varm.attribution_direct(key_added))):
                frame = model.attribution_frames(result, grouped=grouped)[mod]
                writer.varm(mod, name, frame.reindex(var_names))
        informativeness = model.informativeness(result, m)
        per_feature = pd.Series(
            1.0 if informativeness is None else informativeness, index=model.features_[mod]
        )
        writer.var(mod, Key.var.informativeness(key_added), per_feature.reindex(var_names)
                   .to_numpy(dtype=float))
    labelled = np.flatnonzero(label_codes >= 0)
    uns = dict(uns)
    uns["metrics"] = {
        role: classification_metrics(label_codes[rows], predicted[rows])
        for role, rows in (
            (name, labelled[split[labelled] == name]) for name in SPLIT_CATEGORIES
        )
        if len(rows)
    }
    if unseen_class is not None:
        calls = np.asarray(mdata.obs[Key.obs.prediction(key_added)].astype(str))
        uns["metrics"]["query_all"] = all_labelled_metrics(
            label_codes, unseen_class, calls, classes)
    # The confidence diagnosis on cells it was not trained on.
    unseen = labelled[np.isin(split[labelled], [SPLIT_VALIDATION, SPLIT_QUERY])]
    uns["confidence"] = {
        **confidence_report(model, result, true_tcp.to_numpy(), unseen),
        "cells": "validation" if (split[unseen] == SPLIT_VALIDATION).any() else "query",
    }
    uns["certainty"] = certainty_record(state, certainty, predicted, label_codes, split,
                                        unseen_class)
    if result.attribution is not None:
        uns["attribution"] = {**attribution, "n_cells": {
            mod: dict(zip(classes, counts.tolist(), strict=True))
            for mod, counts in result.attribution.n_cells.items()}}
    if model.images_:
        uns["images"] = image_record(model, result.image_attribution is not None)
    writer.uns(Key.uns.params(key_added), uns)
    writer.log()
