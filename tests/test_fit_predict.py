"""tl.fit / tl.predict: the contract of stored keys on real BMMC CITE-seq (one shared fit);
switches, recipes, copies, seeds and save/load on synthetic CITE-seq."""

import hashlib
from types import SimpleNamespace

import mudata as md
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import mmdyn_sc as ms
from mmdyn_sc import Key
from mmdyn_sc._utils import mudata_options


def _digest(mdata) -> dict[str, str]:
    """Hash of every matrix, layer, obs/var column and obsm/varm/uns key of ``mdata``."""
    out = {}

    def h(name, value):
        if sparse.issparse(value):
            value = value.toarray()
        if isinstance(value, pd.DataFrame | pd.Series):
            value = pd.util.hash_pandas_object(value, index=True).to_numpy()
        out[name] = hashlib.sha1(np.ascontiguousarray(np.asarray(value)).tobytes()).hexdigest()

    h("obs", mdata.obs)
    out["obsm_keys"] = str(sorted(mdata.obsm.keys()))
    out["uns_keys"] = str(sorted(mdata.uns.keys()))
    for mod, adata in mdata.mod.items():
        h(f"{mod}.X", adata.X)
        for layer, value in adata.layers.items():
            h(f"{mod}.layers.{layer}", value)
        h(f"{mod}.obs", adata.obs)
        h(f"{mod}.var", adata.var)
        out[f"{mod}.varm_keys"] = str(sorted(adata.varm.keys()))
        out[f"{mod}.uns_keys"] = str(sorted(adata.uns.keys()))
    return out


def _check_contract(mdata, model, key="mmdyn", roles=("train", "validation")):
    classes = model.classes_
    pred = mdata.obs[Key.obs.prediction(key)]
    assert isinstance(pred.dtype, pd.CategoricalDtype)
    assert list(pred.cat.categories) == classes
    split = mdata.obs[Key.obs.split(key)]
    assert set(split.unique()) <= set(roles) | {"unlabeled"}
    proba = mdata.obsm[Key.obsm.proba(key)]
    assert list(proba.columns) == classes and proba.index.equals(mdata.obs_names)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert (proba.to_numpy().argmax(1) == pred.cat.codes.to_numpy()).all()
    conf = mdata.obsm[Key.obsm.confidence(key)]
    tcp = mdata.obsm[Key.obsm.tcp_true(key)]
    assert list(conf.columns) == list(tcp.columns) == model.modalities_
    labelled = mdata.obs[model.adata_manager.registry["setup_args"]["labels_key"]].notna()
    assert tcp[labelled.to_numpy()].notna().any().all()
    assert ((tcp.dropna() >= 0) & (tcp.dropna() <= 1)).all().all()
    assert mdata.obsm[Key.obsm.latent(key)].shape[0] == mdata.n_obs
    for mod in model.modalities_:
        fw = mdata[mod].varm[Key.varm.feature_weights(key)]
        assert fw.shape == (mdata[mod].n_vars, len(classes))
        assert list(fw.columns) == classes
        info = mdata[mod].var[Key.var.informativeness(key)]
        assert info.notna().all() and ((info > 0) & (info <= 1)).all()
    uns = mdata.uns[key]
    assert list(uns["classes"]) == classes and list(uns["modalities"]) == model.modalities_
    assert "train_loss" in uns["history"]


#: conftest's ``fast`` options, for the module-scoped fit.
FAST = {"max_epochs": 4, "n_hidden": 32, "enable_progress_bar": False}


@pytest.fixture(scope="module")
def bmmc_fitted(_bmmc_prepared):
    """Real BMMC: tl.fit on donor s1d1, tl.predict on donor s1d2, and what both were before.

    One fit for the tests that only read its results (they must not change them).
    """
    donors = _bmmc_prepared.obs["batch"]
    train = _bmmc_prepared[donors == "s1d1"].copy()
    query = _bmmc_prepared[donors == "s1d2"].copy()
    before = {"train": _digest(train), "query": _digest(query)}
    obs_columns = {"train": set(train.obs.columns), "query": set(query.obs.columns)}
    model = ms.tl.fit(train, "cell_type", seed=0, **FAST)
    ms.tl.predict(query, model)
    return SimpleNamespace(train=train, query=query, model=model, before=before,
                           obs_columns=obs_columns)


