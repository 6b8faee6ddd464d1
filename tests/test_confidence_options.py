"""The confidence options and the Unknown call, through tl.fit / tl.predict (synthetic CITE-seq)."""

import numpy as np
import pytest
import torch

import mmdyn_sc as ms
from mmdyn_sc import Key

PREDICTS_TCP = {"tcp": True, "tcp_calibrated": True, "energy": False, "pdf": True}


@pytest.mark.parametrize("option", list(PREDICTS_TCP))
def test_each_confidence_option_trains_and_writes_its_keys(synth, option, fast):
    import matplotlib

    matplotlib.use("Agg")
    model = ms.tl.fit(synth, "cell_type", confidence=option, seed=0, **fast)
    assert model.module.confidence == option
    confidence = synth.obsm[Key.obsm.confidence()]
    assert list(confidence.columns) == model.modalities_
    values = confidence.to_numpy()
    assert np.isfinite(values).all()  # every cell has both modalities here
    if option != "tcp":  # bounded options
        assert ((values >= 0) & (values <= 1)).all()
    if option in ("energy", "pdf"):  # shares of the fusion weight
        np.testing.assert_allclose(values.sum(1), 1.0, atol=1e-5)
    assert (Key.obsm.tcp_predicted() in synth.obsm) == PREDICTS_TCP[option]

    report = synth.uns["mmdyn"]["confidence"]
    assert report["option"] == option and report["cells"] == "validation"
    n_validation = int((synth.obs["mmdyn_split"] == "validation").sum())
    for mod in model.modalities_:
        entry = report["modalities"][mod]
        assert entry["n_cells"] == n_validation
        if PREDICTS_TCP[option]:
            predicted = synth.obsm[Key.obsm.tcp_predicted()][mod]
            true = synth.obsm[Key.obsm.tcp_true()][mod]
            val = (synth.obs["mmdyn_split"] == "validation").to_numpy()
            expected = np.mean(np.abs(predicted[val] - true[val])) / np.mean(true[val])
            assert entry["relative_error"] == pytest.approx(expected, rel=1e-6)
        else:
            assert entry["relative_error"] == "n/a"
        assert -1.0 <= entry["spearman"] <= 1.0
    ms.pl.tcp_calibration(synth, show=False)


def test_modality_dropout_zero_is_the_original(synth_batches, fast):
    """tl.fit with modality_dropout=0 and confidence "tcp" gives, bit for bit, the model that
    MMDynamics builds and trains with the same options (the original: no modality dropout)."""
    train, _ = synth_batches
    ms.MMDynamics.setup_mudata(train, labels_key="cell_type")
    torch.manual_seed(5)
    plain = ms.MMDynamics(train, n_hidden=fast["n_hidden"], feature_scaling="standard",
                          feature_clip=5.0, class_weights="balanced", gate_rank="auto",
                          confidence="tcp", modality_dropout=0.0)
    plain.train(max_epochs=fast["max_epochs"], seed=5, enable_progress_bar=False)
    explicit = ms.tl.fit(train.copy(), "cell_type", seed=5, modality_dropout=0.0,
                         confidence="tcp", **fast)
    a, b = plain.module.state_dict(), explicit.module.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_unknown_threshold(synth_fitted):
    _, query, model = synth_fitted
    # A threshold that splits this query: the median certainty of a plain prediction.
    certainty = ms.tl.predict(query, model, copy=True).obs["mmdyn_certainty"].to_numpy()
    threshold = float(np.median(certainty))
    ms.tl.predict(query, model, unknown_threshold=threshold)
    prediction = query.obs["mmdyn_prediction"]
    assert list(prediction.cat.categories) == [*model.classes_, "Unknown"]
    below = query.obs["mmdyn_certainty"].to_numpy() < threshold  # the certainty, not max p
    assert below.any() and not below.all()
    assert (prediction[below] == "Unknown").all()
    assert (prediction[~below].astype(str).to_numpy()
            == query.obsm["mmdyn_proba"].idxmax(1)[~below].to_numpy()).all()
    assert query.uns["mmdyn"]["n_unknown"] == int(below.sum())
    # Default: every cell labelled.
    plain = ms.tl.predict(query, model, key_added="plain", copy=True)
    assert "Unknown" not in plain.obs["plain_prediction"].cat.categories
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError, match="unknown_threshold must be in"):
            ms.tl.predict(query, model, unknown_threshold=bad)


def test_bad_confidence_option(synth, fast):
    with pytest.raises(ValueError, match="tcp_calibrated"):
        ms.tl.fit(synth, "cell_type", confidence="entropy", **fast)
    with pytest.raises(ValueError, match="modality_dropout"):
        ms.tl.fit(synth, "cell_type", modality_dropout=1.0, **fast)
    # Refused before anything was written.
    assert "mmdyn_proba" not in synth.obsm
    assert not [c for c in synth.obs.columns if c.startswith("mmdyn_")]
