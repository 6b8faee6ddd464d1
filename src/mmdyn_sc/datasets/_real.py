"""Loaders for the real datasets (local copy first, then the verified public original if any)."""

from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._fetch import _fetch
from ._mudata import _make_mudata

_BMMC = "bmmc_cite_neurips2021"
_PBMC = "pbmc10k_cite_totalvi"
_ROSMAP = "ROSMAP"


def _counts_csr(x) -> sp.csr_matrix:
    return sp.csr_matrix(x, dtype=np.float32)


def _read_h5ad(path) -> ad.AnnData:
    # the BMMC files predate anndata's encoding metadata; reading them is fine, the warning is noise
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*written without encoding metadata")
        return ad.read_h5ad(path)


def _make_cite_mudata(rna: ad.AnnData, prot: ad.AnnData) -> md.MuData:
    # a few protein names equal gene symbols (documented): the global var_names are not unique
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        warnings.filterwarnings("ignore", message="Cannot join columns with the same name")
        return _make_mudata({"rna": rna, "prot": prot})


def bmmc_cite() -> md.MuData:
    """Human bone-marrow CITE-seq starter set of the NeurIPS 2021 multimodal competition.

    600 cells from two donors of site 1, with expert cell-type annotations (41 fine types,
    very imbalanced: 13 types have at least 10 cells).

    Returns
    -------
    MuData with modalities

    - ``"rna"``: 600 cells x 1000 genes (GRCh38 gene symbols);
    - ``"prot"``: 600 cells x 134 surface proteins (ADT, TotalSeq-B panel).

    In both, ``.X`` holds the **raw counts** (taken from the files' ``layers["counts"]``) as
    float32 CSR, and ``layers["counts"]`` holds a copy of the same matrix (the files' own
    normalised ``X`` is dropped). Each modality's ``var`` and ``obs`` are kept as read
    (``obs`` has ``cell_type``, ``batch``, ``is_train``, ``phase``, QC columns, ...).
    Three protein names (CD36, CD69, HLA-E) coincide with gene symbols, so the global
    ``mdata.var_names`` are not unique; the per-modality ones are.

    Labels: global ``mdata.obs["cell_type"]`` (categorical, 41 classes) and
    ``mdata.obs["batch"]`` (categorical donor: ``s1d1`` 311 cells, ``s1d2`` 289 cells),
    copied from the RNA ``obs``.

    Notes
    -----
    Source: GitHub ``openproblems-bio/neurips2021_multimodal_viash`` at commit
    ``75281c039ab98b459edbf52058a18597e710ed4d``, files
    ``resources_test/common/openproblems_bmmc_cite_starter/openproblems_bmmc_cite_starter.
    output_rna.h5ad`` and ``...output_mod2.h5ad`` (MIT-licensed repository; data from
    Luecken et al. 2021, GEO GSE194122). The files are read from
    ``settings.data_dir / "bmmc_cite_neurips2021"`` if present; otherwise they are downloaded
    there from ``raw.githubusercontent.com`` and checked against their SHA-256.
    """
    rna = _read_h5ad(_fetch(_BMMC, "openproblems_bmmc_cite_starter.output_rna.h5ad"))
    prot = _read_h5ad(_fetch(_BMMC, "openproblems_bmmc_cite_starter.output_mod2.h5ad"))
    for a in (rna, prot):
        counts = _counts_csr(a.layers["counts"])
        a.X = counts
        a.layers["counts"] = counts.copy()
    mdata = _make_cite_mudata(rna, prot)
    for key in ("cell_type", "batch"):
        mdata.obs[key] = rna.obs[key].astype("category").reindex(mdata.obs_names)
    return mdata


