"""Shared fixtures: real data from ../shared/data and fast training options."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

SHARED_DATA = (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()

#: Few epochs and small layers: tests check behaviour, benchmarks check quality.
FAST = {"max_epochs": 4, "n_hidden": 32, "enable_progress_bar": False}


def pytest_configure(config):
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture
def fast() -> dict:
    """Training options for tests (a fresh dict per test)."""
    return dict(FAST)


def require_dataset(folder: str) -> Path:
    path = SHARED_DATA / folder
    if not path.is_dir():
        pytest.skip(f"dataset {folder} not found in {SHARED_DATA}")
    return path


@pytest.fixture(autouse=True)
def _local_data_dir(monkeypatch):
    """Point the dataset loaders at ../shared/data; no test downloads anything."""
    from mmdyn_sc._settings import settings

    monkeypatch.setattr(settings, "_data_dir", SHARED_DATA)


@pytest.fixture(scope="session")
def _bmmc_prepared():
    from mmdyn_sc import datasets, pp
    from mmdyn_sc._settings import settings

    require_dataset("bmmc_cite_neurips2021")
    old = settings._data_dir
    settings._data_dir = SHARED_DATA
    try:
        mdata = datasets.bmmc_cite()
    finally:
        settings._data_dir = old
    pp.prepare(mdata)
    counts = mdata.obs["cell_type"].value_counts()
    mdata = mdata[mdata.obs["cell_type"].isin(counts.index[counts >= 10])].copy()
    mdata.obs["cell_type"] = mdata.obs["cell_type"].cat.remove_unused_categories()
    return mdata


@pytest.fixture
def bmmc(_bmmc_prepared):
    """Prepared BMMC CITE-seq (classes with >= 10 cells: 456 cells), a fresh copy per test."""
    return _bmmc_prepared.copy()


@pytest.fixture
def bmmc_donors(bmmc):
    """(donor s1d1, donor s1d2) copies of :func:`bmmc`."""
    return (bmmc[bmmc.obs["batch"] == "s1d1"].copy(), bmmc[bmmc.obs["batch"] == "s1d2"].copy())


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    """``../shared/data/bccd_wbc_crops`` (skip when absent)."""
    return require_dataset("bccd_wbc_crops")


@pytest.fixture(scope="session")
def bccd32(bccd_root):
    """All 351 BCCD crops as 3 x 32 x 32 uint8 images, labelled in obs["label"]."""
    import pandas as pd

    import mmdyn_sc as ms

    root = bccd_root
    index = pd.read_csv(root / "index.csv")
    index.index = [Path(p).stem for p in index["path"]]
    return ms.pp.images_from_files(index["path"], root=root, obs=index, size=32)
