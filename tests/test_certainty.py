"""obs["mmdyn_certainty"], obsm["mmdyn_modality_certainty"], unknown types and query metrics."""

from __future__ import annotations

import mudata as md
import numpy as np
import pytest

import mmdyn_sc as ms
from mmdyn_sc import MMDynamics
from mmdyn_sc._calibration import (
    accuracy_at_coverage,
    area_under_risk_coverage,
    expected_calibration_error,
)
from mmdyn_sc._keys import Key
from mmdyn_sc.model._certainty import IDENTITY, PLATT_PRIOR, calibrate, fit_platt, logit

LEARN = {"max_epochs": 40, "n_hidden": 32, "enable_progress_bar": False, "attribution": False}
HELD = "type_4"


@pytest.fixture(scope="module")
def unseen():
    """(train without type_4, query with every class, model): synthetic, 5 planted classes."""
    mdata, _ = ms.datasets.synthetic(n_cells=600, n_classes=5, noise_modality=False, seed=0)
    ms.pp.prepare(mdata)
    labels = mdata.obs["cell_type"].astype(str).to_numpy()
    half = np.arange(mdata.n_obs) % 2 == 0
    train = mdata[half & (labels != HELD)].copy()
    train.obs["cell_type"] = train.obs["cell_type"].cat.remove_unused_categories()
    query = mdata[~half].copy()
    model = ms.tl.fit(train, "cell_type", seed=0, **LEARN)
    return train, query, model


def test_measures_on_known_cases():
    certainty = np.array([0.9, 0.9, 0.6, 0.6, 0.2])
    correct = np.array([True, True, True, False, False])
    # one bin per cell with 5 bins: mean |c - y|
    assert expected_calibration_error(certainty, correct, n_bins=5) == pytest.approx(
        np.mean([0.1, 0.1, 0.4, 0.6, 0.2]))
    assert accuracy_at_coverage(certainty, correct, coverage=0.4) == 1.0
    # errors enter last: risks 0, 0, 0 or 1/3 (tie kept in order), 1/4, 2/5
    assert area_under_risk_coverage(certainty, correct) == pytest.approx(
        np.mean([0, 0, 0, 0.25, 0.4]))


def test_platt_scaling_recovers_the_probability_of_a_right_call():
    rng = np.random.default_rng(0)
    top = rng.uniform(0.3, 1.0, 2000)
    truly = top ** 3  # over-confident: right with probability top^3
    right = rng.random(2000) < truly
    platt, where = fit_platt(top, right)
    assert where == "validation cells"
    assert np.abs(calibrate(top, platt) - truly).mean() < 0.03
    # increasing: the ranking of the highest probability is kept
    assert (np.diff(calibrate(np.sort(top), platt)) >= 0).all()
    assert fit_platt(top[:5], right[:5])[0] == IDENTITY


def test_platt_map_is_shrunk_toward_the_identity():
    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    top = rng.uniform(0.3, 1.0, 2000)
    right = rng.random(2000) < top ** 3
    x = logit(top[:25])

    def posterior(params, y):  # the documented objective, minimised independently
        z = params[0] * x + params[1]
        return np.sum(np.logaddexp(0, z) - y * z) + PLATT_PRIOR / 2 * (
            (params[0] - 1) ** 2 + params[1] ** 2)

    y = right[:25].astype(float)
    np.testing.assert_allclose(fit_platt(top[:25], right[:25])[0],
                               minimize(posterior, [1.0, 0.0], args=(y,), tol=1e-12).x,
                               atol=1e-5)
    # the same data move a weakly held map further than a strongly held one
    distance = [np.hypot(a - 1, b) for a, b in
                (fit_platt(top[:25], right[:25], prior=p)[0] for p in (1.0, 25.0, 1000.0))]
    assert distance[0] > distance[1] > distance[2]
    # every call right: finite, raised above the identity but below 1
    (slope, intercept), where = fit_platt(top[:100], np.ones(100, bool))
    assert where == "validation cells" and np.isfinite([slope, intercept]).all()
    assert top[:100].mean() < calibrate(top[:100], (slope, intercept)).mean() < 1
    # wrong calls where the probability is high: no negative slope, the map is only shifted
    (slope, _), where = fit_platt(top[:100], top[:100] < 0.6, prior=0.1)
    assert slope == 1.0 and where.endswith("not positive)")
    with pytest.raises(ValueError, match="prior must be positive"):
        fit_platt(top, right, prior=0)