def test_fit_predict_writes_the_contract(bmmc_fitted):
    train, query, model = bmmc_fitted.train, bmmc_fitted.query, bmmc_fitted.model
    _check_contract(train, model)
    assert {"train", "validation"} <= set(train.uns["mmdyn"]["metrics"])
    assert len(train.uns["mmdyn"]["history"]["train_loss"]) == FAST["max_epochs"]

    _check_contract(query, model, roles=("query",))
    assert (query.obs["mmdyn_split"] == "query").all()
    assert 0.0 <= query.uns["mmdyn"]["metrics"]["query"]["accuracy"] <= 1.0

    # Only documented keys were added; nothing that was there changed.
    for name, mdata in (("train", train), ("query", query)):
        before, after = bmmc_fitted.before[name], _digest(mdata)
        changed = {k for k in before if before[k] != after.get(k)}
        assert changed <= {"obs", "obsm_keys", "uns_keys", "rna.var", "prot.var",
                           "rna.varm_keys", "prot.varm_keys"}
        assert not any(k.startswith("_scvi") for k in mdata.uns)
        obs_new = set(mdata.obs.columns) - bmmc_fitted.obs_columns[name]
        assert obs_new == {"mmdyn_prediction", "mmdyn_split", "mmdyn_certainty"}
        for mod in ("rna", "prot"):
            assert set(mdata[mod].layers) - {None} == {"counts", "mmdyn_prepared"}


def test_copy_semantics(synth_batches, synth_fitted, fast):
    """As scanpy's copy=True: the annotated copy is returned and the input stays as it was."""
    train, _ = synth_batches
    _, query, model = synth_fitted
    before = _digest(train)
    annotated = ms.tl.fit(train, "cell_type", copy=True, **fast)
    assert _digest(train) == before
    assert isinstance(annotated, md.MuData) and "mmdyn_proba" in annotated.obsm
    query_before = _digest(query)
    out = ms.tl.predict(query, model, key_added="other", copy=True)
    assert _digest(query) == query_before
    assert out is not query and list(out.obs_names) == list(query.obs_names)
    assert "other_proba" in out.obsm and "other_proba" not in query.obsm
    assert (out.obs["other_split"] == "query").all()
    # the copy holds what an in-place prediction writes, and nothing else differs
    assert ms.tl.predict(query, model, key_added="other") is None
    pd.testing.assert_frame_equal(out.obsm["other_proba"], query.obsm["other_proba"])
    assert _digest(out) == _digest(query)


def test_copy_of_a_subset_whose_obs_index_lost_its_name(synth_fitted):
    """``mdata[cells].copy()`` drops ``.obs``' index name (pbmc10k's "barcode") but not the
    modalities'; mudata 0.3 then could not copy it without pulling columns."""
    _, query, model = synth_fitted
    for adata in query.mod.values():
        adata.obs.index.name = "barcode"
    query.obs.index.name = None
    out = ms.tl.predict(query, model, copy=True, attribution=False)
    assert out.obs.index.name is None and query.obs.index.name is None
    assert all(a.obs.index.name == "barcode" for a in (*out.mod.values(), *query.mod.values()))
    assert "mmdyn_proba" in out.obsm and "mmdyn_proba" not in query.obsm


@pytest.mark.parametrize("fi", [True, False])
@pytest.mark.parametrize("mi", [True, False])
def test_fi_mi_ablations_train(synth, fi, mi, fast):
    model = ms.tl.fit(synth, "cell_type", feature_informativeness=fi,
                      modality_informativeness=mi, confidence="tcp", **fast)  # has a loss term
    _check_contract(synth, model)
    conf = synth.obsm["mmdyn_confidence"]
    if not mi:  # MM static: every present modality has weight 1
        assert (conf == 1.0).all().all()
    fw = synth["rna"].varm["mmdyn_feature_weights"]
    assert ((fw == 1.0).all().all()) == (not fi)
    history = synth.uns["mmdyn"]["history"]
    assert (np.asarray(history["train_loss_sparsity"]) > 0).all() == fi
    assert (np.asarray(history["train_loss_confidence"]) > 0).all() == mi


