"""The peers of ``peers.py``: CellTypist, scANVI and totalVI latent + logistic regression.

Each function takes the split's training and test MuData (prepared, ``obs[LABEL]``) and a
seed, and returns ``(predicted test labels, fit seconds)``. The scvi-tools models see the
training *and* test cells (their query cells unlabelled), as their authors use them; their
epoch caps are fixed (:data:`EPOCHS`) and reported.
"""

from __future__ import annotations

import warnings

import numpy as np
from _data import LABEL
from _harness import timed

#: Fixed epoch caps per dataset: totalVI, scVI (scANVI's pretraining), scANVI.
EPOCHS = {
    "bmmc": {"totalvi": 400, "scvi": 400, "scanvi": 20},
    "pbmc10k": {"totalvi": 100, "scvi": 100, "scanvi": 20},
}
UNLABELED = "Unknown"


def _counts(adata):
    import anndata as ad

    x = adata.layers["counts"]
    out = ad.AnnData(X=x.copy(), obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
    return out


def _joined(train, test, mod: str):
    """Counts of ``mod`` for the training then the test cells, with ``part`` and ``batch``."""
    import anndata as ad

    parts = [_counts(train.mod[mod][train.obs_names]), _counts(test.mod[mod][test.obs_names])]
    joined = ad.concat(parts, label="part", keys=["train", "test"], index_unique=None)
    assert joined.obs_names.is_unique
    batch = np.concatenate([_batch(train), _batch(test)])
    joined.obs["batch"] = batch
    return joined


def _batch(mdata) -> np.ndarray:
    if "batch" in mdata.obs.columns:
        return mdata.obs["batch"].astype(str).to_numpy()
    return np.full(mdata.n_obs, "one", dtype=object)


class OneVsRestLogistic:
    """CellTypist's classifier, ``LogisticRegression(multi_class="ovr")``, on new scikit-learn.

    CellTypist 1.7.1 passes ``multi_class="ovr"``, which scikit-learn 1.8 removed; this fits
    the same one-vs-rest model (one binary ``LogisticRegression`` per class, same options)
    and exposes what CellTypist reads: ``classes_``, ``coef_``, ``intercept_``,
    ``decision_function``.
    """

    def __init__(self, multi_class=None, n_jobs=None, **options):
        self.options = options

    def fit(self, x, y):
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y)
        self.classes_ = np.unique(y)
        fits = [LogisticRegression(**self.options).fit(x, y == c) for c in self.classes_]
        self.coef_ = np.vstack([f.coef_ for f in fits])
        self.intercept_ = np.concatenate([f.intercept_ for f in fits])
        self.n_features_in_ = x.shape[1]
        return self

    def decision_function(self, x):
        return np.asarray(x @ self.coef_.T) + self.intercept_


def celltypist(train, test, seed: int):
    """CellTypist's logistic regression on log-normalised RNA (all genes), its defaults."""
    import sys

    import anndata as ad
    import celltypist as ct

    # the module, not the function celltypist.train that the package exports
    sys.modules["celltypist.train"].LogisticRegression = OneVsRestLogistic

    def rna(m):
        a = m.mod["rna"][m.obs_names]
        x = a.layers["mmdyn_prepared"]
        return ad.AnnData(X=x.copy(), obs=a.obs[[]].copy(), var=a.var[[]].copy())

    reference, query = rna(train), rna(test)
    reference.obs["label"] = train.obs[LABEL].astype(str).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, seconds = timed(ct.train, reference, "label", check_expression=False,
                               n_jobs=1, use_SGD=False, feature_selection=False)
        predictions = ct.annotate(query, model=model, majority_voting=False)
    return predictions.predicted_labels["predicted_labels"].astype(str).to_numpy(), seconds


def scvi_model(train, test, seed: int, dataset: str):
    """scVI on the RNA counts of training and test cells (batch = donor), no labels.

    Returns ``(model, its AnnData, fit seconds)``; ``obs["part"]`` marks train/test.
    """
    import scvi

    scvi.settings.seed = seed
    rna = _joined(train, test, "rna")

    def fit():
        scvi.model.SCVI.setup_anndata(rna, batch_key="batch")
        vae = scvi.model.SCVI(rna, n_latent=10)
        vae.train(max_epochs=EPOCHS[dataset]["scvi"], enable_progress_bar=False)
        return vae

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vae, seconds = timed(fit)
    return vae, rna, seconds


def scanvi_from(vae, rna, train, test, seed: int, dataset: str):
    """scANVI from a trained scVI on ``rna``: ``train``'s cells labelled, ``test``'s not.

    Returns ``(predicted labels of the test cells, in their order; scANVI fit seconds)``.
    """
    import pandas as pd
    import scvi

    scvi.settings.seed = seed
    known = pd.Series(train.obs[LABEL].astype(str).to_numpy(), index=train.obs_names)
    rna.obs["label"] = rna.obs_names.map(known).fillna(UNLABELED).astype(str)

    def fit():
        model = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category=UNLABELED,
                                                  labels_key="label", adata=rna)
        model.train(max_epochs=EPOCHS[dataset]["scanvi"], enable_progress_bar=False)
        return model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, seconds = timed(fit)
        predicted = model.predict(rna[test.obs_names])
    return np.asarray(predicted, dtype=object).astype(str), seconds


def scanvi(train, test, seed: int, dataset: str):
    """scVI then scANVI on the RNA counts of training and test cells (test unlabelled)."""
    vae, rna, scvi_seconds = scvi_model(train, test, seed, dataset)
    predicted, seconds = scanvi_from(vae, rna, train, test, seed, dataset)
    return predicted, scvi_seconds + seconds


def totalvi_latent(train, test, seed: int, dataset: str):
    """totalVI on RNA and protein counts of all cells (batch = donor); its latent per cell.

    Returns ``(latent of the training cells, latent of the test cells, fit seconds)``.
    """
    import mudata as md
    import scvi

    scvi.settings.seed = seed
    rna, prot = _joined(train, test, "rna"), _joined(train, test, "prot")
    prot.X = prot.X.toarray() if hasattr(prot.X, "toarray") else np.asarray(prot.X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = md.MuData({"rna": rna, "prot": prot})

        def fit():
            scvi.model.TOTALVI.setup_mudata(
                mdata, batch_key="batch",
                modalities={"rna_layer": "rna", "protein_layer": "prot", "batch_key": "rna"})
            model = scvi.model.TOTALVI(mdata)
            model.train(max_epochs=EPOCHS[dataset]["totalvi"], enable_progress_bar=False)
            return model

        model, seconds = timed(fit)
        latent = model.get_latent_representation()
    is_train = (rna.obs["part"] == "train").to_numpy()
    return latent[is_train], latent[~is_train], seconds