def test_fit_and_predict_write_certainty(synth_fitted, tmp_path):
    train, query, model = synth_fitted
    for mdata in (train, query):
        if mdata is query:
            ms.tl.predict(query, model, attribution=False)
        values = mdata.obs[Key.obs.certainty()].to_numpy()
        assert ((values >= 0) & (values <= 1)).all()
        per_mod = mdata.obsm[Key.obsm.modality_certainty()]
        assert list(per_mod.columns) == model.modalities_
        assert ((per_mod.to_numpy() >= 0) & (per_mod.to_numpy() <= 1)).all()
    record = train.uns["mmdyn"]["certainty"]
    assert len(record["platt"]) == 2 and record["n_cells"] == len(model.validation_indices)
    assert record["platt_prior"] == PLATT_PRIOR
    assert 0 <= record["diagnostics"]["ece"] <= 1
    assert "query" in query.uns["mmdyn"]["certainty"]  # the query has labels
    query.write_h5mu(tmp_path / "q.h5mu")
    back = md.read_h5mu(tmp_path / "q.h5mu")
    np.testing.assert_array_equal(back.obs[Key.obs.certainty()].to_numpy(),
                                  query.obs[Key.obs.certainty()].to_numpy())


def test_saved_model_keeps_its_calibration(synth_fitted, tmp_path):
    train, query, model = synth_fitted
    model.save(str(tmp_path / "m"))
    loaded = MMDynamics.load(str(tmp_path / "m"), query)
    assert loaded.certainty_.keys() == model.certainty_.keys()
    for key, value in model.certainty_.items():
        if isinstance(value, np.ndarray | list):
            np.testing.assert_array_equal(loaded.certainty_[key], value)
        else:
            assert loaded.certainty_[key] == value, key
    a, b = query.copy(), query.copy()
    ms.tl.predict(a, model, attribution=False)
    ms.tl.predict(b, loaded, attribution=False)
    np.testing.assert_allclose(a.obs[Key.obs.certainty()], b.obs[Key.obs.certainty()])


def test_without_validation_cells_certainty_is_the_uncalibrated_probability(synth):
    ms.tl.fit(synth, "cell_type", train_size=1.0, max_epochs=3, n_hidden=16,
              enable_progress_bar=False, attribution=False)
    record = synth.uns["mmdyn"]["certainty"]
    assert record["calibrated_on"] == "none: no validation cells"
    assert list(record["platt"]) == list(IDENTITY)
    assert record["novelty_reference"] == "training cells"


def test_model_without_certainty_falls_back_to_the_highest_probability(synth_fitted, caplog):
    _, query, model = synth_fitted
    state = model.certainty_
    try:
        del model.certainty_
        with caplog.at_level("INFO", logger="mmdyn_sc"):
            ms.tl.predict(query, model, attribution=False)
    finally:
        model.certainty_ = state
    np.testing.assert_allclose(query.obs[Key.obs.certainty()],
                               query.obsm[Key.obsm.proba()].max(1), rtol=1e-6)
    assert query.uns["mmdyn"]["certainty"]["calibrated_on"].startswith("none")
    assert "no fitted certainty" in caplog.text


def test_unseen_class_gets_lower_certainty_and_is_called_unknown(unseen):
    _, query, model = unseen
    ms.tl.predict(query, model, attribution=False, unknown_threshold=0.5)
    labels = query.obs["cell_type"].astype(str).to_numpy()
    held = labels == HELD
    certainty = query.obs[Key.obs.certainty()].to_numpy()
    assert certainty[held].mean() < certainty[~held].mean() - 0.2
    calls = query.obs[Key.obs.prediction()].astype(str).to_numpy()
    assert (calls[held] == "Unknown").mean() > 0.5
    assert (calls[~held] == "Unknown").mean() < 0.2
    record = query.uns["mmdyn"]
    assert record["n_unknown"] == int((calls == "Unknown").sum())
    everything = record["metrics"]["query_all"]
    assert everything["n_unseen_class"] == int(held.sum())
    assert everything["n_labelled"] == query.n_obs
    # known classes only: the unseen cells are left out of "query"
    known_accuracy = np.mean(calls[~held] == labels[~held])
    assert record["metrics"]["query"]["accuracy"] >= known_accuracy  # Unknown is not a class
    assert "query_all" in record["certainty"]