def test_paper_recipe_runs(synth):
    model = ms.tl.fit(synth, "cell_type", recipe="paper", max_epochs=3, n_hidden=64,
                      enable_progress_bar=False)
    params = synth.uns["mmdyn"]["train_params"]
    assert params["batch_size"] == synth.n_obs  # every training cell in every step
    assert params["train_size"] == 1.0 and params["lr"] == 1e-4 and params["lr_step_size"] == 500
    assert not params["early_stopping"]
    assert (synth.obs["mmdyn_split"] == "train").all()
    assert model.module.class_weights.eq(1).all()
    scaler = model.module.branches[0].scaler
    assert (scaler.scale != 1).any()  # min-max scaling fitted on the training cells
    assert scaler.clip is None and model.feature_clip is None  # the original: no clipping


def test_unlabeled_cells_are_predicted_not_trained(synth, fast):
    rng = np.random.default_rng(0)
    labels = synth.obs["cell_type"].copy()
    hidden = rng.choice(synth.n_obs, 60, replace=False)
    labels.iloc[hidden] = np.nan
    synth.obs["partial"] = labels
    model = ms.tl.fit(synth, "partial", **fast)
    split = synth.obs["mmdyn_split"].to_numpy()
    assert (split[hidden] == "unlabeled").all()
    assert not np.isin(hidden, model.train_indices).any()
    assert synth.obsm["mmdyn_tcp_true"].iloc[hidden].isna().all().all()
    assert synth.obs["mmdyn_prediction"].iloc[hidden].notna().all()


def test_unpaired_modalities(synth, fast):
    """Protein for 70% of the cells, in shuffled order: fit, predict, NaN confidence."""
    rng = np.random.default_rng(1)
    keep = rng.permutation(synth.n_obs)[: int(0.7 * synth.n_obs)]
    with mudata_options():
        mdata = md.MuData({"rna": synth["rna"].copy(), "prot": synth["prot"][keep].copy()})
    mdata.obs["cell_type"] = synth.obs["cell_type"].reindex(mdata.obs_names)
    model = ms.tl.fit(mdata, "cell_type", **fast)
    conf = mdata.obsm["mmdyn_confidence"]
    has_prot = mdata.obs_names.isin(mdata["prot"].obs_names)
    assert conf.loc[~has_prot, "prot"].isna().all()
    assert conf.loc[has_prot, "prot"].notna().all()
    assert conf["rna"].notna().all()
    assert mdata.obsm["mmdyn_tcp_true"].loc[~has_prot, "prot"].isna().all()

    # The same cells in a paired object with the shuffled order give the same predictions.
    same = ms.tl.predict(mdata, model, key_added="again", copy=True)
    pd.testing.assert_frame_equal(same.obsm["again_proba"], mdata.obsm["mmdyn_proba"],
                                  check_exact=False, atol=1e-5)


def test_same_seed_same_predictions(synth_fitted, synth_batches, fast):
    _, query, model_1 = synth_fitted  # seed 0, fitted earlier in the session
    train, _ = synth_batches
    model_2 = ms.tl.fit(train.copy(), "cell_type", seed=0, **fast)
    first, second = model_1.predict(query, soft=True), model_2.predict(query, soft=True)
    # Bit-identical: weights and predictions, not just close.
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    state_1, state_2 = model_1.module.state_dict(), model_2.module.state_dict()
    assert state_1.keys() == state_2.keys()
    assert all(torch.equal(state_1[k], state_2[k]) for k in state_1)
    other = ms.tl.fit(train.copy(), "cell_type", seed=4, **fast).predict(query, soft=True)
    assert not np.allclose(first.to_numpy(), other.to_numpy())


