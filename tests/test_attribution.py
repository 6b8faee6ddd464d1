"""The per-class attribution (varm), tl.explain, tl.rank_features and pl.attribution."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import mudata as md  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scanpy as sc  # noqa: E402
import torch  # noqa: E402

import mmdyn_sc as ms  # noqa: E402
from mmdyn_sc._keys import Key  # noqa: E402
from mmdyn_sc._names import original_names  # noqa: E402
from mmdyn_sc.model._attribution import (  # noqa: E402
    baselines,
    class_attribution,
    partner_credit,
)

#: Enough epochs for the synthetic classes to be learnt; attribution on (FAST turns it off).
LEARN = {"max_epochs": 30, "n_hidden": 32, "enable_progress_bar": False}
SLASHED = {"type_0": "MK/E prog"}


@pytest.fixture(scope="module")
def fitted(_synth_prepared):
    """Two seeds of a fit on the whole synthetic fixture, "type_0" renamed "MK/E prog"."""
    fits = []
    for seed in (0, 1):
        mdata = _synth_prepared[0].copy()
        mdata.obs["cell_type"] = mdata.obs["cell_type"].cat.rename_categories(SLASHED)
        model = ms.tl.fit(mdata, "cell_type", seed=seed, **LEARN)
        fits.append((mdata, model))
    return fits


def planted(truth, mod):
    return {SLASHED.get(c, c): f for c, f in truth["informative_by_class"][mod].items()}


def test_fit_writes_attribution_tables(fitted):
    mdata, model = fitted[0]
    assert Key.varm.attribution() == "mmdyn_attribution"
    for mod in ("rna", "prot"):
        for key in (Key.varm.attribution(), Key.varm.attribution_direct()):
            table = mdata[mod].varm[key]
            assert isinstance(table, pd.DataFrame)
            assert table.shape == (mdata[mod].n_vars, len(model.classes_))
            assert list(table.index) == list(mdata[mod].var_names)
            assert "MK_E prog" in table.columns  # safe names, as feature_weights
            assert np.isfinite(table.to_numpy()).all()
    record = mdata.uns["mmdyn"]["attribution"]
    assert record["method"] == "integrated_gradients"
    assert record["cells"] == "training"
    # every training cell is attributed (fewer than 200 per class)
    n_cells = record["n_cells"]["prot"]
    assert sum(n_cells.values()) == len(model.train_indices)


def planted_recall(mdata, mod, key, truth) -> float:
    """Mean over classes of the share of a class's planted features in its top of ``key``."""
    table = mdata[mod].varm[key]
    table = table.set_axis(ms._names.original_names(table.columns,
                                                    mdata.uns["mmdyn"]["classes"]), axis=1)
    return float(np.mean([len(set(table[c].nlargest(len(f)).index) & set(f)) / len(f)
                          for c, f in planted(truth, mod).items()]))


def test_planted_features_come_first(fitted, synth_truth):
    for mdata, _ in fitted:
        for mod in ("rna", "prot"):
            gate = planted_recall(mdata, mod, Key.varm.feature_weights(), synth_truth)
            grouped = planted_recall(mdata, mod, Key.varm.attribution(), synth_truth)
            direct = planted_recall(mdata, mod, Key.varm.attribution_direct(), synth_truth)
            # random: about 0.05 (RNA), 0.23 (protein: 28 of 30 proteins are planted)
            assert grouped >= 0.75, (mod, grouped)
            assert direct >= 0.6, (mod, direct)
            assert grouped >= gate, (mod, grouped, gate)


def test_two_seeds_agree(fitted):
    (a, _), (b, _) = fitted
    for mod in ("rna", "prot"):
        ta, tb = (m[mod].varm[Key.varm.attribution()] for m in (a, b))
        shared = [len(set(ta[c].nlargest(10).index) & set(tb[c].nlargest(10).index)) / 10
                  for c in ta.columns]
        assert np.mean(shared) >= 0.6, (mod, shared)


