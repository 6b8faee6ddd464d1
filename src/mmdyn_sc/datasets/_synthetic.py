"""Seeded synthetic multimodal count data with known informative features."""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._mudata import _make_mudata

_DEFAULT_SIZES = {"rna": 200, "prot": 30, "noise": 50}
_PREFIX = {"rna": "gene", "prot": "prot", "noise": "noise"}
# log-mean of the baseline per-feature rate, its spread, and the NB inverse dispersion
_BASELINE = {"rna": (0.0, 1.0, 5.0), "prot": (np.log(30.0), 0.8, 10.0), "noise": (1.0, 1.0, 5.0)}
_LABELS_KEY = "cell_type"


def synthetic(
    n_cells: int = 600,
    n_classes: int = 4,
    n_features: Mapping[str, int] | None = None,
    n_informative: int = 10,
    noise_modality: bool = True,
    seed: int = 0,
) -> tuple[md.MuData, dict]:
    """Simulate labelled multimodal raw counts whose class signal sits in known features.

    Every cell gets a class ``type_0 ... type_{n_classes-1}`` (balanced: class sizes differ by at
    most one, order shuffled). Per modality, each feature has a baseline rate drawn log-normally,
    each cell a log-normal size factor, and counts are negative-binomial (gamma-Poisson) draws.
    In ``"rna"`` and ``"prot"``, each class has its own set of informative features (disjoint
    across classes) whose rate is multiplied by a factor drawn uniformly in [4, 8] for the cells
    of that class. The ``"noise"`` modality carries no class signal at all.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_classes
        Number of classes (at least 2).
    n_features
        Optional sizes per modality overriding the defaults
        ``{"rna": 200, "prot": 30, "noise": 50}`` (keys among those three).
    n_informative
        Informative features per class and modality. In a modality with ``p`` features,
        ``min(n_informative, p // n_classes)`` are used, so that the sets stay disjoint
        (with the defaults: 10 per class in ``"rna"``, 7 per class in ``"prot"``).
    noise_modality
        Whether to add the pure-noise modality ``"noise"``.
    seed
        Seed of :func:`numpy.random.default_rng`; the output is a deterministic function of
        all arguments.

    Returns
    -------
    mdata : :class:`~mudata.MuData`
        Modalities ``"rna"`` (features ``gene_0 ...``; ``.X`` float32 CSR), ``"prot"``
        (``prot_0 ...``; dense float32) and, if ``noise_modality``, ``"noise"``
        (``noise_0 ...``; dense float32). ``.X`` holds non-negative integer-valued raw counts,
        and ``layers["counts"]`` a copy. Cells are named ``cell_0 ...``. Labels are in the
        global ``mdata.obs["cell_type"]`` (categorical, categories ``type_0 ...``).
    truth : dict
        The ground truth: ``{"informative": {"rna": [...], "prot": [...]},
        "informative_by_class": {"rna": {"type_0": [...], ...}, "prot": {...}},
        "noisy_modality": "noise" or None, "labels_key": "cell_type"}``; feature lists hold
        ``var_names``, ``"informative"`` the union over classes in class order.
    """
    if n_classes < 2:
        raise ValueError("n_classes must be at least 2")
    if n_cells < n_classes:
        raise ValueError("n_cells must be at least n_classes")
    if n_informative < 1:
        raise ValueError("n_informative must be at least 1")
    sizes = dict(_DEFAULT_SIZES)
    if n_features:
        unknown = set(n_features) - set(sizes)
        if unknown:
            raise ValueError(f"unknown modalities in n_features: {sorted(unknown)}")
        sizes.update({k: int(v) for k, v in n_features.items()})
    mods = ["rna", "prot"] + (["noise"] if noise_modality else [])
    for mod in mods:
        if mod != "noise" and sizes[mod] < n_classes:
            raise ValueError(f"{mod!r} needs at least n_classes={n_classes} features")
        if sizes[mod] < 1:
            raise ValueError(f"{mod!r} needs at least one feature")

    rng = np.random.default_rng(seed)
    classes = [f"type_{c}" for c in range(n_classes)]
    labels = rng.permutation(np.arange(n_cells) % n_classes)
    obs_names = [f"cell_{i}" for i in range(n_cells)]

    adatas: dict[str, ad.AnnData] = {}
    informative: dict[str, list[str]] = {}
    by_class: dict[str, dict[str, list[str]]] = {}
    for mod in mods:
        p = sizes[mod]
        names = np.array([f"{_PREFIX[mod]}_{j}" for j in range(p)])
        mu, sd, theta = _BASELINE[mod]
        rate = np.exp(rng.normal(mu, sd, size=p))
        rates = np.broadcast_to(rate, (n_cells, p)).copy()
        if mod != "noise":
            k = min(n_informative, p // n_classes)
            chosen = rng.permutation(p)[: k * n_classes].reshape(n_classes, k)
            # informative features should not start from a near-zero baseline
            rates[:, chosen.ravel()] = np.maximum(rates[:, chosen.ravel()], np.exp(mu))
            by_class[mod] = {}
            for c in range(n_classes):
                idx = np.sort(chosen[c])
                fold = rng.uniform(4.0, 8.0, size=k)
                rates[np.ix_(labels == c, idx)] *= fold
                by_class[mod][classes[c]] = names[idx].tolist()
            informative[mod] = [n for c in classes for n in by_class[mod][c]]
        size_factor = np.exp(rng.normal(0.0, 0.3, size=(n_cells, 1)))
        lam = rng.gamma(theta, rates * size_factor / theta)
        x = rng.poisson(lam).astype(np.float32)
        X = sp.csr_matrix(x) if mod == "rna" else x
        a = ad.AnnData(X=X, obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=names))
        a.layers["counts"] = X.copy()
        adatas[mod] = a

    mdata = _make_mudata(adatas)
    mdata.obs[_LABELS_KEY] = pd.Categorical.from_codes(labels, categories=classes)
    truth = {
        "informative": informative,
        "informative_by_class": by_class,
        "noisy_modality": "noise" if noise_modality else None,
        "labels_key": _LABELS_KEY,
    }
    return mdata, truth