def test_save_load_round_trip(synth_fitted, tmp_path):
    _, query, model = synth_fitted
    expected = model.predict(query, soft=True)
    model.save(tmp_path / "model", overwrite=True)
    # The query's features in another order: matched by name.
    shuffled = query.copy()
    order = np.random.default_rng(0).permutation(shuffled["rna"].n_vars)
    with mudata_options():
        shuffled = md.MuData({"rna": shuffled["rna"][:, order].copy(),
                              "prot": shuffled["prot"].copy()})
    loaded = ms.MMDynamics.load(tmp_path / "model", shuffled)
    assert loaded.classes_ == model.classes_
    assert loaded.features_ == model.features_
    assert loaded.modalities_ == model.modalities_
    assert loaded.mmdyn_sc_version_ == ms.__version__
    pd.testing.assert_frame_equal(loaded.predict(shuffled, soft=True), expected,
                                  check_exact=False, atol=1e-6)
    # Fitted preprocessing travelled with the model.
    for a, b in zip(model.module.branches, loaded.module.branches, strict=True):
        assert np.allclose(a.scaler.shift.numpy(), b.scaler.shift.numpy())
        assert a.scaler.clip == b.scaler.clip == 5.0  # recipe "default"
    ms.tl.predict(shuffled, loaded)
    assert (shuffled.obs["mmdyn_prediction"].astype(str).to_numpy()
            == expected.idxmax(1).to_numpy()).all()


def test_model_api(synth_batches):
    train, query = synth_batches
    ms.MMDynamics.setup_mudata(train, labels_key="cell_type", modalities=["rna", "prot"])
    assert not any(k.startswith("_scvi") for k in train.uns)
    model = ms.MMDynamics(train, n_hidden={"rna": 32, "prot": 16})
    model.train(max_epochs=2, enable_progress_bar=False)
    assert model.get_latent_representation(query).shape == (query.n_obs, 48)
    conf = model.get_modality_confidence(query)
    assert list(conf.columns) == ["rna", "prot"]
    weights = model.get_feature_weights()
    assert weights["prot"].shape == (train["prot"].n_vars, len(model.classes_))
    labels = model.predict()
    assert labels.index.equals(train.obs_names)


def _assert_same_uns(a, b, path="uns"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, sorted(a), sorted(b))
        for k in a:
            _assert_same_uns(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, obj=path)
    else:
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        assert a_arr.shape == b_arr.shape, path
        if a_arr.dtype.kind in "fc":
            np.testing.assert_array_equal(a_arr, b_arr, err_msg=path)
            assert a_arr.dtype == b_arr.dtype, (path, a_arr.dtype, b_arr.dtype)
        else:
            assert a_arr.astype(str).tolist() == b_arr.astype(str).tolist(), path


def test_everything_written_survives_h5mu(bmmc_fitted, tmp_path):
    """Every key tl.fit and tl.predict write on real BMMC, read back from .h5mu: values, dtypes,
    categories."""
    model, key = bmmc_fitted.model, "mmdyn"
    for name, mdata in (("train", bmmc_fitted.train), ("query", bmmc_fitted.query)):
        path = tmp_path / f"{name}.h5mu"
        with mudata_options():
            mdata.write_h5mu(path)
        back = md.read_h5mu(path)
        for column in (Key.obs.prediction(key), Key.obs.split(key)):
            pd.testing.assert_series_equal(back.obs[column], mdata.obs[column], obj=column)
            assert isinstance(back.obs[column].dtype, pd.CategoricalDtype)
        for name in (Key.obsm.proba(key), Key.obsm.confidence(key), Key.obsm.tcp_true(key)):
            assert isinstance(back.obsm[name], pd.DataFrame), name
            pd.testing.assert_frame_equal(back.obsm[name], mdata.obsm[name], obj=name)
        latent = Key.obsm.latent(key)
        np.testing.assert_array_equal(back.obsm[latent], mdata.obsm[latent])
        assert back.obsm[latent].dtype == mdata.obsm[latent].dtype
        for mod in model.modalities_:
            name = Key.varm.feature_weights(key)
            pd.testing.assert_frame_equal(back[mod].varm[name], mdata[mod].varm[name], obj=name)
            column = Key.var.informativeness(key)
            pd.testing.assert_series_equal(back[mod].var[column], mdata[mod].var[column])
        _assert_same_uns(mdata.uns[key], back.uns[key], f"uns[{key!r}]")
