"""The benchmarks' datasets and splits: BMMC donors, pbmc10k folds, genes, LR features.

- ``bmmc``: ``mmdyn_sc.datasets.bmmc_cite()``, prepared, classes with >= :data:`MIN_CELLS`
  cells (456 cells, 13 classes); splits: train on one donor, test on the other
  (:data:`DIRECTIONS`).
- ``pbmc10k``: ``mmdyn_sc.datasets.pbmc10k_cite()``, ``cell_type_fine`` with >= 10 cells
  (6,807 cells, 13 classes), prepared; splits: stratified K-fold (``random_state=0``), fold
  k with seed k, per fold the most variable genes of its training cells
  (:func:`select_hvg`, marked in ``var[HVG_COLUMN]``).

Both put the label in ``obs[LABEL]`` (BMMC also keeps ``obs["cell_type"]``).
:func:`stacked` joins a split's training and test cells into one MuData (for transductive
fits: the test labels stay out).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

DIRECTIONS = (("s1d1", "s1d2"), ("s1d2", "s1d1"))
MODS = ("rna", "prot")
MIN_CELLS = 10
N_HVG = 1000
HVG_COLUMN = "ablations_hvg"
LABEL = "label"


def _data_dir() -> None:
    os.environ.setdefault("MMDYN_SC_DATA_DIR", "/work/shared/data")


def load_bmmc():
    """Prepared BMMC restricted to the classes with >= MIN_CELLS cells, and the class list.

    ``obs["cell_type"]`` (categorical) and ``obs[LABEL]`` hold the label.
    """
    _data_dir()
    import mmdyn_sc

    mdata = mmdyn_sc.datasets.bmmc_cite()
    mdata.obs["cell_type"] = mdata.obs["cell_type"].astype(str)
    mdata.obs["batch"] = mdata.obs["batch"].astype(str)
    mmdyn_sc.pp.prepare(mdata)  # per-cell normalisation: no information shared between cells
    counts = mdata.obs["cell_type"].value_counts()
    classes = sorted(counts.index[counts >= MIN_CELLS])
    keep = mdata.obs["cell_type"].isin(classes).to_numpy()
    mdata = mdata[keep].copy()
    mdata.obs["cell_type"] = mdata.obs["cell_type"].astype("category")
    mdata.obs[LABEL] = mdata.obs["cell_type"].astype(str).astype("category")
    return mdata, classes


def load_pbmc10k():
    """Prepared pbmc10k, ``obs[LABEL]`` = ``cell_type_fine`` with >= MIN_CELLS cells."""
    _data_dir()
    import mmdyn_sc

    mdata = mmdyn_sc.datasets.pbmc10k_cite()
    mdata.obs[LABEL] = mdata.obs["cell_type_fine"].astype(str)
    mmdyn_sc.pp.prepare(mdata)  # per-cell normalisation: nothing shared between cells
    counts = mdata.obs[LABEL].value_counts()
    classes = sorted(counts.index[counts >= MIN_CELLS])
    mdata = mdata[mdata.obs[LABEL].isin(classes).to_numpy()].copy()
    mdata.obs[LABEL] = mdata.obs[LABEL].astype("category")
    return mdata, classes


def load(dataset: str):
    """``(mdata, classes)`` of ``"bmmc"`` or ``"pbmc10k"`` (see the module docstring)."""
    return load_bmmc() if dataset == "bmmc" else load_pbmc10k()


def donor(mdata, name: str):
    """The cells of one BMMC donor (``obs["batch"]``), as a copy."""
    return mdata[(mdata.obs["batch"] == name).to_numpy()].copy()


def splits(dataset: str, mdata, n_folds: int, only_folds, seeds, n_hvg: int = N_HVG):
    """Yield ``(split name, train MuData, test MuData, seeds, info)``.

    bmmc: both donor directions, each with ``seeds``. pbmc10k: the folds of a stratified
    ``n_folds``-fold CV (``only_folds``: these only), fold k with seed k, the ``n_hvg`` most
    variable genes of its training cells marked in ``var[HVG_COLUMN]``.
    """
    if dataset == "bmmc":
        for a, b in DIRECTIONS:
            yield f"{a}→{b}", donor(mdata, a), donor(mdata, b), list(seeds), {}
        return
    from sklearn.model_selection import StratifiedKFold

    y = mdata.obs[LABEL].astype(str).to_numpy()
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=0)
    for k, (tr, te) in enumerate(folds.split(np.zeros(len(y)), y)):
        if only_folds is not None and k not in only_folds:
            continue
        train, test = mdata[tr].copy(), mdata[te].copy()
        genes = select_hvg(train, n_hvg)
        for part in (train, test):
            part.mod["rna"].var[HVG_COLUMN] = part.mod["rna"].var_names.isin(genes)
        yield f"fold {k}", train, test, [k], {"n_hvg": len(genes)}


def select_hvg(train, n_hvg: int = N_HVG) -> list[str]:
    """The ``n_hvg`` most variable genes of the training cells (seurat flavour, prepared)."""
    import anndata as ad
    import scanpy as sc

    rna = train.mod["rna"][train.obs_names]
    tmp = ad.AnnData(X=rna.layers["mmdyn_prepared"].copy(), var=rna.var[[]].copy())
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_hvg, flavor="seurat")
    return list(tmp.var_names[tmp.var["highly_variable"].to_numpy()])


def mask_for(mdata, mods) -> dict | None:
    """``tl.fit``'s ``mask_var`` restricting RNA to the split's genes, where they are set."""
    if "rna" in mods and HVG_COLUMN in mdata.mod["rna"].var.columns:
        return {"rna": HVG_COLUMN}
    return None


def features(mdata, mods=MODS) -> np.ndarray:
    """Concatenated prepared blocks (dense float64), restricted to the split's genes if set."""
    blocks = []
    for mod in mods:
        a = mdata.mod[mod][mdata.obs_names]
        if mod == "rna" and HVG_COLUMN in a.var.columns:
            a = a[:, a.var[HVG_COLUMN].to_numpy()]
        x = a.layers["mmdyn_prepared"]
        blocks.append(x.toarray() if hasattr(x, "toarray") else np.asarray(x))
    return np.hstack(blocks).astype(np.float64)


def without(test, mod: str):
    """The test cells as a MuData lacking modality ``mod`` (``obs[LABEL]`` kept)."""
    import mudata as md

    keep = [m for m in MODS if m != mod]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        query = md.MuData({m: test.mod[m][test.obs_names].copy() for m in keep})
    query.obs[LABEL] = test.obs[LABEL].to_numpy()
    return query


def stacked(train, test):
    """Training then test cells as one MuData, ``obs["part"]`` and ``obs["batch"]`` only."""
    import anndata as ad
    import mudata as md

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mods = {m: ad.concat([train.mod[m][train.obs_names], test.mod[m][test.obs_names]],
                             merge="same") for m in train.mod}
        for adata in mods.values():
            adata.obs = adata.obs[[]]
        both = md.MuData(mods)
    both.obs["part"] = np.repeat(["train", "test"], [train.n_obs, test.n_obs])
    if "batch" in train.obs:
        both.obs["batch"] = np.concatenate([train.obs["batch"].astype(str).to_numpy(),
                                            test.obs["batch"].astype(str).to_numpy()])
    return both
