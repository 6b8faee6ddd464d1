"""One mmdyn_sc fit on a benchmark split, scored on its test cells by ``_harness.score``.

- :func:`fit_predict`: ``tl.fit`` + ``tl.predict`` on copies (``bmmc.py``, ``bmmc_tune.py``).
- :func:`fit_mm`: ``tl.fit`` with chosen modalities and genes, scored with both modalities
  and with each removed at test time (``ablations.py``, ``gate_rank.py``).
"""

from __future__ import annotations

import numpy as np
from _data import LABEL, mask_for, without
from _harness import score, timed

PENDING = "pending"


def fit_predict(train, test, seed: int, options: dict, label: str = "cell_type"):
    """``tl.fit`` on a copy of ``train``, ``tl.predict`` on a copy of ``test``.

    Returns
    -------
    ``(predicted labels, fit seconds, epochs trained)``.
    """
    import mmdyn_sc

    train = train.copy()
    test = test.copy()
    model, seconds = timed(mmdyn_sc.tl.fit, train, label, seed=seed,
                           enable_progress_bar=False, **options)
    mmdyn_sc.tl.predict(test, model)
    epochs = len(model.history["train_loss"]) if "train_loss" in model.history else None
    return test.obs["mmdyn_prediction"].astype(str).to_numpy(), seconds, epochs


def fit_mm(train, test, seed: int, fit_options: dict, mods, max_epochs=None) -> list[dict]:
    """Fit on a copy of ``train``; rows for ``full`` and, if multimodal, ``-rna``/``-prot``.

    Each row: ``condition``, ``status`` (``"ok"`` or ``"pending: <error>"`` where the
    package cannot predict without a modality), the :func:`~_harness.score` metrics, fit
    ``seconds``, ``epochs``, validation macro F1 (``tl.fit``'s validation cells) and the
    predicted-TCP quality per modality (``tcp``).
    """
    import mmdyn_sc

    train = train.copy()
    options = dict(fit_options)
    if max_epochs is not None:
        options["max_epochs"] = max_epochs
    model, seconds = timed(mmdyn_sc.tl.fit, train, LABEL, seed=seed, enable_progress_bar=False,
                           modalities=list(mods), mask_var=mask_for(train, mods), **options)
    uns = train.uns["mmdyn"]
    tcp = {}
    for mod, rep in uns["confidence"]["modalities"].items():
        rel = rep["relative_error"]
        tcp[mod] = {"relative_error": None if isinstance(rel, str) else float(rel),
                    "spearman": float(rep["spearman"])}
    common = {"seconds": seconds, "epochs": len(model.history["train_loss"]),
              "val_f1_macro": float(uns["metrics"]["validation"]["f1_macro"]), "tcp": tcp}
    y_test = test.obs[LABEL].astype(str).to_numpy()
    classes = np.asarray(model.classes_, dtype=object)
    proba = model.predict(test, soft=True)
    rows = [{"condition": "full", "status": "ok",
             **score(y_test, classes[proba.to_numpy().argmax(1)]), **common}]
    if len(mods) > 1:
        for mod in mods:
            try:
                proba = model.predict(without(test, mod), soft=True)
                rows.append({"condition": f"-{mod}", "status": "ok",
                             **score(y_test, classes[proba.to_numpy().argmax(1)]), **common})
            except Exception as err:  # the package cannot predict without it (yet)
                rows.append({"condition": f"-{mod}",
                             "status": f"{PENDING}: {type(err).__name__}: {err}"[:200],
                             **common})
    return rows
