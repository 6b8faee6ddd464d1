"""Class names with "/" (BMMC's "MK/E prog") are written under safe names and shown as given."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mudata as md  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import mmdyn_sc as ms  # noqa: E402
from mmdyn_sc._keys import Key  # noqa: E402
from mmdyn_sc._names import original_names, safe_names  # noqa: E402
from mmdyn_sc.tl._store import h5_safe  # noqa: E402

SLASHED = {"type_0": "MK/E prog", "type_1": "G/M prog"}
TINY = {"max_epochs": 2, "n_hidden": 16, "enable_progress_bar": False}
#: anndata's FutureWarning for "/" in h5 keys (pytest's config ignores FutureWarning).
SLASH_WARNING = "Forward slashes"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def write_without_slash_warning(mdata, path) -> None:
    with warnings.catch_warnings():
        # an error, in front of pytest's "ignore::FutureWarning"
        warnings.filterwarnings("error", message=SLASH_WARNING)
        mdata.write_h5mu(path)


# ------------------------------------------------------------------------------ the rule
def test_rule_examples():
    assert safe_names(["MK/E prog", "G/M prog", "NK"]) == ["MK_E prog", "G_M prog", "NK"]
    # a changed name never takes the name of an unchanged one, wherever it stands
    assert safe_names(["G_M", "G/M"]) == ["G_M", "G_M_2"]
    assert safe_names(["G/M", "G_M"]) == ["G_M_2", "G_M"]
    assert safe_names(["a/b", "a_b", "a_b_2"]) == ["a_b_3", "a_b", "a_b_2"]
    assert safe_names(["a/b", "a\\b", "a_b/"]) == ["a_b", "a\\b", "a_b_"]
    assert safe_names(["_index", "x"]) == ["_index_2", "x"]  # reserved by anndata
    assert safe_names([1, 2]) == ["1", "2"]
    assert safe_names([]) == []


@given(st.lists(st.text(alphabet="ab/_2", max_size=5), unique=True, max_size=8))
def test_rule_properties(names):
    safe = safe_names(names)
    assert len(safe) == len(names)
    assert len(set(safe)) == len(safe)  # unique
    assert not any("/" in s for s in safe)
    assert "_index" not in safe
    assert safe == safe_names(list(names))  # deterministic
    for name, out in zip(names, safe, strict=True):
        if "/" not in name and name != "_index":
            assert out == name  # clean names are never renamed
    assert original_names(safe, names) == names
    assert original_names(safe[::-1], names) == names[::-1]  # by name, not only by position


def test_original_names_keeps_other_columns():
    classes = ["MK/E prog", "B"]
    # a file written before safe names (columns as the classes) and a foreign column
    assert original_names(["MK/E prog", "B", "other"], classes) == ["MK/E prog", "B", "other"]


def test_uns_dict_keys_are_safe():
    stored = h5_safe({"per_class": {"MK/E prog": 1.0, "B": None}, "classes": ["MK/E prog"]})
    assert stored["per_class"] == {"MK_E prog": 1.0, "B": "none"}
    assert list(stored["classes"]) == ["MK/E prog"]  # values are kept as they are


# ------------------------------------------------------------------------- round trip
def slashed(mdata):
    """``mdata`` with two of its classes renamed as BMMC's progenitors."""
    mdata.obs["cell_type"] = mdata.obs["cell_type"].cat.rename_categories(SLASHED)
    return mdata


@pytest.fixture(scope="module")
def batches(_synth_prepared):
    """(train, query): the two batches of the synthetic fixture, classes renamed."""
    mdata = _synth_prepared[0]
    return tuple(slashed(mdata[mdata.obs["batch"] == b].copy()) for b in ("a", "b"))


@pytest.fixture(scope="module")
def fitted(batches):
    mdata = batches[0].copy()
    model = ms.tl.fit(mdata, "cell_type", **TINY)
    return mdata, model


def test_fit_writes_h5mu_without_slash_warning_and_reads_back(fitted, tmp_path):
    mdata, model = fitted
    classes = list(model.classes_)
    assert {"MK/E prog", "G/M prog"} <= set(classes)
    safe = safe_names(classes)
    assert "MK_E prog" in safe and "G_M prog" in safe
    # the original names warn (anndata 0.12) or fail (later): guards against a silent change
    unsafe = mdata.copy()
    unsafe.obsm[Key.obsm.proba()].columns = classes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            unsafe.write_h5mu(tmp_path / "unsafe.h5mu")
        except ValueError as error:
            assert "Forward slashes" in str(error)  # noqa: PT017
        else:
            assert any(SLASH_WARNING in str(w.message) for w in caught)

    path = tmp_path / "annotated.h5mu"
    write_without_slash_warning(mdata, path)
    back = md.read_h5mu(path)
    assert list(back.uns["mmdyn"]["classes"]) == classes
    assert list(back.obsm[Key.obsm.proba()].columns) == safe
    np.testing.assert_array_equal(back.obsm[Key.obsm.proba()].to_numpy(),
                                  mdata.obsm[Key.obsm.proba()].to_numpy())
    for mod in ("rna", "prot"):
        assert list(back[mod].varm[Key.varm.feature_weights()].columns) == safe
    # the original names are recovered by position from uns[key]["classes"]
    assert original_names(back.obsm[Key.obsm.proba()].columns,
                          back.uns["mmdyn"]["classes"]) == classes
    # predictions keep the original names (categorical values, not keys)
    assert set(back.obs[Key.obs.prediction()].cat.categories) == set(classes)
    # the plot reading the class-named columns shows the original names
    ax = ms.pl.feature_weights(back, "prot", groupby="class", n_top=2, show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == classes


def test_predict_writes_safe_columns(fitted, batches, tmp_path):
    _, model = fitted
    out = ms.tl.predict(batches[1], model, key_added="query", copy=True)
    safe = safe_names(model.classes_)
    assert list(out.obsm[Key.obsm.proba("query")].columns) == safe
    assert list(out["rna"].varm[Key.varm.feature_weights("query")].columns) == safe
    write_without_slash_warning(out, tmp_path / "query.h5mu")


def test_zarr_accepts_the_safe_names(fitted, tmp_path):
    pytest.importorskip("zarr")
    mdata, _ = fitted
    mdata.write_zarr(tmp_path / "annotated.zarr")  # zarr refuses "/" in keys outright
    back = md.read_zarr(tmp_path / "annotated.zarr")
    assert list(back.obsm[Key.obsm.proba()].columns) == safe_names(mdata.uns["mmdyn"]["classes"])


def test_bmmc_mk_e_prog_round_trip(dataset_path, tmp_path):
    """The real names: every BMMC class, including "MK/E prog" (1 cell) and "G/M prog"."""
    dataset_path("bmmc_cite_neurips2021")
    mdata = ms.datasets.bmmc_cite()
    ms.pp.prepare(mdata)
    assert {"MK/E prog", "G/M prog"} <= set(mdata.obs["cell_type"].cat.categories)
    model = ms.tl.fit(mdata, "cell_type", **TINY)
    path = tmp_path / "bmmc.h5mu"
    write_without_slash_warning(mdata, path)
    back = md.read_h5mu(path)
    assert list(back.uns["mmdyn"]["classes"]) == list(model.classes_)
    columns = list(back.obsm[Key.obsm.proba()].columns)
    assert "MK_E prog" in columns and not any("/" in c for c in columns)
    ax = ms.pl.feature_weights(back, "prot", groupby="class", n_top=1, show=False)
    assert "MK/E prog" in [t.get_text() for t in ax.get_xticklabels()]
