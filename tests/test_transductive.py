"""``tl.fit(transductive=True)``: query cells shape the model through pseudo-labels only.

Real data: BMMC, donor s1d1 labelled (reference), donor s1d2 unlabelled (query).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import mmdyn_sc
from mmdyn_sc import MMDynamics
from mmdyn_sc.tl._transductive import select_pseudo_labels

QUERY_DONOR = "s1d2"


def _reference_and_query(bmmc, query_labels=None):
    """BMMC with ``obs["reference_label"]`` missing on the query donor.

    The query's true labels stay in the MuData (``obs["cell_type"]`` and each modality's
    ``obs["cell_type"]``), replaced by ``query_labels`` where given: what a leak would read.
    """
    query = (bmmc.obs["batch"] == QUERY_DONOR).to_numpy()
    truth = bmmc.obs["cell_type"].astype(str).to_numpy().copy()
    if query_labels is not None:
        truth[query] = query_labels
    bmmc.obs["cell_type"] = truth
    for adata in bmmc.mod.values():
        adata.obs["cell_type"] = pd.Series(truth, index=bmmc.obs_names).reindex(adata.obs_names)
    bmmc.obs["reference_label"] = pd.Series(truth, index=bmmc.obs_names).where(~query, None)
    return bmmc, query


def _fit(mdata, fast, **options):
    return mmdyn_sc.tl.fit(mdata, "reference_label", transductive=True, seed=0,
                           **{**fast, **options})


def test_query_labels_never_reach_the_fit(bmmc, fast):
    """Shuffling the query's true labels (kept in the MuData) changes no prediction."""
    original, query = _reference_and_query(bmmc.copy())
    rng = np.random.default_rng(0)
    shuffled_labels = rng.permutation(original.obs["cell_type"].to_numpy()[query])
    assert (shuffled_labels != original.obs["cell_type"].to_numpy()[query]).mean() > 0.5
    shuffled, _ = _reference_and_query(bmmc.copy(), shuffled_labels)
    _fit(original, fast)
    _fit(shuffled, fast)
    for key in ("mmdyn_prediction", "mmdyn_training_label", "mmdyn_split"):
        pd.testing.assert_series_equal(original.obs[key], shuffled.obs[key])
    np.testing.assert_array_equal(original.obsm["mmdyn_proba"], shuffled.obsm["mmdyn_proba"])


def test_pseudo_labels_train_and_never_validate(bmmc, fast):
    mdata, query = _reference_and_query(bmmc)
    model = _fit(mdata, fast)
    record = mdata.uns["mmdyn"]["transductive"]
    split = mdata.obs["mmdyn_split"].to_numpy()
    pseudo = split == "pseudo_labeled"
    # pseudo-labelled cells are query cells, trained on, never validated on
    assert pseudo.sum() == record["n_pseudo_labeled"] > 0
    assert query[pseudo].all()
    assert set(np.flatnonzero(pseudo)) <= set(model.train_indices)
    assert not query[model.validation_indices].any()
    # about half of each predicted class among the query cells (ceil per class)
    assert record["n_unlabeled"] == query.sum()
    assert query.sum() / 2 <= pseudo.sum() <= query.sum() / 2 + len(model.classes_)
    # the training label: the user's on the reference, a class or nothing on the query
    training = mdata.obs["mmdyn_training_label"]
    np.testing.assert_array_equal(training[~query].astype(str),
                                  mdata.obs["reference_label"][~query].astype(str))
    assert training[query & ~pseudo].isna().all()
    assert training[pseudo].isin(model.classes_).all()
    assert sum(record["pseudo_labeled_per_class"].values()) == pseudo.sum()
    # metrics are computed on the user's labels only: no metrics on pseudo-labels
    assert "pseudo_labeled" not in mdata.uns["mmdyn"]["metrics"]
    assert mdata.uns["mmdyn"]["labels_key"] == "reference_label"
    assert mdata.obs["mmdyn_prediction"][query].notna().all()


