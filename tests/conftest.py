"""Shared fixtures: real data from ../shared/data, synthetic data, fast training options.

Tests never touch the network: :func:`pytest_configure` makes every connection to a host
other than this machine fail loudly. A test whose subject is a real dataset skips (with the
reason) when that dataset's folder is absent; everything else runs on
:func:`mmdyn_sc.datasets.synthetic` fixtures. ``MMDYN_SC_TEST_DATA_DIR=/some/empty/dir``
simulates a clone without the data folder.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

# One thread for torch and numba, which share the OpenMP runtime, unless the caller chose
# (OMP_NUM_THREADS): the test models are tiny, a second thread only spins (up to 25x the CPU
# time on a busy 2-core machine), and numba's OpenMP layer (scanpy's normalize_total in
# pp.prepare) would otherwise raise torch's thread count to the core count mid-session.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
if "torch" in sys.modules:  # imported before this file: follow the variable now
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

#: Environment variable overriding where the tests look for the real datasets.
TEST_DATA_ENV = "MMDYN_SC_TEST_DATA_DIR"
SHARED_DATA = Path(
    os.environ.get(TEST_DATA_ENV) or Path(__file__).parents[1] / ".." / "shared" / "data"
).resolve()

#: Few epochs and small layers: tests check behaviour, benchmarks check quality.
FAST = {"max_epochs": 4, "n_hidden": 32, "enable_progress_bar": False, "attribution": False}


# ------------------------------------------------------------------------------ no network
def _is_local(host) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths as bytes, and the like
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkAccessError(RuntimeError):
    """A test tried to reach another machine (not an OSError, so no caller retries it)."""


def _refuse(what: str, host) -> None:
    raise NetworkAccessError(
        f"tests must not use the network: {what} {host!r}. A test that needs a dataset must "
        f"skip when its folder is absent from {SHARED_DATA}, never download it."
    )


def _block_network() -> pytest.MonkeyPatch:
    patch = pytest.MonkeyPatch()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def host_of(address):
        return address[0] if isinstance(address, tuple) else address

    def connect(self, address):
        if self.family != socket.AF_UNIX and not _is_local(host_of(address)):
            _refuse("connect to", address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family != socket.AF_UNIX and not _is_local(host_of(address)):
            _refuse("connect to", address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not _is_local(name):
            _refuse("look up", name)
        return real_getaddrinfo(host, *args, **kwargs)

    patch.setattr(socket.socket, "connect", connect)
    patch.setattr(socket.socket, "connect_ex", connect_ex)
    patch.setattr(socket, "getaddrinfo", getaddrinfo)
    return patch


def pytest_configure(config):
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    config._mmdyn_no_network = _block_network()


def pytest_unconfigure(config):
    patch = getattr(config, "_mmdyn_no_network", None)
    if patch is not None:
        patch.undo()


# ------------------------------------------------------------------------------ CPU time
def pytest_addoption(parser):
    parser.addoption(
        "--cpu-durations", type=int, default=None, metavar="N",
        help="list the N tests that used the most CPU time, this process's and its child "
             "processes' (0: all); the CI budget is CPU time (README, Development)",
    )


_CPU_START = pytest.StashKey[float]()
#: CPU seconds per test node id, as reported (by this process or by pytest-xdist workers).
_REPORTED_CPU: dict[str, float] = {}


def _cpu_seconds() -> float:
    own, children = (resource.getrusage(who)
                     for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[_CPU_START] = _cpu_seconds()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # The CPU time of setup, call and teardown rides on the teardown report, which pytest-xdist
    # sends from its worker to the process that prints the summary.
    outcome = yield
    if call.when == "teardown" and _CPU_START in item.stash:
        outcome.get_result().user_properties.append(
            ("cpu_seconds", _cpu_seconds() - item.stash[_CPU_START]))


def pytest_runtest_logreport(report):
    if report.when == "teardown":
        for name, value in report.user_properties:
            if name == "cpu_seconds":
                _REPORTED_CPU[report.nodeid] = value


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = config.getoption("--cpu-durations")
    seconds = _REPORTED_CPU
    if n is None or not seconds:
        return
    ranked = sorted(seconds.items(), key=lambda kv: kv[1], reverse=True)
    terminalreporter.write_sep("=", f"CPU time per test (setup, call and teardown; "
                                    f"total {sum(seconds.values()):.0f} s)")
    for nodeid, cpu in ranked[: n or None]:
        terminalreporter.write_line(f"{cpu:8.2f}s {nodeid}")


# ------------------------------------------------------------------------------ options
@pytest.fixture
def fast() -> dict:
    """Training options for tests (a fresh dict per test)."""
    return dict(FAST)


# ------------------------------------------------------------------------------ real data
def require_dataset(folder: str) -> Path:
    path = SHARED_DATA / folder
    if not path.is_dir():
        pytest.skip(f"real dataset {folder} not found in {SHARED_DATA} (tests never download)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real datasets (``../shared/data`` or ``$MMDYN_SC_TEST_DATA_DIR``)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def dataset_path():
    """``dataset_path("bccd_wbc_crops")``: that dataset's folder, or skip when absent."""
    return require_dataset


