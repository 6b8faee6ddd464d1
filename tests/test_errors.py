"""Clear errors for inputs a user can get wrong (synthetic CITE-seq of conftest, tiny synthetic
data)."""

import re
import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import mmdyn_sc as ms
from mmdyn_sc._data import align_mudata
from mmdyn_sc._utils import mudata_options
from mmdyn_sc.datasets import synthetic
from mmdyn_sc.model._setup import resolve_setup
from mmdyn_sc.model._split import stratified_split


def test_unknown_labels_key_lists_and_suggests(synth, fast):
    with pytest.raises(KeyError, match=r"cell_typ.*not found.*Available columns.*'cell_type'"):
        ms.tl.fit(synth, "cell_typ", **fast)


def test_labels_key_from_one_modality(synth, fast):
    synth["prot"].obs["only_here"] = synth.obs["cell_type"].to_numpy()
    model = ms.tl.fit(synth, "only_here", **fast)
    assert model.classes_ == sorted(str(c) for c in synth.obs["cell_type"].cat.categories)
    model = ms.tl.fit(synth, "prot:only_here", key_added="b", **fast)
    assert "b_proba" in synth.obsm


def test_unknown_modality(synth, fast):
    with pytest.raises(KeyError, match=r"Modality 'protein' not found.*Did you mean 'prot'"):
        ms.tl.fit(synth, "cell_type", modalities=["rna", "protein"], **fast)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_input(synth, bad, fast):
    layer = synth["prot"].layers["mmdyn_prepared"]
    layer[3, 5] = bad
    with pytest.raises(ValueError, match=r"modality 'prot' layer 'mmdyn_prepared' contains 1 NaN"):
        ms.tl.fit(synth, "cell_type", **fast)


def test_fewer_than_two_classes(synth, fast):
    synth.obs["one"] = "T cell"
    with pytest.raises(ValueError, match="at least two are needed"):
        ms.tl.fit(synth, "one", **fast)


def test_negative_counts(synth):
    synth["rna"].X = synth["rna"].layers["mmdyn_prepared"].copy()
    synth["rna"].X[0, 0] = -1.0
    with pytest.raises(ValueError, match=r"modality 'rna' X contains negative values"):
        ms.pp.prepare(synth)


def test_query_missing_features(synth_fitted):
    _, query, model = synth_fitted
    dropped = ["prot_3", "prot_17"]
    keep = ~query["prot"].var_names.isin(dropped)
    with mudata_options():
        broken = md.MuData({"rna": query["rna"].copy(), "prot": query["prot"][:, keep].copy()})
    with pytest.raises(KeyError, match=r"modality 'prot'.* lacks 2 of the model's features") as err:
        ms.tl.predict(broken, model)
    assert all(repr(name) in str(err.value) for name in dropped)