def test_attribution_false_writes_none_and_changes_no_prediction(fitted, _synth_prepared):
    mdata = _synth_prepared[0].copy()
    mdata.obs["cell_type"] = mdata.obs["cell_type"].cat.rename_categories(SLASHED)
    ms.tl.fit(mdata, "cell_type", seed=0, attribution=False, **LEARN)
    assert Key.varm.attribution() not in mdata["prot"].varm
    assert "attribution" not in mdata.uns["mmdyn"]
    # the attribution is computed after training, from its own random state: same fit
    np.testing.assert_array_equal(mdata.obsm[Key.obsm.proba()].to_numpy(),
                                  fitted[0][0].obsm[Key.obsm.proba()].to_numpy())
    with pytest.raises(ValueError, match="attribution_cells"):
        ms.tl.fit(mdata, "cell_type", attribution_cells=0)
    with pytest.raises(TypeError, match="attribution must be"):
        ms.tl.fit(mdata, "cell_type", attribution="yes")


def test_predict_writes_attribution_and_round_trips(fitted, tmp_path):
    mdata, model = fitted[0]
    query = mdata.copy()
    ms.tl.predict(query, model, attribution_cells=10)
    record = query.uns["mmdyn"]["attribution"]
    assert record["cells"] == "query" and record["max_cells_per_class"] == 10
    assert max(record["n_cells"]["prot"].values()) <= 10
    path = tmp_path / "query.h5mu"
    query.write_h5mu(path)
    back = md.read_h5mu(path)
    for mod in ("rna", "prot"):
        np.testing.assert_array_equal(back[mod].varm[Key.varm.attribution()].to_numpy(),
                                      query[mod].varm[Key.varm.attribution()].to_numpy())
        assert "MK_E prog" in back[mod].varm[Key.varm.attribution()].columns


