"""Loaders for the real datasets (local copy first, then the verified public original if any)."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._utils import logger
from ._fetch import _BCCD_COMMIT, _fetch
from ._mudata import _make_mudata

_BCCD = "bccd_wbc_crops"
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
    :class:`~mudata.MuData`
        Two modalities:

        - ``"rna"``: 600 cells x 1000 genes (GRCh38 gene symbols);
        - ``"prot"``: 600 cells x 134 surface proteins (ADT, TotalSeq-B panel).

        In both, ``.X`` holds the **raw counts** (taken from the files' ``layers["counts"]``)
        as float32 CSR, and ``layers["counts"]`` holds a copy of the same matrix (the files'
        own normalised ``X`` is dropped). Each modality's ``var`` and ``obs`` are kept as read
        (``obs`` has ``cell_type``, ``batch``, ``is_train``, ``phase``, QC columns, ...).
        Three protein names (CD36, CD69, HLA-E) coincide with gene symbols, so the global
        ``mdata.var_names`` are not unique; the per-modality ones are.

        Labels: global ``mdata.obs["cell_type"]`` (categorical, 41 classes) and
        ``mdata.obs["batch"]`` (categorical donor: ``s1d1`` 311 cells, ``s1d2`` 289 cells),
        copied from the RNA ``obs``.

    Notes
    -----
    Source: GitHub ``openproblems-bio/neurips2021_multimodal_viash`` at commit
    ``75281c039ab98b459edbf52058a18597e710ed4d``, folder
    ``resources_test/common/openproblems_bmmc_cite_starter/``, files
    ``openproblems_bmmc_cite_starter.output_rna.h5ad`` and ``...output_mod2.h5ad``
    (MIT-licensed repository; data from Luecken et al. 2021, GEO GSE194122). The files are
    read from ``settings.data_dir / "bmmc_cite_neurips2021"`` if present; otherwise they are
    downloaded there from ``raw.githubusercontent.com`` and checked against their SHA-256.
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
    :class:`~mudata.MuData`
        Two modalities:

        - ``"rna"``: 6821 cells x 4000 genes (gene symbols);
        - ``"prot"``: 6821 cells x 14 proteins (CD127, CD14, ..., TIGIT; ``var["antibody"]``
          has the TotalSeq-B names).

        In both, ``.X`` holds the **raw counts** as float32 CSR and ``layers["counts"]`` a
        copy of the same matrix. Each modality's ``var`` and ``obs`` are kept as read. Four
        protein names (CD4, CD14, CD19, TIGIT) coincide with gene symbols, so the global
        ``mdata.var_names`` are not unique; the per-modality ones are.

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
    :class:`~mudata.MuData`
        Modalities ``"mrna"`` (mRNA expression, Ensembl gene IDs), ``"meth"`` (DNA
        methylation, CpG probe IDs) and ``"mirna"`` (miRNA expression; 189 human
        ``hsa-...`` and 11 viral miRNA names), each 351 samples x 200 features. ``.X`` is
        dense float32, exactly the values in MOGONET's csv files (already min-max scaled to
        [0, 1] per feature by MOGONET; *not* counts). ``var_names`` come from
        ``k_featname.csv``. Rows are the train samples first (``obs_names`` ``train_0`` ...
        ``train_244``) then the test samples (``test_0`` ... ``test_105``), in file order.
        Modality ``obs`` have no columns.

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


def _check_int(value, name: str, minimum: int, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} ({meaning}), got {value!r}.")
    return int(value)


def bccd_wbc(size: int = 64, *, min_cells: int = 10) -> md.MuData:
    """White-blood-cell crops of the BCCD blood-smear images, labelled by cell type.

    351 light-microscopy crops (stained peripheral blood smear, RGB JPEG, square, 131-367 px
    per side), one white blood cell per crop and one crop per original BCCD frame, each with
    its cell type: Neutrophil 207, Eosinophil 88, Lymphocyte 33, Monocyte 20, Basophil 3.
    Only images exist for these cells (no transcriptome or proteins): the labels are per
    image, so they can be paired with omics cells by label only
    (:func:`mmdyn_sc.pp.pair_images_by_label`), never by cell.

    Parameters
    ----------
    size
        Side of the stored square images in pixels (a positive integer). Each crop is padded
        to a square with its border colour and resized (bilinear, anti-aliased), as
        :func:`mmdyn_sc.pp.images_from_files` does.
    min_cells
        Classes with fewer images are dropped (a non-negative integer). The default, 10,
        drops Basophil (3 images), leaving 348 images of 4 classes; 0 or 1 keeps all 351
        images and 5 classes.

    Returns
    -------
    :class:`~mudata.MuData`
        One modality, ``"image"``, of n images (348 by default): its ``.obsm["image"]`` holds
        them as ``uint8`` (0..255), shape (n, 3, size, size), channels first (RGB); ``.X`` is
        an empty (n, 0) float32 matrix and ``.uns["image"]`` records the size, channels,
        dtype and source, as :func:`mmdyn_sc.pp.images_from_files` writes them.
        ``obs_names`` are the file names without extension (``BloodImage_00001_1``; the same
        in the modality and the MuData), in the order of ``index.csv`` (grouped by class).

        The modality's ``.obs`` has ``"cell_type"`` (categorical, the kept classes in
        alphabetical order), ``"source_image"`` (the original BCCD frame, e.g.
        ``BloodImage_00001.jpg``) and ``"image_path"`` (the file read). The global
        ``mdata.obs`` has ``"cell_type"`` and ``"source_image"``, the same values.
        ``mdata.uns["bccd_wbc"]`` records ``size``, ``min_cells``, ``dropped_classes`` and
        ``dropped_counts`` (two arrays: the classes left out and their image counts), the
        source ``repository`` and ``commit``; the dropped classes are also logged at INFO
        level.

    Raises
    ------
    FileNotFoundError
        If ``settings.data_dir / "bccd_wbc_crops" / "index.csv"`` (or an image it lists) is
        absent; the message says what to put where.
    ValueError
        For a ``size`` that is not a positive integer, a ``min_cells`` that is not a
        non-negative integer, or a ``min_cells`` that would drop every class.

    Notes
    -----
    Source: GitHub ``apple2373/BCCD`` at commit ``7751031e0b41bcfdff998cbc4c698a445a60b49e``
    (``BCCD_cropped/<Class>/BloodImage_XXXXX_1.jpg``); its README traces the crops to the
    BCCD images (``Shenggan/BCCD_Dataset``, MIT licence) segmented by
    ``ParthaPratimBanik/An-Automatic-Nucleus-Segmentation-and-CNN-Model-based-Classification-
    Method-of-White-Blood-Cell``. **That repository has no licence file**, so the crops are
    never downloaded: a local copy must exist in ``settings.data_dir / "bccd_wbc_crops"``
    (environment variable ``MMDYN_SC_DATA_DIR``), holding ``index.csv`` (columns ``path``,
    e.g. ``images/Neutrophil/BloodImage_00001_1.jpg``, ``label`` and ``source_image``) and
    the crops as ``images/<Class>/*.jpg``; otherwise :class:`FileNotFoundError` is raised.
    Reading and resizing the 351 files takes about 2 s (one CPU core).
    """
    from ..pp._images import images_from_files

    size = _check_int(size, "size", 1, "pixels per side of the stored images")
    min_cells = _check_int(min_cells, "min_cells", 0, "classes with fewer images are dropped")
    index_file = _fetch(_BCCD, "index.csv")
    root = index_file.parent
    index = pd.read_csv(index_file, dtype=str)
    index.index = pd.Index([Path(p).stem for p in index["path"]])
    counts = index["label"].value_counts()
    dropped = counts[counts < min_cells].sort_index()
    kept = sorted(counts.index.difference(dropped.index))
    if not kept:
        raise ValueError(
            f"min_cells={min_cells} drops every class (images per class: "
            f"{counts.to_dict()}); use at most {int(counts.max())}."
        )
    if len(dropped):
        logger.info(
            "bccd_wbc: dropped %d class(es) with fewer than %d images: %s",
            len(dropped),
            min_cells,
            dropped.to_dict(),
        )
    index = index[index["label"].isin(kept)]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(index["label"], categories=kept),
            "source_image": index["source_image"].to_numpy(),
        },
        index=index.index,
    )
    image = images_from_files(index["path"].tolist(), root=root, obs=obs, size=size)
    mdata = _make_mudata({"image": image})
    for key in ("cell_type", "source_image"):
        mdata.obs[key] = image.obs[key].reindex(mdata.obs_names)
    mdata.uns["bccd_wbc"] = {
        "size": size,
        "min_cells": min_cells,
        "dropped_classes": np.asarray(dropped.index, dtype=str),
        "dropped_counts": dropped.to_numpy(dtype=np.int64),
        "repository": "apple2373/BCCD",
        "commit": _BCCD_COMMIT,
    }
    return mdata