def test_bad_options(synth, fast):
    with pytest.raises(ValueError, match="Unknown recipe"):
        ms.tl.fit(synth, "cell_type", recipe="fancy", **fast)
    with pytest.raises(KeyError, match="Layer 'nope' not found in modality 'rna'"):
        ms.tl.fit(synth, "cell_type", layers={"rna": "nope"}, **fast)
    with pytest.raises(KeyError, match="mask_var column 'hvg' not found"):
        ms.tl.fit(synth, "cell_type", mask_var={"rna": "hvg"}, **fast)
    with pytest.raises(ValueError, match="feature_scaling must be one of"):
        ms.tl.fit(synth, "cell_type", feature_scaling="log", **fast)
    with pytest.raises(ValueError, match="key_added 'a/b' contains '/'"):
        ms.tl.fit(synth, "cell_type", key_added="a/b", **fast)
    for seed in ("x", -1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be None or an integer"):
            ms.tl.fit(synth, "cell_type", seed=seed, **fast)


def test_mask_var_restricts_features(synth, fast):
    synth["rna"].var["first"] = np.arange(synth["rna"].n_vars) < 100
    model = ms.tl.fit(synth, "cell_type", mask_var={"rna": "first"}, **fast)
    assert len(model.features_["rna"]) == 100
    info = synth["rna"].var["mmdyn_informativeness"]
    assert info.iloc[:100].notna().all() and info.iloc[100:].isna().all()


# ---------------------------------------------------------------- reliability (issue)
#: One short epoch with tiny layers: these tests check behaviour, not accuracy.
TINY = {"max_epochs": 1, "n_hidden": 8, "enable_progress_bar": False}


def _mudata(**modalities):
    with mudata_options():
        return md.MuData(modalities)


def test_single_cell_class_is_trained_on_with_a_warning(synth):
    name = "type_1"
    labels = synth.obs["cell_type"].copy()
    members = np.flatnonzero(labels.to_numpy() == name)
    labels.iloc[members[1:]] = np.nan
    synth.obs["one_of_type_1"] = labels
    with pytest.warns(UserWarning) as record:
        model = ms.tl.fit(synth, "one_of_type_1", **TINY)
    messages = [str(w.message) for w in record if "single labelled cell" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in record]
    assert re.search(rf"Class '{re.escape(name)}' has a single labelled "
                     r"cell: it is used for training only and excluded from the validation",
                     messages[0])
    assert members[0] in model.train_indices
    assert members[0] not in model.validation_indices
    assert synth.obs["mmdyn_split"].iloc[members[0]] == "train"
    assert np.isfinite(synth.obsm["mmdyn_proba"].to_numpy()).all()


def test_single_cell_class_split_names_the_class():
    labels = np.array([0, 0, 0, 0, 1, 2, 2, -1])
    with pytest.warns(UserWarning, match=r"^Class 'B' has a single labelled cell"):
        train, validation = stratified_split(labels, 0.5, seed=0, classes=["A", "B", "C"])
    assert 4 in train and 4 not in validation and 7 not in train and 7 not in validation
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no validation split asked for: nothing to warn about
        stratified_split(labels, 1.0, seed=0, classes=["A", "B", "C"])
    with pytest.warns(UserWarning, match=r"^Classes 'A', 'B' have a single labelled cell"):
        stratified_split(np.array([0, 1, 2, 2]), 0.5, seed=0, classes=["A", "B", "C"])


@pytest.mark.parametrize("missing", [np.nan, None])
def test_all_labels_missing(synth, missing):
    synth.obs["nothing"] = pd.Series([missing] * synth.n_obs, index=synth.obs_names, dtype=object)
    with pytest.raises(ValueError,
                       match=rf"Labels key 'nothing': all {synth.n_obs} cells are unlabeled"):
        ms.tl.fit(synth, "nothing", **TINY)
    synth.obs["nothing_cat"] = pd.Categorical([np.nan] * synth.n_obs, categories=["T", "B"])
    with pytest.raises(ValueError, match=rf"all {synth.n_obs} cells are unlabeled"):
        ms.tl.fit(synth, "nothing_cat", **TINY)


def test_modalities_sharing_no_cell(synth):
    n_rna = 200
    mdata = _mudata(rna=synth["rna"][:n_rna].copy(), prot=synth["prot"][n_rna:].copy())
    mdata.obs["cell_type"] = synth.obs["cell_type"].reindex(mdata.obs_names)
    n_prot = synth.n_obs - n_rna
    with pytest.raises(ValueError, match=rf"Modalities 'rna' \({n_rna} cells\) and 'prot' "
                                         rf"\({n_prot} cells\) share no cell"):
        ms.tl.fit(mdata, "cell_type", **TINY)


def test_modalities_linked_through_a_third_are_accepted(synth):
    """prot and adt share no cell, but both share cells with rna: a valid mosaic."""
    prot = synth["prot"]
    mdata = _mudata(rna=synth["rna"].copy(), prot=prot[:200].copy(), adt=prot[200:].copy())
    resolved = resolve_setup(mdata, None, None, None, None, None, ["a", "b"])
    assert resolved["modalities"] == ["rna", "prot", "adt"]
    mdata = _mudata(rna=synth["rna"][:100].copy(), prot=prot[200:300].copy(),
                    adt=prot[250:].copy())
    with pytest.raises(ValueError, match=r"Modalities 'rna' \(100 cells\) and 'prot' "
                                         r"\(100 cells\) share no cell.*\[\['rna'\], "
                                         r"\['prot', 'adt'\]\]"):
        resolve_setup(mdata, None, None, None, None, None, ["a", "b"])


def test_duplicate_cell_names(synth):
    prot = synth["prot"].copy()
    prot.obs_names = [prot.obs_names[0], *prot.obs_names[:-1]]
    duplicated = prot.obs_names[0]
    mdata = _mudata(rna=synth["rna"].copy(), prot=prot)
    mdata.obs["cell_type"] = synth.obs["cell_type"].reindex(mdata.obs_names).to_numpy()
    with pytest.raises(ValueError, match=rf"Modality 'prot' has 1 duplicate cell name\(s\) "
                                         rf"\(obs_names\): \['{duplicated}'\]"):
        ms.tl.fit(mdata, "cell_type", **TINY)
    # Unique in every modality, repeated in mdata.obs_names.
    names = list(synth.obs_names)
    synth.obs.index = [names[1], *names[1:]]
    with pytest.raises(ValueError, match=rf"mdata has 1 duplicate cell name\(s\) \(obs_names\): "
                                         rf"\['{names[1]}'\]"):
        ms.tl.fit(synth, "cell_type", **TINY)


def test_duplicate_feature_names_within_a_modality(synth):
    prot = synth["prot"].copy()
    names = list(prot.var_names)
    prot.var_names = [names[0], names[0], *names[2:]]
    mdata = _mudata(rna=synth["rna"].copy(), prot=prot)
    mdata.obs["cell_type"] = synth.obs["cell_type"].to_numpy()
    with pytest.raises(ValueError, match=rf"Modality 'prot' has 1 duplicate feature name\(s\) "
                                         rf"\(var_names\): \['{names[0]}'\]"):
        ms.tl.fit(mdata, "cell_type", **TINY)
    # Repeated names the model does not use are no obstacle.
    prot.var["use"] = np.arange(prot.n_vars) >= 2
    resolved = resolve_setup(mdata, "cell_type", None, None, {"prot": "use"}, None, None)
    aligned = align_mudata(mdata, resolved["modalities"], resolved["layers"],
                           resolved["features"], resolved["label_codes"])
    assert list(aligned.mdata["prot"].var_names) == names[2:]


def test_same_feature_name_in_two_modalities_and_unpaired_query(synth):
    """A gene and a protein of the same name, then a query whose modalities share no cell."""
    rna, prot = synth["rna"].copy(), synth["prot"].copy()
    gene = next(g for g in rna.var_names if g not in set(prot.var_names))
    prot.var_names = [gene, *prot.var_names[1:]]
    mdata = _mudata(rna=rna, prot=prot)
    mdata.obs["cell_type"] = synth.obs["cell_type"].to_numpy()
    model = ms.tl.fit(mdata, "cell_type", **TINY)
    assert gene in model.features_["rna"] and model.features_["prot"][0] == gene
    assert mdata["prot"].varm["mmdyn_feature_weights"].index[0] == gene
    assert mdata["prot"].var["mmdyn_informativeness"].notna().all()
    assert mdata["rna"].var["mmdyn_informativeness"].notna().all()

    # Prediction: each cell from what it has, even when the modalities share no cell.
    query = _mudata(rna=rna[:200].copy(), prot=prot[200:].copy())
    ms.tl.predict(query, model)
    proba = query.obsm["mmdyn_proba"].to_numpy()
    assert proba.shape == (synth.n_obs, len(model.classes_)) and np.isfinite(proba).all()
    confidence = query.obsm["mmdyn_confidence"]
    assert confidence["prot"].iloc[:200].isna().all() and confidence["rna"].iloc[200:].isna().all()

    # NaN in a query is caught too, naming the modality.
    broken = _mudata(rna=rna.copy(), prot=prot.copy())
    broken["rna"].layers["mmdyn_prepared"].data[0] = np.nan
    with pytest.raises(ValueError, match=r"modality 'rna' layer 'mmdyn_prepared' contains 1 NaN"):
        ms.tl.predict(broken, model)


def _small(dtype, seed=0):
    """Tiny synthetic data, every modality as ``dtype``: rna dense, prot CSR, noise CSC.

    prot lacks 10 cells and has its cells shuffled, so rows are reordered on alignment.
    float16 stays dense (scipy.sparse does not hold float16).
    """
    mdata, _ = synthetic(n_cells=60, n_classes=3, n_features={"rna": 12, "prot": 6, "noise": 4},
                         seed=seed)
    formats = {"rna": np.asarray, "prot": sparse.csr_matrix, "noise": sparse.csc_matrix}
    keep = np.random.default_rng(seed).permutation(mdata.n_obs)[10:]
    mods = {}
    for mod, adata in mdata.mod.items():
        counts = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
        counts = np.minimum(counts, 1 if dtype is bool else 100)
        values = counts.astype(dtype)
        fmt = np.asarray if np.dtype(dtype) == np.float16 else formats[mod]
        adata = ad.AnnData(X=fmt(values), obs=adata.obs[[]], var=adata.var[[]])
        mods[mod] = adata[keep].copy() if mod == "prot" else adata
    out = _mudata(**mods)
    out.obs["cell_type"] = mdata.obs["cell_type"].reindex(out.obs_names)
    return out


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                   np.float16, np.float64, bool])
def test_integer_float_bool_sparse_inputs(dtype):
    mdata = _small(dtype)
    before = {mod: (type(a.X), a.X.dtype) for mod, a in mdata.mod.items()}
    ms.tl.fit(mdata, "cell_type", **TINY)
    assert np.isfinite(mdata.obsm["mmdyn_proba"].to_numpy()).all()
    assert {mod: (type(a.X), a.X.dtype) for mod, a in mdata.mod.items()} == before


