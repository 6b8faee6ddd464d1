"""``tl.predict``: label new cells with a trained model and store the results."""

from __future__ import annotations

import numpy as np
from mudata import MuData

from .._data._labels import resolve_labels
from .._keys import DEFAULT_KEY, SPLIT_QUERY, Key
from .._utils import copy_mudata
from ..model import MMDynamics
from ..model._attribution import ATTRIBUTION_CELLS, check_attribution_options, describe
from ..model._attribution_members import extra_fit_epochs_of, n_fits_of
from ..model._seeding import kept_random_state
from ..model._setup import resolve_label_codes
from ._fit import _check_key, model_summary
from ._store import UNKNOWN, write_results


def unseen_class_cells(mdata: MuData, labels_key: str | None, classes) -> np.ndarray | None:
    """Cells whose label is not a class of the model; ``None`` when the query has no labels."""
    if labels_key is None:
        return None
    try:
        labels = resolve_labels(mdata, labels_key)
    except KeyError:
        return None
    values = labels.astype(object)
    return (values.notna() & ~values.isin(list(classes))).to_numpy()


@kept_random_state()  # MuData updates and data loaders draw from the global generators
def predict(
    mdata: MuData,
    model: MMDynamics,
    *,
    key_added: str = DEFAULT_KEY,
    copy: bool = False,
    batch_size: int = 1024,
    unknown_threshold: float | None = None,
    attribution: bool = True,
    attribution_cells: int = ATTRIBUTION_CELLS,
) -> MuData | None:
    """Predict cell types of new cells with a trained :class:`~mmdyn_sc.MMDynamics`.

    Features are matched by name, whatever their order; a modality lacking any of the model's
    features is an error listing them. Cells absent from a modality get nothing from it, and
    a query may lack whole modalities of the model (an RNA-only query against an
    RNA+protein model): its cells are predicted from the modalities it has, with a
    warning; ``uns[key_added]["modalities_used"]`` lists them. Train with
    ``modality_dropout`` for models that predict well that way.

    Parameters
    ----------
    mdata
        Query MuData with some or all of the model's modalities (and, if the model used
        them, the same layers).
    model
        A trained model, from :func:`mmdyn_sc.tl.fit` or :meth:`~mmdyn_sc.MMDynamics.load`.
    key_added
        Prefix of every key written.
    copy
        Write into a copy of ``mdata`` and return it, as scanpy's ``copy=True`` does
        (``mdata`` is left as it was).
    batch_size
        Cells per inference batch.
    unknown_threshold
        Label a cell ``"Unknown"`` in ``obs[f"{key_added}_prediction"]`` when its certainty
        (``obs[f"{key_added}_certainty"]``, the calibrated probability that the call is
        right, which drops for cells unlike every class of the training cells, as cells of
        a type the model never saw are) is below this value; ``None`` (the default) labels
        every cell.
        ``obsm[f"{key_added}_proba"]`` and ``metrics["query"]`` (on the most probable
        class) are unchanged; ``metrics["query_all"]`` counts an ``Unknown`` call right
        only for a cell whose label is not a class of the model;
        ``uns[key_added]["n_unknown"]`` counts them.
    attribution
        Compute the per-class feature attribution (``varm[f"{key_added}_attribution"]``,
        see :func:`mmdyn_sc.tl.fit`) on at most ``attribution_cells`` query cells per
        predicted class (200 by default; a fixed random sample) and, with an image modality,
        the patch attribution of at most ``attribution_cells`` imaged cells per predicted
        class, NaN for the others (``obsm[f"{key_added}_attribution"]`` of the image
        modality). A model fitted with ``n_fits > 1`` (two fits, the default of
        :func:`~mmdyn_sc.tl.fit` for tabular data) averages the per-class attribution over
        the same fits (``uns[key_added]["attribution"]["n_fits"]``).
        ``False`` skips it.
    attribution_cells
        See ``attribution``.

    Returns
    -------
    :class:`~mudata.MuData` or None
        The annotated copy with ``copy=True``, else ``None``. Writes the same keys as
        :func:`mmdyn_sc.tl.fit`, with ``obs[f"{key_added}_split"] = "query"`` for every
        cell; ``obsm[f"{key_added}_tcp_true"]`` is filled where the query has the model's
        labels column with known classes. ``uns[key_added]`` describes the model, plus
        ``metrics`` on labelled query cells (``query``, the cells of the model's classes,
        and ``query_all``, every labelled cell, where a cell of a class the model never saw
        is right only when called ``Unknown``, with ``n_labelled`` and ``n_unseen_class``)
        and ``certainty`` with the same calibration diagnostics on them.
    """
    _check_key(key_added)
    check_attribution_options(attribution, attribution_cells)
    if not isinstance(model, MMDynamics):
        raise TypeError(f"model must be an MMDynamics, got {type(model).__name__}.")
    if unknown_threshold is not None:
        if not 0.0 < float(unknown_threshold) <= 1.0:
            raise ValueError(f"unknown_threshold must be in (0, 1], got {unknown_threshold}.")
        if UNKNOWN in model.classes_:
            raise ValueError(f"The model has a class named {UNKNOWN!r}; unknown_threshold "
                             "would make it ambiguous.")
    target = copy_mudata(mdata) if copy else mdata
    result = model.infer(target, batch_size=batch_size,
                         attribution_rows=np.arange(target.n_obs) if attribution else None,
                         attribution_cells=attribution_cells, image_attribution=attribution)
    labels_key = model.adata_manager.registry["setup_args"]["labels_key"]
    label_codes, _ = resolve_label_codes(target, labels_key, model.classes_,
                                         labels_required=False)
    unseen_class = unseen_class_cells(target, labels_key, model.classes_)
    split = np.full(target.n_obs, SPLIT_QUERY, dtype=object)
    uns = model_summary(model, key_added)
    uns["modalities_used"] = [m for m in model.modalities_ if m in target.mod]
    if unknown_threshold is not None:
        uns["unknown_threshold"] = float(unknown_threshold)
    write_results(target, model, result, key_added, split, label_codes, uns,
                  unknown_threshold=unknown_threshold,
                  attribution=describe(attribution_cells, "query", n_fits=n_fits_of(model),
                                       extra_fit_epochs=extra_fit_epochs_of(model))
                  if attribution else None,
                  unseen_class=unseen_class)
    if unknown_threshold is not None:
        record = target.uns[Key.uns.params(key_added)]
        calls = target.obs[Key.obs.prediction(key_added)]
        record["n_unknown"] = int((calls == UNKNOWN).sum())
    return target if copy else None