def test_calibration_cells_have_the_users_labels(bmmc, fast):
    """``confidence="tcp_calibrated"`` holds out calibration cells among the reference cells
    only: a pseudo-label never calibrates the predicted TCP."""
    mdata, query = _reference_and_query(bmmc)
    model = _fit(mdata, fast, confidence="tcp_calibrated")
    calibration = np.asarray(model.calibration_indices)
    assert len(calibration) > 0 and not query[calibration].any()
    split = mdata.obs["mmdyn_split"].to_numpy()
    assert (split[calibration] == "calibration").all()


def test_saved_transductive_model_predicts_a_new_query(bmmc, fast, tmp_path):
    mdata, query = _reference_and_query(bmmc)
    model = _fit(mdata, fast)
    model.save(tmp_path / "model")
    new_query = mdata[query].copy()
    for column in ("reference_label", "mmdyn_training_label"):
        del new_query.obs[column]
    loaded = MMDynamics.load(tmp_path / "model", adata=new_query)
    mmdyn_sc.tl.predict(new_query, loaded, key_added="again", attribution=False)
    np.testing.assert_array_equal(new_query.obs["again_prediction"].astype(str),
                                  mdata.obs["mmdyn_prediction"][query].astype(str))
    assert (new_query.obs["again_split"] == "query").all()


def test_transductive_errors_name_the_problem(bmmc, fast, tmp_path):
    labelled = bmmc.copy()
    with pytest.raises(ValueError, match="cells without a label"):
        mmdyn_sc.tl.fit(labelled, "cell_type", transductive=True, **fast)
    mdata, _ = _reference_and_query(bmmc)
    for fraction in (0, 1.5, True, "half"):
        with pytest.raises(ValueError, match="pseudo_label_fraction"):
            _fit(mdata, fast, pseudo_label_fraction=fraction)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _fit(mdata, fast, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="DDP"):
        _fit(mdata, fast, strategy="ddp")
    assert "mmdyn_prediction" not in mdata.obs  # nothing written by the refused fits


def test_select_pseudo_labels_keeps_the_most_certain_of_every_class():
    predicted = np.array([0, 0, 0, 0, 1, 1, 1, 2, 0, 1])
    certainty = np.array([.9, .1, .5, .7, .2, .8, .3, .05, .99, .99])
    unlabeled = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    chosen = select_pseudo_labels(predicted, certainty, unlabeled, 0.5)
    # class 0: 4 cells -> the 2 most certain (0, 3); class 1: 3 -> 2 (5, 6); class 2: 1 -> 1
    np.testing.assert_array_equal(chosen.rows, [0, 3, 5, 6, 7])
    np.testing.assert_array_equal(chosen.codes, predicted[[0, 3, 5, 6, 7]])
    assert chosen.n_unlabeled == 8
    everything = select_pseudo_labels(predicted, certainty, unlabeled, 1.0)
    np.testing.assert_array_equal(everything.rows, np.flatnonzero(unlabeled))
    assert len(select_pseudo_labels(predicted, certainty, unlabeled, 0.1).rows) == sum(
        math.ceil(0.1 * n) for n in (4, 3, 1))


def test_train_only_cells_must_be_labelled_indices(bmmc, fast):
    MMDynamics.setup_mudata(bmmc, labels_key="cell_type")
    model = MMDynamics(bmmc, n_hidden=fast["n_hidden"])
    with pytest.raises(TypeError, match="integer indices"):
        model.train(max_epochs=1, train_only_cells=np.ones(bmmc.n_obs, bool))
    with pytest.raises(IndexError, match="456 cells"):
        model.train(max_epochs=1, train_only_cells=[bmmc.n_obs])
    model.train(max_epochs=1, train_only_cells=np.arange(40), enable_progress_bar=False)
    assert not set(range(40)) & set(model.validation_indices)
    assert set(range(40)) <= set(model.train_indices)