@pytest.fixture(scope="session")
def _empty_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("no_data")


@pytest.fixture(autouse=True)
def _local_data_dir(monkeypatch, _empty_data_dir):
    """Point the dataset loaders at the real data, or at an empty folder when there is none.

    With no network, a loader that misses its local copy then fails without writing into
    the data folder.
    """
    from mmdyn_sc._settings import settings

    monkeypatch.setattr(settings, "_data_dir",
                        SHARED_DATA if SHARED_DATA.is_dir() else _empty_data_dir)


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
def bccd64(bccd_root):
    """All 351 BCCD crops as 3 x 64 x 64 uint8 images, labelled in obs["label"]."""
    import pandas as pd

    import mmdyn_sc as ms

    index = pd.read_csv(bccd_root / "index.csv")
    index.index = [Path(p).stem for p in index["path"]]
    return ms.pp.images_from_files(index["path"], root=bccd_root, obs=index, size=64)


# ------------------------------------------------------------------------------ synthetic
#: Size of the synthetic CITE-seq fixture: like prepared BMMC (456 cells, 13 classes), smaller.
SYNTH_CELLS, SYNTH_CLASSES = 320, 4


@pytest.fixture(scope="session")
def _synth_prepared():
    import pandas as pd

    from mmdyn_sc import datasets, pp

    mdata, truth = datasets.synthetic(n_cells=SYNTH_CELLS, n_classes=SYNTH_CLASSES,
                                      noise_modality=False, seed=0)
    pp.prepare(mdata)
    batch = np.where(np.arange(mdata.n_obs) % 2 == 0, "a", "b")
    mdata.obs["batch"] = pd.Categorical(batch)
    return mdata, truth


@pytest.fixture
def synth(_synth_prepared):
    """Synthetic CITE-seq, prepared (a fresh copy per test).

    :func:`mmdyn_sc.datasets.synthetic` with 320 cells, 4 balanced classes ``type_0 ...`` in
    ``obs["cell_type"]``, ``"rna"`` (200 genes ``gene_*``, CSR) and ``"prot"`` (30 proteins
    ``prot_*``, dense), counts in ``.X`` and ``layers["counts"]``, :func:`mmdyn_sc.pp.prepare`'s
    ``layers["mmdyn_prepared"]``, and ``obs["batch"]``: ``"a"`` and ``"b"`` alternating.
    """
    return _synth_prepared[0].copy()


@pytest.fixture
def synth_truth(_synth_prepared) -> dict:
    """The ground truth :func:`mmdyn_sc.datasets.synthetic` returned for :func:`synth`."""
    return _synth_prepared[1]


@pytest.fixture
def synth_batches(synth):
    """(batch ``"a"``, batch ``"b"``) copies of :func:`synth`: 160 cells each, every class."""
    return (synth[synth.obs["batch"] == "a"].copy(), synth[synth.obs["batch"] == "b"].copy())