def test_a_cell_far_from_every_class_in_one_modality_loses_certainty(unseen):
    """The novelty is judged per modality: one modality unlike training is enough."""
    _, query, model = unseen
    known = query[query.obs["cell_type"].astype(str).to_numpy() != HELD].copy()
    shifted = known.copy()
    prot = shifted["prot"].layers["mmdyn_prepared"]
    shifted["prot"].layers["mmdyn_prepared"] = np.asarray(prot) + 3 * np.asarray(prot).std()
    for mdata in (known, shifted):
        ms.tl.predict(mdata, model, attribution=False)
    before = known.obs[Key.obs.certainty()].to_numpy()
    after = shifted.obs[Key.obs.certainty()].to_numpy()
    assert after.mean() < before.mean() - 0.2
    state = model.certainty_
    assert state["novelty"]["rule"] == "largest over modalities"
    assert state["agreement_power"] == 0.0
    # a cell lacking a modality is judged on the modalities it has
    rna_only = md.MuData({"rna": known["rna"].copy()})
    ms.tl.predict(rna_only, model, attribution=False)
    values = rna_only.obs[Key.obs.certainty()].to_numpy()
    assert np.isfinite(values).all() and values.mean() > 0.5


def test_pseudo_labels_are_ranked_by_the_0_2_0_certainty(synth_fitted):
    """Calibrated probability x agreement ** (1/4) x pooled novelty, by hand."""
    from mmdyn_sc.model import _certainty as C

    _, query, model = synth_fitted
    state, result = model.certainty_, model.infer(query)
    top = result.proba.max(1)
    agree = np.ones(len(top))
    for m, p in enumerate(result.modality_proba):
        ratio = p[np.arange(len(top)), result.proba.argmax(1)] / p.max(1)
        agree *= np.where(result.present[:, m], ratio, 1.0)
    x = C.unweighted(result.latent, result.weights, state["blocks"])
    z = (np.log(C.nearest_prototype_distance(x, result.present, state))
         - state["log_distance_median"]) / state["log_distance_spread"]
    expected = C.calibrate(top, state["platt"]) * agree ** 0.25 * np.exp(-np.maximum(0, z - 1))
    np.testing.assert_allclose(C.pseudo_label_score(state, result), expected, rtol=1e-6)
    assert not np.allclose(C.certainty(state, result), expected)  # the certainty moved on
    np.testing.assert_array_equal(C.pseudo_label_score(None, result), top)


@pytest.mark.slow
def test_pbmc10k_nk_cells_unseen_get_lower_certainty(dataset_path):
    """pbmc10k without NK cells in training: the query's NK cells get lower certainty."""
    import scanpy as sc

    dataset_path("pbmc10k_cite_totalvi")  # skips without the data
    mdata = ms.datasets.pbmc10k_cite()
    ms.pp.prepare(mdata)
    labels = mdata.obs["cell_type"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    cells = np.sort(rng.choice(mdata.n_obs, 1500, replace=False))
    mdata = mdata[cells].copy()
    labels = labels[cells]
    rna = mdata["rna"]
    sc.pp.highly_variable_genes(rna, n_top_genes=500, layer="mmdyn_prepared", flavor="seurat")
    train_rows = (np.arange(mdata.n_obs) % 3 != 0) & (labels != "NK cells")
    train = mdata[train_rows].copy()
    train.obs["cell_type"] = train.obs["cell_type"].cat.remove_unused_categories()
    query = mdata[np.arange(mdata.n_obs) % 3 == 0].copy()
    model = ms.tl.fit(train, "cell_type", mask_var={"rna": "highly_variable"}, seed=0,
                      max_epochs=40, enable_progress_bar=False, attribution=False)
    ms.tl.predict(query, model, attribution=False)
    nk = query.obs["cell_type"].astype(str).to_numpy() == "NK cells"
    certainty = query.obs[Key.obs.certainty()].to_numpy()
    assert nk.sum() > 50
    assert certainty[nk].mean() < certainty[~nk].mean() - 0.2, (certainty[nk].mean(),
                                                                certainty[~nk].mean())


def test_pl_reliability_and_modality_certainty(unseen, plotting):
    _, query, model = unseen
    query = query.copy()
    ms.tl.predict(query, model, attribution=False)
    left, right = ms.pl.reliability(query, show=False)
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert any(t.startswith("certainty (ECE") for t in legend)
    assert "300 cells" in left.get_title()
    fig = ms.pl.reliability(query, split="query", return_fig=True)
    assert len(fig.axes) == 2
    with pytest.raises(KeyError, match="labels="):
        ms.pl.reliability(query, labels="nope", show=False)
    ax = ms.pl.modality_confidence(query, groupby="cell_type", values="certainty", show=False)
    assert ax.get_ylabel().startswith("modality certainty")
    ax = ms.pl.modality_confidence(query, groupby="cell_type", show=False)
    assert ax.get_ylabel() == "fusion weight (share of softmax(-energy))"