def test_model_without_input_means_uses_the_scaler_shift(fitted):
    """A model saved before 0.2.0 has no input_means_: the standard scaler's shift is the mean."""
    _, model = fitted[0]
    recorded = baselines(model, "cpu")
    saved = model.input_means_
    try:
        del model.input_means_
        fallback = baselines(model, "cpu")
    finally:
        model.input_means_ = saved
    for a, b in zip(recorded, fallback, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_paper_recipe_attribution(synth):
    ms.tl.fit(synth, "cell_type", recipe="paper", max_epochs=3, n_hidden=16,
              enable_progress_bar=False)
    assert np.isfinite(synth["prot"].varm[Key.varm.attribution()].to_numpy()).all()
    # min-max scaling: the baseline is the recorded training mean, not the scaler's shift
    assert synth.uns["mmdyn"]["attribution"]["baseline"].startswith("training mean")


def test_partner_credit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    x[:, 1] = x[:, 0] + 0.1 * rng.normal(size=500)  # 0 and 1 move together
    x[:, 3] = 1.0  # constant
    values = np.array([[1.0, np.nan], [0.0, np.nan], [0.5, np.nan], [2.0, np.nan]])
    out = partner_credit(x, values)
    r01 = np.corrcoef(x[:, 0], x[:, 1])[0, 1]
    # correlations are computed in float32 (rtol 1e-5, as the tests below)
    np.testing.assert_allclose(out[:, 0], [1.0, r01 * 1.0, 0.5, 2.0], rtol=1e-5)
    assert np.isnan(out[:, 1]).all()
    # the partner-limited path (more features than max_partners) gives the same here
    np.testing.assert_allclose(partner_credit(x, values, max_partners=2, block=1)[:, 0],
                               [1.0, r01, 0.5, 2.0], rtol=1e-5)


def test_partner_credit_positive_partners_only():
    """Anti-correlated features share nothing by default; 0.2.0's |r| rule still available."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    x[:, 1] = -x[:, 0] + 0.1 * rng.normal(size=500)  # 1 falls when 0 rises
    x[:, 2] = x[:, 0] + 2.0 * rng.normal(size=500)  # weakly with 0 (r about 0.45)
    values = np.array([[1.0], [0.0], [0.0]])
    r = np.corrcoef(x.T)
    assert r[0, 1] < -0.9 and 0.2 < r[0, 2] < 0.5
    np.testing.assert_allclose(partner_credit(x, values)[:, 0], [1.0, 0.0, r[0, 2]],
                               rtol=1e-5)
    np.testing.assert_allclose(
        partner_credit(x, values, min_correlation=0.5, positive_only=False)[:, 0],
        [1.0, r[0, 1], 0.0], rtol=1e-5)


def test_partner_weight_scales_the_partners_only():
    """A feature keeps its own value; its partners' values enter times ``weight``."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 3))
    x[:, 1] = x[:, 0] + 0.1 * rng.normal(size=500)
    values = np.array([[1.0], [2.0], [3.0]])
    r01 = np.corrcoef(x[:, 0], x[:, 1])[0, 1]
    for weight in (0.0, 0.5, 1.0):
        np.testing.assert_allclose(partner_credit(x, values, weight=weight)[:, 0],
                                   [1.0 + weight * r01 * 2.0, 2.0 + weight * r01 * 1.0, 3.0],
                                   rtol=1e-5)


# ------------------------------------------------------------------------------ tl.explain
def test_explain_blocks_equal_the_whole_set_and_the_class_means(fitted, tmp_path):
    mdata, model = fitted[0]
    whole = ms.tl.explain(mdata, model, modality="prot")
    assert whole.shape == (mdata.n_obs, mdata["prot"].n_vars)
    assert list(whole.var_names) == list(model.features_["prot"])
    part = ms.tl.explain(mdata, model, modality="prot", cells=mdata.obs_names[50:90],
                         batch_size=7)
    np.testing.assert_allclose(part.X, whole[mdata.obs_names[50:90]].X, atol=1e-6)
    proba = mdata.obsm[Key.obsm.proba()].to_numpy()
    np.testing.assert_array_equal(whole.obs["prediction"].cat.codes, proba.argmax(1))
    # tl.explain explains the model's own fit: its class means over the training cells are
    # that fit's direct attribution, which the stored table averages with the extra fit's
    # (test_attribution_members.py checks that mean)
    predicted = proba.argmax(1)
    train = np.asarray(model.train_indices)
    members, model.attribution_members_ = model.attribution_members_, []
    try:
        with model._aligned(None) as aligned:
            own = class_attribution(model, aligned, train, predicted).direct["prot"]
    finally:
        model.attribution_members_ = members
    assert len(members) == 1  # two fits by default
    for c in range(len(model.classes_)):
        rows = train[predicted[train] == c]
        np.testing.assert_allclose(whole.X[rows].mean(0), own[:, c], atol=1e-5)
    # written block by block to a file, read back backed
    on_disk = ms.tl.explain(mdata, model, modality="prot", path=tmp_path / "ex.h5ad",
                            max_cells=10, batch_size=50)
    assert on_disk.isbacked
    np.testing.assert_allclose(np.asarray(on_disk.X[:]), whole.X, atol=1e-6)
    pd.testing.assert_series_equal(on_disk.obs["prediction"], whole.obs["prediction"])
    on_disk.file.close()


def test_explain_sums_to_the_change_in_log_probability(fitted):
    """Completeness: over every tabular feature, about log p(c | cell) - log p(c | mean cell)."""
    mdata, model = fitted[0]
    parts = [ms.tl.explain(mdata, model, modality=mod) for mod in ("rna", "prot")]
    total = sum(p.obs["attribution_sum"].to_numpy() for p in parts)
    base = baselines(model, "cpu")
    with torch.no_grad():
        logits = model.module([b[None] for b in base], torch.ones(1, 2))["fused_logits"]
    base_logp = torch.log_softmax(logits, 1)[0].numpy()
    predicted = parts[0].obs["prediction"].cat.codes.to_numpy()
    change = np.log(parts[0].obs["probability"].to_numpy()) - base_logp[predicted]
    assert np.corrcoef(total, change)[0, 1] > 0.9
    assert np.median(np.abs(total - change)) < 0.25 * np.median(np.abs(change))


def test_explain_errors_are_named(fitted, tmp_path):
    mdata, model = fitted[0]
    with pytest.raises(ValueError, match="name one with modality="):
        ms.tl.explain(mdata, model)
    with pytest.raises(KeyError, match="not one of the model's modalities"):
        ms.tl.explain(mdata, model, modality="atac")
    with pytest.raises(KeyError, match="not in mdata.obs_names"):
        ms.tl.explain(mdata, model, modality="prot", cells=["no_such_cell"])
    with pytest.raises(ValueError, match="boolean mask of length 3"):
        ms.tl.explain(mdata, model, modality="prot", cells=np.array([True, False, True]))
    with pytest.raises(IndexError, match="positions outside"):
        ms.tl.explain(mdata, model, modality="prot", cells=[0, mdata.n_obs])
    with pytest.raises(ValueError, match="selects no cell"):
        ms.tl.explain(mdata, model, modality="prot", cells=np.zeros(mdata.n_obs, bool))
    with pytest.raises(ValueError, match="more than max_cells=5: pass path="):
        ms.tl.explain(mdata, model, modality="prot", max_cells=5)
    with pytest.raises(ValueError, match="must end in .h5ad"):
        ms.tl.explain(mdata, model, modality="prot", path=tmp_path / "x.csv")


# ------------------------------------------------------------------------- rank_features
def test_rank_features_is_read_by_scanpy(fitted, plotting):
    mdata = fitted[0][0].copy()
    ms.tl.rank_features(mdata, "prot")
    adata = mdata["prot"]
    assert adata.uns["mmdyn_rank_features"]["params"]["groupby"] == "mmdyn_prediction"
    assert "MK_E prog" in adata.obs["mmdyn_prediction"].cat.categories
    frame = sc.get.rank_genes_groups_df(adata, "MK_E prog", key="mmdyn_rank_features")
    table = adata.varm[Key.varm.attribution()]
    expected = table["MK_E prog"].sort_values(ascending=False, kind="stable")
    assert list(frame["names"]) == list(expected.index)
    np.testing.assert_allclose(frame["scores"], expected.to_numpy(), rtol=1e-6)
    sc.pl.rank_genes_groups_dotplot(adata, key="mmdyn_rank_features", n_genes=3,
                                    layer="mmdyn_prepared", dendrogram=False, show=False)
    ms.tl.rank_features(mdata, "rna", values="feature_weights", key_added="gates")
    assert mdata["rna"].uns["gates"]["params"]["method"] == "mmdyn_feature_weights"


def test_rank_features_errors_are_named(fitted, synth):
    mdata = fitted[0][0].copy()
    with pytest.raises(KeyError, match="not in mdata"):
        ms.tl.rank_features(mdata, "atac")
    with pytest.raises(ValueError, match="values must be one of"):
        ms.tl.rank_features(mdata, "prot", values="gate")
    with pytest.raises(KeyError, match="run mmdyn_sc.tl.fit"):
        ms.tl.rank_features(synth, "prot")


# ------------------------------------------------------------------------ pl.attribution
def test_pl_attribution_shows_each_class_top_features(fitted, synth_truth, plotting):
    mdata, _ = fitted[0]
    fig = ms.pl.attribution(mdata, "prot", n_top=3, return_fig=True)
    texts = {t.get_text() for a in fig.axes for t in a.texts + a.get_yticklabels()}
    assert "MK/E prog" in texts  # original class names
    # each row says how many cells its class's attribution averages
    stored = mdata.uns["mmdyn"]["attribution"]["n_cells"]["prot"]
    counts = dict(zip(original_names(list(stored), mdata.uns["mmdyn"]["classes"]),
                      stored.values(), strict=True))
    assert counts["MK/E prog"] > 1
    assert f"MK/E prog ({counts['MK/E prog']} cells)" in texts
    axes = ms.pl.attribution(mdata, "prot", n_top=2, classes=["type_1", "MK/E prog"],
                             standard_scale="var", show=False)
    labels = [t.get_text() for t in axes["mainplot_ax"].get_xticklabels()]
    table = mdata["prot"].varm[Key.varm.attribution()]
    assert labels[:2] == list(table["type_1"].nlargest(2).index)
    mdata["prot"].var["symbol"] = [f"P{i}" for i in range(mdata["prot"].n_vars)]
    axes = ms.pl.attribution(mdata, "prot", n_top=1, gene_symbols="symbol", show=False)
    assert all(t.get_text().startswith("P")
               for t in axes["mainplot_ax"].get_xticklabels())
    with pytest.raises(KeyError, match="not classes of the fit"):
        ms.pl.attribution(mdata, "prot", classes=["nope"], show=False)
    with pytest.raises(ValueError, match="values must be one of"):
        ms.pl.attribution(mdata, "prot", values="gate", show=False)


def test_pl_attribution_row_labels_count_cells():
    from mmdyn_sc.pl._attribution import row_labels

    record = {"classes": ["a", "b/c", "d"],
              "attribution": {"n_cells": {"prot": {"a": 1, "b_c": 7}}}}
    labels = row_labels(["a", "b/c", "d"], record, "prot")
    # "d": no count stored (a fit saved before the counts) keeps its bare name
    assert labels[0] == "a (1 cell)" and labels[2] == "d"
    assert labels[1] == "b/c (7 cells)"  # stored under its safe name
    assert row_labels(["a"], {}, "prot") == ["a"]


def test_trimodal_attribution_keeps_images_as_they_are(synth_trimodal):
    """With an image modality: tabular attributions only; the image stays on the path."""
    train, query = synth_trimodal
    model = ms.tl.fit(train, "cell_type", seed=0, max_epochs=2, n_hidden=16,
                      enable_progress_bar=False, attribution_cells=5)
    for mod in ("rna", "prot"):
        assert np.isfinite(train[mod].varm[Key.varm.attribution()].to_numpy()).all()
    assert Key.varm.attribution() not in train["image"].varm
    assert set(train.uns["mmdyn"]["attribution"]["n_cells"]) == {"rna", "prot"}
    explained = ms.tl.explain(query, model, modality="prot", cells=query.obs_names[:8])
    assert np.isfinite(explained.X).all()
    with pytest.raises(ValueError, match="image modality"):
        ms.tl.explain(query, model, modality="image")


def test_query_without_a_modality_warns_nothing_extra(fitted, recwarn):
    """An RNA-only query: attribution for RNA, none for the absent protein, no numpy warnings."""
    mdata, model = fitted[0]
    query = md.MuData({"rna": mdata["rna"].copy()})
    query.obs["cell_type"] = mdata.obs["cell_type"]
    ms.tl.predict(query, model)
    assert np.isfinite(query["rna"].varm[Key.varm.attribution()].to_numpy()).all()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_partner_credit_receivers_can_be_limited_to_used_features():
    """``receiver_min_share``: credit only where the feature's own value is large enough."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 4))
    x[:, 1] = x[:, 0] + 0.1 * rng.normal(size=500)  # 0 and 1 move together
    values = np.array([[1.0, 0.0], [0.3, 0.0], [0.5, 0.0], [2.0, -1.0]])
    r01 = np.corrcoef(x[:, 0], x[:, 1])[0, 1]
    # column 0: the floor is 0.2 x 2.0; feature 1 (0.3) keeps its own value, 0 receives
    np.testing.assert_allclose(partner_credit(x, values, receiver_min_share=0.2)[:, 0],
                               [1.0 + 0.3 * r01, 0.3, 0.5, 2.0], rtol=1e-5)
    # column 1 has nothing positive: no feature receives anything
    np.testing.assert_allclose(partner_credit(x, values, receiver_min_share=0.2)[:, 1],
                               values[:, 1])
    np.testing.assert_allclose(partner_credit(x, values)[:, 0],
                               [1.0 + 0.3 * r01, 0.3 + r01, 0.5, 2.0], rtol=1e-5)
