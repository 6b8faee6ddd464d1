"""Tests for mmdyn_sc.datasets.bccd_wbc: BCCD white-blood-cell crops as an image MuData.

The crops are read from ``../shared/data/bccd_wbc_crops`` (tests needing them skip when it is
absent); they are never downloaded. The default load happens once per module.
"""

from __future__ import annotations

from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
import pooch
import pytest

import mmdyn_sc as ms
from mmdyn_sc import datasets
from mmdyn_sc._settings import settings

FOLDER = "bccd_wbc_crops"
COMMIT = "7751031e0b41bcfdff998cbc4c698a445a60b49e"
COUNTS = {"Neutrophil": 207, "Eosinophil": 88, "Lymphocyte": 33, "Monocyte": 20, "Basophil": 3}
KEPT = {k: v for k, v in COUNTS.items() if v >= 10}


def _no_network(*args, **kwargs):
    raise AssertionError(f"bccd_wbc must never download: pooch.retrieve{args}{kwargs}")


@pytest.fixture(autouse=True)
def _forbid_download(monkeypatch):
    monkeypatch.setattr(pooch, "retrieve", _no_network)


def _load(root: Path, **kwargs) -> md.MuData:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(settings, "_data_dir", root.parent)
        mp.setattr(pooch, "retrieve", _no_network)
        return datasets.bccd_wbc(**kwargs)


@pytest.fixture(scope="module")
def root(dataset_path) -> Path:
    return dataset_path(FOLDER)


@pytest.fixture(scope="module")
def bccd(root) -> md.MuData:
    return _load(root)


def _images(mdata: md.MuData) -> np.ndarray:
    return mdata["image"].obsm["image"]


# ------------------------------------------------------------------------------ default load
def test_structure_shapes_and_dtype(bccd):
    assert isinstance(bccd, md.MuData)
    assert list(bccd.mod) == ["image"]
    n = sum(KEPT.values())
    assert bccd.n_obs == bccd["image"].n_obs == n == 348
    images = _images(bccd)
    assert isinstance(images, np.ndarray)
    assert images.shape == (n, 3, 64, 64)
    assert images.dtype == np.uint8
    assert bccd["image"].X.shape == (n, 0)
    assert bccd["image"].uns["image"]["size"] == 64
    assert images.std() > 10  # real pictures, not an empty array


def test_labels_and_counts(bccd):
    cell_type = bccd.obs["cell_type"]
    assert isinstance(cell_type.dtype, pd.CategoricalDtype)
    assert list(cell_type.cat.categories) == sorted(KEPT)
    assert cell_type.value_counts().to_dict() == KEPT
    mod_type = bccd["image"].obs["cell_type"]
    assert isinstance(mod_type.dtype, pd.CategoricalDtype)
    assert (mod_type.reindex(bccd.obs_names).astype(str) == cell_type.astype(str)).all()
    # the label is the class folder of each file
    folders = bccd["image"].obs["image_path"].map(lambda p: Path(p).parent.name)
    assert (folders == mod_type.astype(str)).all()


def test_obs_names_and_source_image(bccd, root):
    assert bccd.obs_names.is_unique
    assert list(bccd.obs_names) == list(bccd["image"].obs_names)
    index = pd.read_csv(root / "index.csv")
    index = index[index["label"] != "Basophil"]
    assert list(bccd.obs_names) == [Path(p).stem for p in index["path"]]
    assert list(bccd.obs["source_image"]) == list(index["source_image"])
    assert list(bccd["image"].obs["source_image"]) == list(index["source_image"])


def test_images_are_the_files_in_order(bccd, root):
    rows = [0, 100, bccd.n_obs - 1]
    paths = [Path(bccd["image"].obs["image_path"].iloc[i]).relative_to(root) for i in rows]
    direct = ms.pp.images_from_files(paths, root=root, size=64)
    np.testing.assert_array_equal(_images(bccd)[rows], direct.obsm["image"])


def test_dropped_classes_recorded(bccd):
    record = bccd.uns["bccd_wbc"]
    assert list(record["dropped_classes"]) == ["Basophil"]
    assert list(record["dropped_counts"]) == [3]
    assert record["size"] == 64 and record["min_cells"] == 10
    assert record["repository"] == "apple2373/BCCD" and record["commit"] == COMMIT


# ------------------------------------------------------------------------------ options
def test_size_and_keep_all_classes(root):
    mdata = _load(root, size=32, min_cells=0)
    assert _images(mdata).shape == (351, 3, 32, 32)
    assert _images(mdata).dtype == np.uint8
    assert mdata.obs["cell_type"].value_counts().to_dict() == COUNTS
    assert list(mdata.obs["cell_type"].cat.categories) == sorted(COUNTS)
    assert len(mdata.uns["bccd_wbc"]["dropped_classes"]) == 0
    assert mdata.obs_names.is_unique


def test_min_cells_drops_small_classes(bccd, root, caplog):
    with caplog.at_level("INFO", logger="mmdyn_sc"):
        mdata = _load(root, min_cells=34)
    assert _images(mdata).shape == (207 + 88, 3, 64, 64)
    # the same cells and images as in the default load, only fewer of them
    kept = bccd.obs_names[bccd.obs["cell_type"].isin(["Eosinophil", "Neutrophil"])]
    assert list(mdata.obs_names) == list(kept)
    np.testing.assert_array_equal(_images(mdata), _images(bccd[kept]))
    assert mdata.obs["cell_type"].value_counts().to_dict() == {"Neutrophil": 207, "Eosinophil": 88}
    assert list(mdata.obs["cell_type"].cat.categories) == ["Eosinophil", "Neutrophil"]
    record = mdata.uns["bccd_wbc"]
    assert list(record["dropped_classes"]) == ["Basophil", "Lymphocyte", "Monocyte"]
    assert list(record["dropped_counts"]) == [3, 33, 20]
    assert "dropped 3 class(es)" in caplog.text and "Lymphocyte" in caplog.text


def test_min_cells_dropping_everything_raises(root):
    with pytest.raises(ValueError, match="drops every class"):
        _load(root, min_cells=1000)


@pytest.mark.parametrize("size", [0, -4, 2.5, "64", True, None])
def test_bad_size_raises(size):
    with pytest.raises(ValueError, match=r"size must be an integer >= 1 \(pixels per side"):
        datasets.bccd_wbc(size=size)


@pytest.mark.parametrize("min_cells", [-1, 1.5, "10"])
def test_bad_min_cells_raises(min_cells):
    with pytest.raises(ValueError, match="min_cells must be an integer >= 0"):
        datasets.bccd_wbc(min_cells=min_cells)


# ------------------------------------------------------------------------------ no local copy
def test_missing_folder_raises_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "_data_dir", tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        datasets.bccd_wbc()
    message = str(info.value)
    for part in (
        str(tmp_path / FOLDER / "index.csv"),
        f"folder '{FOLDER}'",
        "index.csv",
        "images/<Class>/*.jpg",
        "apple2373/BCCD",
        COMMIT,
        "no licence",
        "MMDYN_SC_DATA_DIR",
        "mmdyn_sc.settings.data_dir",
    ):
        assert part in message, (part, message)
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing fetched
