"""Tests for mmdyn_sc.datasets: real loaders on ../shared/data, fetch logic, synthetic data."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
import pooch
import pytest
import scipy.sparse as sp

from mmdyn_sc import datasets
from mmdyn_sc._settings import settings
from mmdyn_sc.datasets import _fetch

#: The real data, as the conftest finds it ($MMDYN_SC_TEST_DATA_DIR simulates a clone without it).
SHARED = Path(os.environ.get("MMDYN_SC_TEST_DATA_DIR")
              or Path(__file__).parents[1] / ".." / "shared" / "data").resolve()
BMMC, PBMC, ROSMAP = "bmmc_cite_neurips2021", "pbmc10k_cite_totalvi", "ROSMAP"


def _require(folder: str) -> Path:
    path = SHARED / folder
    if not path.is_dir():
        pytest.skip(f"dataset {folder} not found in {SHARED}")
    return path


#: pooch's own retrieve, before the autouse fixture below replaces it.
_POOCH_RETRIEVE = pooch.retrieve


def _no_network(*args, **kwargs):
    raise AssertionError(f"tests must not download: pooch.retrieve{args}{kwargs}")


@pytest.fixture(autouse=True)
def _forbid_download(monkeypatch):
    monkeypatch.setattr(pooch, "retrieve", _no_network)


def _load(folder: str, loader):
    _require(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(settings, "_data_dir", SHARED)
        mp.setattr(pooch, "retrieve", _no_network)
        return loader()


@pytest.fixture(scope="module")
def bmmc():
    return _load(BMMC, datasets.bmmc_cite)


@pytest.fixture(scope="module")
def pbmc():
    return _load(PBMC, datasets.pbmc10k_cite)


@pytest.fixture(scope="module")
def rosmap():
    return _load(ROSMAP, datasets.rosmap)


def _assert_counts(x):
    data = x.data if sp.issparse(x) else np.asarray(x)
    assert x.dtype == np.float32
    assert np.all(data >= 0)
    assert np.all(data == np.round(data))


def _check_cite(mdata, n_obs, n_rna, n_prot):
    assert isinstance(mdata, md.MuData)
    assert set(mdata.mod) == {"rna", "prot"}
    assert mdata.n_obs == n_obs
    assert mdata["rna"].shape == (n_obs, n_rna)
    assert mdata["prot"].shape == (n_obs, n_prot)
    for mod in ("rna", "prot"):
        a = mdata[mod]
        assert isinstance(a.X, sp.csr_matrix)
        _assert_counts(a.X)
        counts = a.layers["counts"]
        assert (abs(a.X - counts)).nnz == 0
        assert a.var_names.is_unique
        assert (a.obs_names == mdata.obs_names).all()


# --------------------------------------------------------------------------- BMMC
def test_bmmc_shapes_and_counts(bmmc):
    _check_cite(bmmc, 600, 1000, 134)
    assert {"gene_ids", "feature_types", "genome", "n_cells"} <= set(bmmc["rna"].var.columns)
    assert "cell_type" in bmmc["rna"].obs and "is_train" in bmmc["rna"].obs
    # raw RNA counts, not the log-normalised X of the file
    assert np.median(np.asarray(bmmc["rna"].X.sum(1)).ravel()) > 1000


def test_bmmc_labels(bmmc):
    ct, batch = bmmc.obs["cell_type"], bmmc.obs["batch"]
    assert isinstance(ct.dtype, pd.CategoricalDtype)
    assert isinstance(batch.dtype, pd.CategoricalDtype)
    assert ct.cat.categories.size == 41
    assert ct.value_counts()["CD14+ Mono"] == 90
    assert (ct.value_counts() >= 10).sum() == 13
    assert batch.value_counts().to_dict() == {"s1d1": 311, "s1d2": 289}
    assert (ct.astype(str).values == bmmc["rna"].obs["cell_type"].astype(str).values).all()


@pytest.mark.filterwarnings("ignore:Cannot join columns with the same name")
def test_bmmc_writes_h5mu(bmmc, tmp_path):
    bmmc.write_h5mu(tmp_path / "bmmc.h5mu")
    back = md.read_h5mu(tmp_path / "bmmc.h5mu")
    assert back["prot"].shape == (600, 134)


# --------------------------------------------------------------------------- PBMC
def test_pbmc_shapes_and_labels(pbmc):
    _check_cite(pbmc, 6821, 4000, 14)
    assert "antibody" in pbmc["prot"].var.columns
    ct = pbmc.obs["cell_type"]
    assert isinstance(ct.dtype, pd.CategoricalDtype)
    assert ct.value_counts().to_dict() == {
        "CD4+ T-cells": 2206,
        "Monocytes": 1800,
        "CD8+ T-cells": 1365,
        "NK cells": 921,
        "B-cells": 524,
        "HSC": 5,
    }
    fine = pbmc.obs["cell_type_fine"]
    assert isinstance(fine.dtype, pd.CategoricalDtype)
    assert fine.cat.categories.size == 16


def test_pbmc_missing_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "_data_dir", tmp_path)
    with pytest.raises(FileNotFoundError, match="MMDYN_SC_DATA_DIR") as info:
        datasets.pbmc10k_cite()
    msg = str(info.value)
    assert "no single public original" in msg
    assert PBMC in msg


def test_data_dir_from_env_var(tmp_path, monkeypatch):
    _require(PBMC)
    monkeypatch.setattr(settings, "_data_dir", None)
    monkeypatch.setenv("MMDYN_SC_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        datasets.pbmc10k_cite()
    monkeypatch.setenv("MMDYN_SC_DATA_DIR", str(SHARED))
    path = _fetch._fetch(PBMC, "pbmc10k_cite_prot.h5ad")
    assert path == SHARED / PBMC / "pbmc10k_cite_prot.h5ad"


# --------------------------------------------------------------------------- ROSMAP
def test_rosmap_shapes_and_values(rosmap):
    assert list(rosmap.mod) == ["mrna", "meth", "mirna"]
    prefixes = {"mrna": "ENSG", "meth": "cg", "mirna": "hsa-"}
    n_prefixed = {"mrna": 200, "meth": 200, "mirna": 189}  # 11 viral miRNAs (ebv-, kshv-, ...)
    for mod, prefix in prefixes.items():
        a = rosmap[mod]
        assert a.shape == (351, 200)
        assert isinstance(a.X, np.ndarray) and a.X.dtype == np.float32
        assert a.X.min() >= 0 and a.X.max() <= 1
        assert a.var_names.is_unique
        assert a.var_names.str.startswith(prefix).sum() == n_prefixed[mod]
    assert list(rosmap.obs_names[:2]) == ["train_0", "train_1"]
    assert rosmap.obs_names[244] == "train_244" and rosmap.obs_names[245] == "test_0"
    assert rosmap.obs_names[-1] == "test_105"
    first = np.loadtxt(SHARED / ROSMAP / "1_te.csv", delimiter=",", max_rows=1)
    np.testing.assert_allclose(rosmap["mrna"].X[245], first, rtol=1e-6)


def test_rosmap_labels(rosmap):
    label, split = rosmap.obs["label"], rosmap.obs["split"]
    assert list(label.cat.categories) == ["NC", "AD"]
    assert list(split.cat.categories) == ["train", "test"]
    assert split.value_counts().to_dict() == {"train": 245, "test": 106}
    tr = label[split == "train"].value_counts().to_dict()
    te = label[split == "test"].value_counts().to_dict()
    assert tr == {"NC": 118, "AD": 127}
    assert te == {"NC": 51, "AD": 55}
    raw = np.loadtxt(SHARED / ROSMAP / "labels_tr.csv")
    assert (label.cat.codes.values[:245] == raw.astype(int)).all()


def test_rosmap_writes_h5mu(rosmap, tmp_path):
    rosmap.write_h5mu(tmp_path / "rosmap.h5mu")
    back = md.read_h5mu(tmp_path / "rosmap.h5mu")
    assert list(back.obs["label"].cat.categories) == ["NC", "AD"]


# --------------------------------------------------------------------------- download path
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_retrieve(calls, folder):
    """Stand-in for pooch.retrieve: records the call and copies the shared local file."""

    def retrieve(url, known_hash=None, fname=None, path=None, **kwargs):
        calls.append({"url": url, "known_hash": known_hash, "fname": fname, "path": Path(path)})
        src = SHARED / folder / fname
        assert known_hash == f"sha256:{_sha256(src)}"
        Path(path).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, Path(path) / fname)
        return str(Path(path) / fname)

    return retrieve


def test_bmmc_download_when_missing(tmp_path, monkeypatch):
    _require(BMMC)
    calls = []
    monkeypatch.setattr(settings, "_data_dir", tmp_path)
    monkeypatch.setattr(pooch, "retrieve", _fake_retrieve(calls, BMMC))
    mdata = datasets.bmmc_cite()
    assert mdata.n_obs == 600
    base = (
        "https://raw.githubusercontent.com/openproblems-bio/neurips2021_multimodal_viash/"
        "75281c039ab98b459edbf52058a18597e710ed4d/resources_test/common/"
        "openproblems_bmmc_cite_starter/"
    )
    assert [c["url"] for c in calls] == [
        base + "openproblems_bmmc_cite_starter.output_rna.h5ad",
        base + "openproblems_bmmc_cite_starter.output_mod2.h5ad",
    ]
    assert calls[0]["known_hash"] == (
        "sha256:e111b6ad48f7236b9291dab56d0aa2ebcc1a5f8d1d402fa232d9bfe3d1af6f61"
    )
    assert all(c["path"] == tmp_path / BMMC for c in calls)
    # second call finds the local copies and does not download again
    calls.clear()
    datasets.bmmc_cite()
    assert calls == []


def test_rosmap_download_when_missing(tmp_path, monkeypatch):
    _require(ROSMAP)
    calls = []
    monkeypatch.setattr(settings, "_data_dir", tmp_path)
    monkeypatch.setattr(pooch, "retrieve", _fake_retrieve(calls, ROSMAP))
    mdata = datasets.rosmap()
    assert mdata.n_obs == 351
    fnames = {c["fname"] for c in calls}
    assert fnames == {p.name for p in (SHARED / ROSMAP).glob("*.csv")}
    prefix = (
        "https://raw.githubusercontent.com/txWang/MOGONET/"
        "32d9066b7fe289b3f7cdb496a5668834079c274c/ROSMAP/"
    )
    assert all(c["url"] == prefix + c["fname"] for c in calls)


def test_registry_hashes_match_local_copies():
    for folder, files in _fetch.REGISTRY.items():
        _require(folder)
        for fname, (_, sha) in files.items():
            assert _sha256(SHARED / folder / fname) == sha, (folder, fname)


def test_local_or_download_without_url(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "_data_dir", tmp_path)
    with pytest.raises(FileNotFoundError, match="MMDYN_SC_DATA_DIR"):
        _fetch._local_or_download("somewhere", "file.h5ad", None, None)
    (tmp_path / "somewhere").mkdir()
    (tmp_path / "somewhere" / "file.h5ad").write_bytes(b"x")
    assert _fetch._local_or_download("somewhere", "file.h5ad", None, None) == (
        tmp_path / "somewhere" / "file.h5ad"
    )


def test_failed_download_leaves_nothing(tmp_path, monkeypatch):
    """No network (a refused local port, no real network): a clear error, no folder left."""
    monkeypatch.setattr(pooch, "retrieve", _POOCH_RETRIEVE)
    monkeypatch.setattr(settings, "_data_dir", tmp_path / "cache" / "mmdyn_sc")
    url = "http://127.0.0.1:9/file.h5ad"
    with pytest.raises(datasets.DownloadError) as info:
        _fetch._local_or_download("somewhere", "file.h5ad", url, "0" * 64)
    message = str(info.value)
    assert url in message and "MMDYN_SC_DATA_DIR" in message
    assert isinstance(info.value, OSError)  # a connection failure, as callers expect
    assert list(tmp_path.iterdir()) == []  # neither the data folder nor the cache above it


def test_failed_download_removes_partial_file_keeps_existing_folders(tmp_path, monkeypatch):
    def partial_then_fail(url, known_hash=None, fname=None, path=None, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / fname).write_bytes(b"half a file")
        raise ValueError("SHA256 hash of downloaded file does not match the known hash")

    (tmp_path / "other_dataset").mkdir()  # the data directory existed before: it stays
    monkeypatch.setattr(settings, "_data_dir", tmp_path)
    monkeypatch.setattr(pooch, "retrieve", partial_then_fail)
    with pytest.raises(datasets.DownloadError, match="does not match"):
        _fetch._local_or_download("somewhere", "file.h5ad", "https://example.org/f", "0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other_dataset"]


# --------------------------------------------------------------------------- synthetic
def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def test_synthetic_structure():
    mdata, truth = datasets.synthetic()
    assert list(mdata.mod) == ["rna", "prot", "noise"]
    assert mdata["rna"].shape == (600, 200)
    assert mdata["prot"].shape == (600, 30)
    assert mdata["noise"].shape == (600, 50)
    assert isinstance(mdata["rna"].X, sp.csr_matrix)
    assert list(mdata["rna"].var_names[:2]) == ["gene_0", "gene_1"]
    assert list(mdata["prot"].var_names[:2]) == ["prot_0", "prot_1"]
    for mod in mdata.mod:
        _assert_counts(mdata[mod].X)
        assert (_dense(mdata[mod].X) == _dense(mdata[mod].layers["counts"])).all()
    ct = mdata.obs["cell_type"]
    assert truth["labels_key"] == "cell_type"
    assert isinstance(ct.dtype, pd.CategoricalDtype)
    assert list(ct.cat.categories) == ["type_0", "type_1", "type_2", "type_3"]
    counts = ct.value_counts()
    assert counts.max() - counts.min() <= 1
    assert truth["noisy_modality"] == "noise"
    assert set(truth["informative"]) == {"rna", "prot"}


def test_synthetic_truth_disjoint_and_present():
    mdata, truth = datasets.synthetic()
    for mod in ("rna", "prot"):
        by_class = truth["informative_by_class"][mod]
        assert set(by_class) == set(mdata.obs["cell_type"].cat.categories)
        seen = set()
        for names in by_class.values():
            assert len(names) > 0
            assert seen.isdisjoint(names)
            seen |= set(names)
        assert seen == set(truth["informative"][mod])
        assert seen <= set(mdata[mod].var_names)
    assert all(len(v) == 10 for v in truth["informative_by_class"]["rna"].values())


def test_synthetic_deterministic():
    a, ta = datasets.synthetic(seed=3)
    b, tb = datasets.synthetic(seed=3)
    c, tc = datasets.synthetic(seed=4)
    assert ta == tb
    for mod in a.mod:
        assert (_dense(a[mod].X) == _dense(b[mod].X)).all()
    assert (a.obs["cell_type"] == b.obs["cell_type"]).all()
    assert not (_dense(a["rna"].X) == _dense(c["rna"].X)).all()
    assert ta["informative"] != tc["informative"]


def test_synthetic_options(tmp_path):
    mdata, truth = datasets.synthetic(
        n_cells=90,
        n_classes=3,
        n_features={"rna": 60, "prot": 12},
        n_informative=5,
        noise_modality=False,
        seed=1,
    )
    assert list(mdata.mod) == ["rna", "prot"]
    assert mdata["rna"].shape == (90, 60) and mdata["prot"].shape == (90, 12)
    assert truth["noisy_modality"] is None
    assert all(len(v) == 4 for v in truth["informative_by_class"]["prot"].values())
    assert all(len(v) == 5 for v in truth["informative_by_class"]["rna"].values())
    with pytest.raises(ValueError):
        datasets.synthetic(n_features={"atac": 10})
    mdata.write_h5mu(tmp_path / "syn.h5mu")


def test_synthetic_rna_is_learnable():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    mdata, truth = datasets.synthetic(seed=0)
    x = np.log1p(_dense(mdata["rna"].X))
    y = mdata.obs["cell_type"].cat.codes.to_numpy()
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    acc = LogisticRegression(max_iter=2000).fit(xtr, ytr).score(xte, yte)
    assert acc > 0.9
    # the noise modality carries no signal
    xn = np.log1p(_dense(mdata["noise"].X))
    xtr, xte, ytr, yte = train_test_split(xn, y, test_size=0.3, random_state=0, stratify=y)
    assert LogisticRegression(max_iter=2000).fit(xtr, ytr).score(xte, yte) < 0.5