def test_integer_input_predicts_as_float32():
    """Float-valued integer counts as int16 / uint8 (sparse too): the same numbers throughout."""
    probas = {}
    for dtype in (np.float32, np.int16, np.uint8):
        mdata = _small(dtype)
        ms.tl.fit(mdata, "cell_type", seed=1, **TINY)
        probas[np.dtype(dtype).name] = mdata.obsm["mmdyn_proba"]
    pd.testing.assert_frame_equal(probas["int16"], probas["float32"])
    pd.testing.assert_frame_equal(probas["uint8"], probas["float32"])


@pytest.mark.parametrize("values", [lambda x: x.astype(str), lambda x: x.astype(object),
                                    lambda x: x.astype(np.complex64)])
def test_non_numeric_matrix(values):
    mdata = _small(np.float32)
    prot = mdata["prot"]
    mdata.mod["prot"] = ad.AnnData(X=values(prot.X.toarray()), obs=prot.obs, var=prot.var)
    with pytest.raises(TypeError, match=r"modality 'prot' has non-numeric dtype"):
        ms.tl.fit(mdata, "cell_type", **TINY)


def test_empty_modality(synth):
    prot = synth["prot"]
    no_features = _mudata(rna=synth["rna"].copy(), prot=prot[:, []].copy())
    no_features.obs["cell_type"] = synth.obs["cell_type"].to_numpy()
    with pytest.raises(ValueError, match=r"Modality 'prot' has no features \(0 variables\)"):
        ms.tl.fit(no_features, "cell_type", **TINY)
    no_cells = _mudata(rna=synth["rna"].copy(), prot=prot[[]].copy())
    no_cells.obs["cell_type"] = synth.obs["cell_type"].to_numpy()
    with pytest.raises(ValueError, match=r"Modality 'prot' has no cells \(0 observations\)"):
        ms.tl.fit(no_cells, "cell_type", **TINY)