@pytest.fixture(scope="session")
def _synth_fitted(_synth_prepared):
    import mmdyn_sc as ms

    mdata = _synth_prepared[0]
    train = mdata[mdata.obs["batch"] == "a"].copy()
    model = ms.tl.fit(train, "cell_type", seed=0, **FAST)
    return train, model


@pytest.fixture
def synth_fitted(_synth_fitted, synth_batches):
    """(train, query, model): ``tl.fit(train, "cell_type", seed=0, **FAST)`` on batch a of
    :func:`synth`, fitted once per session (do not change the model); ``train`` (with the
    keys the fit wrote) and ``query`` (batch b, untouched) are fresh copies."""
    train, model = _synth_fitted
    return train.copy(), synth_batches[1], model


def synthetic_images(n_per_class: int = 30, n_classes: int = 4, size: int = 32, seed: int = 0):
    """Labelled images whose class is a bright square's position and colour, on noise.

    Returns an AnnData with no features, ``obsm["image"]`` (n, 3, size, size) uint8 and
    ``obs["label"]`` (``"class_0" ...``), cells named ``image_0 ...``.
    """
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = n_per_class * n_classes
    labels = np.repeat(np.arange(n_classes), n_per_class)
    images = rng.integers(0, 80, size=(n, 3, size, size)).astype(np.uint8)
    side = size // 4
    for i, c in enumerate(labels):
        row, col = (c // 2) * size // 2, (c % 2) * size // 2
        row += int(rng.integers(0, size // 2 - side + 1))
        col += int(rng.integers(0, size // 2 - side + 1))
        images[i, c % 3, row : row + side, col : col + side] = 200 + rng.integers(0, 56)
    obs = pd.DataFrame({"label": [f"class_{c}" for c in labels]},
                       index=[f"image_{i}" for i in range(n)])
    return ad.AnnData(X=np.zeros((n, 0), dtype=np.float32), obs=obs, obsm={"image": images})


@pytest.fixture(scope="session")
def make_synth_images():
    """:func:`synthetic_images` itself, for tests that need other sizes or counts."""
    return synthetic_images


@pytest.fixture(scope="session")
def _synth_images():
    return synthetic_images()


@pytest.fixture
def synth_images(_synth_images):
    """120 synthetic 3 x 32 x 32 uint8 images, 4 classes in ``obs["label"]`` (a fresh copy).

    The class sets where a bright square lies (one image quadrant per class) and its channel;
    see :func:`synthetic_images`.
    """
    return _synth_images.copy()


@pytest.fixture(scope="session")
def _synth_trimodal(_synth_prepared, _synth_images):
    import mmdyn_sc as ms

    mdata = _synth_prepared[0]
    images = _synth_images
    mapping = {"type_0": "class_0", "type_1": "class_1", "type_2": "class_2"}
    rank = images.obs.groupby("label").cumcount().to_numpy()
    groups = np.where(rank % 2 == 0, "a", "b")
    paired = ms.pp.pair_images_by_label(mdata, images, mapping, cell_groups="batch",
                                        image_groups=groups, seed=0)
    return tuple(paired[paired.obs["batch"] == b].copy() for b in ("a", "b"))


@pytest.fixture
def synth_trimodal(_synth_trimodal):
    """(batch a, batch b) of :func:`synth` with a ``"image"`` modality paired by label.

    Cells of ``type_0 ... type_2`` get a :func:`synth_images` image of ``class_0 ... class_2``
    (images alternate between the batches, so batch b's images are never trained on);
    ``type_3`` cells have no image.
    """
    return tuple(m.copy() for m in _synth_trimodal)


@pytest.fixture
def plotting():
    """For plot tests: scanpy's autoshow off (plots return their Axes unless a test turns it
    back on), every figure closed afterwards."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    before = sc.settings.autoshow  # a class property: monkeypatch cannot restore it
    sc.settings.autoshow = False
    yield
    sc.settings.autoshow = before
    plt.close("all")