def pbmc10k_cite() -> md.MuData:
    """10x Genomics PBMC 10k CITE-seq (as filtered by the totalVI authors) with SingleR labels.

    Returns
    -------
    MuData with modalities

    - ``"rna"``: 6821 cells x 4000 genes (gene symbols);
    - ``"prot"``: 6821 cells x 14 proteins (CD127, CD14, ..., TIGIT; ``var["antibody"]`` has
      the TotalSeq-B names).

    In both, ``.X`` holds the **raw counts** as float32 CSR and ``layers["counts"]`` a copy of
    the same matrix. Each modality's ``var`` and ``obs`` are kept as read. Four protein names
    (CD4, CD14, CD19, TIGIT) coincide with gene symbols, so the global ``mdata.var_names`` are
    not unique; the per-modality ones are.

    Labels: global ``mdata.obs["cell_type"]`` (categorical, 6 classes: CD4+ T-cells 2206,
    Monocytes 1800, CD8+ T-cells 1365, NK cells 921, B-cells 524, HSC 5) and
    ``mdata.obs["cell_type_fine"]`` (categorical, 16 classes). These are automatic
    (SingleR/BlueprintEncode-style) annotations derived from the RNA, not expert labels.

    Notes
    -----
    There is **no single public original** to download: the files are a join (on cell
    barcode) of the counts in GitHub ``YosefLab/totalVI_reproducibility``
    (``data/raw_data/pbmc10k_harmo_{rna,pro}.csv.gz``) with the labels of
    ``bernibra/tagtango`` (``data/test_sce.rda``). A local copy must exist in
    ``settings.data_dir / "pbmc10k_cite_totalvi"`` (files ``pbmc10k_cite_rna.h5ad`` and
    ``pbmc10k_cite_prot.h5ad``); otherwise :class:`FileNotFoundError` is raised.
    """
    rna = _read_h5ad(_fetch(_PBMC, "pbmc10k_cite_rna.h5ad"))
    prot = _read_h5ad(_fetch(_PBMC, "pbmc10k_cite_prot.h5ad"))
    for a in (rna, prot):
        counts = _counts_csr(a.X)
        a.X = counts
        a.layers["counts"] = counts.copy()
    mdata = _make_cite_mudata(rna, prot)
    for key in ("cell_type", "cell_type_fine"):
        mdata.obs[key] = rna.obs[key].astype("category").reindex(mdata.obs_names)
    return mdata


_ROSMAP_VIEWS = {"mrna": "1", "meth": "2", "mirna": "3"}


def _read_matrix(name: str) -> np.ndarray:
    return pd.read_csv(_fetch(_ROSMAP, name), header=None).to_numpy(dtype=np.float32)


def rosmap() -> md.MuData:
    """ROSMAP bulk multi-omics, Alzheimer's disease vs normal control, MOGONET's preprocessing.

    351 samples (245 train, 106 test: MOGONET's split), 200 selected features per omics.

    Returns
    -------
    MuData with modalities ``"mrna"`` (mRNA expression, Ensembl gene IDs), ``"meth"``
    (DNA methylation, CpG probe IDs) and ``"mirna"`` (miRNA expression; 189 human ``hsa-...``
    and 11 viral miRNA names), each 351 samples x 200 features. ``.X`` is dense float32,
    exactly the values in MOGONET's csv files (already min-max scaled to [0, 1] per feature
    by MOGONET; *not* counts).
    ``var_names`` come from ``k_featname.csv``. Rows are the train samples first
    (``obs_names`` ``train_0`` ... ``train_244``) then the test samples (``test_0`` ...
    ``test_105``), in file order. Modality ``obs`` have no columns.

    Labels: global ``mdata.obs["label"]`` (categorical, categories ``["NC", "AD"]``;
    file value 0 = Normal Control, 1 = Alzheimer's Disease; train 118 NC / 127 AD,
    test 51 NC / 55 AD) and ``mdata.obs["split"]`` (categorical, ``["train", "test"]``).

    Notes
    -----
    Source: GitHub ``txWang/MOGONET`` at commit ``32d9066b7fe289b3f7cdb496a5668834079c274c``,
    folder ``ROSMAP/`` (Wang et al., Nat. Commun. 2021; original data from the ROSMAP
    studies, AMP-AD Knowledge Portal). The files are read from
    ``settings.data_dir / "ROSMAP"`` if present; otherwise they are downloaded there from
    ``raw.githubusercontent.com`` and checked against their SHA-256.
    """
    y = {
        split: pd.read_csv(_fetch(_ROSMAP, f"labels_{s}.csv"), header=None)[0]
        .to_numpy()
        .astype(int)
        for split, s in (("train", "tr"), ("test", "te"))
    }
    obs_names = [f"train_{i}" for i in range(len(y["train"]))] + [
        f"test_{i}" for i in range(len(y["test"]))
    ]
    mods = {}
    for mod, k in _ROSMAP_VIEWS.items():
        x = np.vstack([_read_matrix(f"{k}_tr.csv"), _read_matrix(f"{k}_te.csv")])
        feat = pd.read_csv(_fetch(_ROSMAP, f"{k}_featname.csv"), header=None)[0].astype(str)
        if x.shape != (len(obs_names), len(feat)):
            raise ValueError(f"ROSMAP view {k}: shape {x.shape} does not match labels/features")
        mods[mod] = ad.AnnData(
            X=x, obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=feat.to_numpy())
        )
    mdata = _make_mudata(mods)
    codes = np.concatenate([y["train"], y["test"]])
    mdata.obs["label"] = pd.Categorical.from_codes(codes, categories=["NC", "AD"])
    mdata.obs["split"] = pd.Categorical(
        ["train"] * len(y["train"]) + ["test"] * len(y["test"]), categories=["train", "test"]
    )
    return mdata
