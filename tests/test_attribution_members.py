"""tl.fit(n_fits=): the per-class attribution averaged over extra fits of other seeds."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import torch

import mmdyn_sc as ms
from mmdyn_sc._keys import Key
from mmdyn_sc.model._attribution import class_attribution
from mmdyn_sc.model._attribution_members import (
    AUTO_N_FITS,
    MEMBER_SEED_STEP,
    auto_n_fits,
    member_epochs,
)
from mmdyn_sc.tl import _fit

from .test_attribution import LEARN, SLASHED


@pytest.fixture(scope="module")
def two_fits(_synth_prepared):
    """Seed 0 with ``n_fits=2`` on the data of ``test_attribution.fitted[0]``."""
    mdata = _synth_prepared[0].copy()
    mdata.obs["cell_type"] = mdata.obs["cell_type"].cat.rename_categories(SLASHED)
    model = ms.tl.fit(mdata, "cell_type", seed=0, n_fits=2, **LEARN)
    return mdata, model


def _direct(model, predicted) -> dict[str, np.ndarray]:
    """The per-class attribution of the training cells, grouped by ``predicted``."""
    with model._aligned(None) as aligned:
        return class_attribution(model, aligned, model.train_indices, predicted).direct


def test_attribution_is_the_mean_of_the_two_fits(two_fits):
    mdata, model = two_fits
    assert mdata.uns["mmdyn"]["attribution"]["n_fits"] == 2
    (member,) = model.attribution_members_
    own = {k: v.detach().cpu().clone() for k, v in model.module.state_dict().items()}
    assert any(not torch.equal(own[k], member[k]) for k in own)  # another seed's weights
    predicted = model.infer().proba.argmax(1)  # the first fit's calls group every fit's cells
    both = _direct(model, predicted)
    try:
        model.attribution_members_ = []
        alone = _direct(model, predicted)
        model.module.load_state_dict(member)
        other = _direct(model, predicted)
    finally:
        model.module.load_state_dict(own)
        model.attribution_members_ = [member]
    for mod in ("rna", "prot"):
        np.testing.assert_allclose(both[mod], (alone[mod] + other[mod]) / 2, rtol=1e-5,
                                   atol=1e-8)
        stored = mdata[mod].varm[Key.varm.attribution_direct()].to_numpy()
        np.testing.assert_allclose(stored, both[mod], rtol=1e-5, atol=1e-8)
        assert not np.allclose(alone[mod], other[mod])


def test_predictions_come_from_the_first_fit(two_fits, _synth_prepared):
    mdata, _ = two_fits
    single = _synth_prepared[0].copy()
    single.obs["cell_type"] = single.obs["cell_type"].cat.rename_categories(SLASHED)
    ms.tl.fit(single, "cell_type", seed=0, n_fits=1, **LEARN)
    np.testing.assert_array_equal(mdata.obsm[Key.obsm.proba()], single.obsm[Key.obsm.proba()])
    assert single.uns["mmdyn"]["attribution"]["n_fits"] == 1


def test_saved_model_keeps_its_extra_fits(two_fits, tmp_path):
    mdata, model = two_fits
    query = mdata.copy()
    ms.tl.predict(query, model, attribution_cells=20)
    model.save(str(tmp_path / "model"))
    loaded = ms.MMDynamics.load(str(tmp_path / "model"), mdata.copy())
    assert len(loaded.attribution_members_) == 1
    assert loaded.attribution_member_epochs_ == model.attribution_member_epochs_
    again = mdata.copy()
    ms.tl.predict(again, loaded, attribution_cells=20)
    assert again.uns["mmdyn"]["attribution"]["n_fits"] == 2
    assert (again.uns["mmdyn"]["attribution"]["extra_fit_epochs"]
            == model.attribution_member_epochs_)
    again.write_h5mu(tmp_path / "again.h5mu")
    back = md.read_h5mu(tmp_path / "again.h5mu")
    assert back.uns["mmdyn"]["attribution"]["extra_fit_epochs"] == model.attribution_member_epochs_
    for mod in ("rna", "prot"):
        np.testing.assert_allclose(again[mod].varm[Key.varm.attribution()].to_numpy(),
                                   query[mod].varm[Key.varm.attribution()].to_numpy(),
                                   rtol=1e-5, atol=1e-8)


@pytest.fixture
def train_calls(monkeypatch) -> list:
    """(seed, train options, epochs trained) of every training run inside ``tl.fit``."""
    calls = []
    train = _fit._train

    def spy(target, labels_key, setup, model_options, train_options, seed, **kwargs):
        model = train(target, labels_key, setup, model_options, train_options, seed, **kwargs)
        calls.append((seed, train_options, len(model.history["train_loss"])))
        return model

    monkeypatch.setattr(_fit, "_train", spy)
    return calls


def test_extra_fit_trains_half_the_epochs_without_early_stopping(synth, train_calls):
    # n_fits left at "auto": the default recipe on tabular data averages two fits
    ms.tl.fit(synth, "cell_type", seed=3, max_epochs=5, n_hidden=16,
              enable_progress_bar=False)
    assert synth.uns["mmdyn"]["attribution"]["n_fits"] == AUTO_N_FITS == 2
    (_, own, epochs), (seed, extra, extra_epochs) = train_calls
    assert own["early_stopping"] is True and seed == 3 + MEMBER_SEED_STEP
    assert extra["early_stopping"] is False
    assert extra["max_epochs"] == extra_epochs == member_epochs(epochs) == -(-epochs // 2)
    assert synth.uns["mmdyn"]["attribution"]["extra_fit_epochs"] == extra_epochs


@pytest.mark.parametrize("options", [{"recipe": "paper"}, {"attribution": False},
                                     {"n_fits": 1}])
def test_auto_is_one_fit_otherwise(synth, train_calls, options):
    ms.tl.fit(synth, "cell_type", seed=3, max_epochs=2, n_hidden=16,
              enable_progress_bar=False, **options)
    assert len(train_calls) == 1
    if options.get("attribution", True):
        assert synth.uns["mmdyn"]["attribution"]["n_fits"] == 1


def test_auto_n_fits_rule():
    default = {"attribution": True, "recipe": "default", "strategy": None, "has_images": False}
    assert auto_n_fits(**default) == AUTO_N_FITS
    for change in ({"attribution": False}, {"recipe": "paper"}, {"strategy": "ddp"},
                   {"has_images": True}):
        assert auto_n_fits(**{**default, **change}) == 1, change


def test_auto_is_one_fit_with_an_image_modality(_synth_images, monkeypatch):
    """A MuData with an image modality beside a tabular one: ``auto`` gives one fit."""
    seen = []
    resolve = _fit.auto_n_fits

    def spy(**kwargs):
        seen.append(kwargs["has_images"])
        return resolve(**kwargs)

    monkeypatch.setattr(_fit, "auto_n_fits", spy)
    images = _synth_images.copy()
    tabular = ad.AnnData(np.random.default_rng(0).normal(size=(images.n_obs, 5)).astype(
        np.float32), obs=pd.DataFrame(index=images.obs_names))
    mdata = md.MuData({"image": images, "prot": tabular})
    mdata.obs["label"] = images.obs["label"].astype(str).to_numpy()
    ms.tl.fit(mdata, "label", max_epochs=1, enable_progress_bar=False, attribution_cells=2)
    assert seen == [True]
    assert mdata.uns["mmdyn"]["attribution"]["n_fits"] == 1


def test_member_epochs():
    assert [member_epochs(e) for e in (0, 1, 2, 3, 60, 61)] == [1, 1, 1, 2, 30, 31]


def test_member_seeds_are_apart():
    assert MEMBER_SEED_STEP >= 10  # fits of seeds 0..9 share no extra fit


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", "Auto", True])
def test_bad_n_fits_is_named(synth, bad):
    with pytest.raises(ValueError, match="n_fits must be a positive integer or 'auto'"):
        ms.tl.fit(synth, "cell_type", n_fits=bad, max_epochs=1)


def test_extra_fits_need_the_attribution(synth):
    with pytest.raises(ValueError, match="attribution=False"):
        ms.tl.fit(synth, "cell_type", n_fits=2, attribution=False, max_epochs=1)


def test_extra_fits_are_refused_under_ddp(synth):
    with pytest.raises(ValueError, match="DDP"):
        ms.tl.fit(synth, "cell_type", n_fits=2, strategy="ddp", max_epochs=1)


def test_extra_fits_need_a_tabular_modality(_synth_images):
    mdata = md.MuData({"image": _synth_images.copy()})
    mdata.obs["label"] = _synth_images.obs["label"].astype(str).to_numpy()
    with pytest.raises(ValueError, match="all images"):
        ms.tl.fit(mdata, "label", n_fits=2, max_epochs=1)
