"""Patch attribution of image modalities (integrated gradients pooled to patches).

Synthetic images carry their class in a bright square (conftest's ``synthetic_images``): a
model that classifies them must draw its evidence from the square, and the attribution must
say so. Real BCCD crops: test_image_gate.py (nucleus ratio) and benchmarks/images.py.
"""

from __future__ import annotations

import mudata as md
import numpy as np
import pandas as pd
import pytest
import torch

import mmdyn_sc as ms
from mmdyn_sc.model._image_attribution import patch_sums

IMAGE_OPTIONS = {"patch_size": 4, "unet_channels": 4, "encoder_width": 8, "encoder_fc": 32}
FIT = {"n_hidden": 16, "enable_progress_bar": False, "image_options": IMAGE_OPTIONS,
       "modality_informativeness": False, "seed": 0}


def image_only(images) -> md.MuData:
    mdata = md.MuData({"image": images.copy()})
    mdata.obs["label"] = images.obs["label"].astype(str).to_numpy()
    return mdata


@pytest.fixture(scope="module")
def fitted(_synth_images):
    mdata = image_only(_synth_images)
    model = ms.tl.fit(mdata, "label", max_epochs=40, batch_size=32, early_stopping=False,
                      **FIT)
    return mdata, model


def blob_patches(images: np.ndarray, patch: int) -> np.ndarray:
    """(n, grid, grid): patches holding a pixel of the bright square (a channel >= 200)."""
    bright = torch.as_tensor((images.max(1) >= 200).astype(np.float32))
    return patch_sums(bright, patch).numpy() > 0


def test_patch_sums_adds_each_patch():
    pixels = torch.arange(16.0).reshape(1, 4, 4)
    np.testing.assert_allclose(patch_sums(pixels, 2).numpy(),
                               [[[0 + 1 + 4 + 5, 2 + 3 + 6 + 7],
                                 [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]])


def test_fit_stores_patch_attribution_on_the_class_square(fitted):
    mdata, model = fitted
    assert mdata.uns["mmdyn"]["metrics"]["train"]["accuracy"] > 0.75  # it learnt the squares
    values = mdata["image"].obsm["mmdyn_attribution"]
    assert values.shape == (120, 8, 8) and values.dtype == np.float32
    assert np.isfinite(values).all()
    assert mdata.uns["mmdyn"]["images"]["image"]["attribution"] is True
    positive = np.clip(values, 0, None).reshape(120, -1)
    on_blob = blob_patches(mdata["image"].obsm["image"], 4).reshape(120, -1)
    share = (positive * on_blob).sum(1) / positive.sum(1)
    # The square covers 4 to 9 of the 64 patches (6-14 % of the area); measured: median
    # share 0.62, 5x the square's area share (a uniform map: 1x).
    assert np.median(share) > 0.5, np.median(share)
    assert np.median(share / on_blob.mean(1)) > 3
    np.testing.assert_array_equal(model.get_image_attribution(mdata), values)


def test_predict_attributes_at_most_attribution_cells_per_class(fitted):
    """The patch attribution is capped like the per-class one: NaN beyond the sample."""
    mdata, model = fitted
    query = mdata.copy()
    ms.tl.predict(query, model, attribution_cells=3)
    values = query["image"].obsm["mmdyn_attribution"]
    done = np.isfinite(values).all(axis=(1, 2))
    assert np.isnan(values[~done]).all()
    predicted = query.obs["mmdyn_prediction"].to_numpy()
    counts = pd.Series(predicted[done]).value_counts()
    assert counts.max() == 3 and set(counts.index) == set(predicted)
    np.testing.assert_allclose(values[done], model.get_image_attribution(query)[done],
                               rtol=1e-5, atol=1e-6)


def test_patch_attribution_is_complete(fitted):
    """Patch sums add up to log p(image) - log p(mean-colour image) of the predicted class."""
    mdata, model = fitted
    values = model.get_image_attribution(mdata)[:16]
    images = mdata["image"].obsm["image"][:16]
    module = model.module.eval()
    base = model.module.branches[0].scaler.shift.detach().float().view(1, -1, 1, 1)
    x = torch.as_tensor(images).float() / 255
    present = torch.ones(len(x), 1)
    with torch.no_grad():
        log_p = torch.log_softmax(module([x], present)["fused_logits"], 1)
        target = log_p.argmax(1)
        log_p0 = torch.log_softmax(module([base.expand_as(x)], present)["fused_logits"], 1)
    gap = (log_p - log_p0).gather(1, target[:, None]).squeeze(1).numpy()
    total = values.sum((1, 2))
    # 16 midpoint steps: close, not exact.
    assert np.corrcoef(total, gap)[0, 1] > 0.95
    assert np.median(np.abs(total - gap) / np.maximum(np.abs(gap), 1e-3)) < 0.25


def test_attribution_false_writes_no_image_attribution(_synth_images):
    mdata = image_only(_synth_images[::2])
    ms.tl.fit(mdata, "label", max_epochs=1, attribution=False, **FIT)
    assert "mmdyn_attribution" not in mdata["image"].obsm
    assert mdata.uns["mmdyn"]["images"]["image"]["attribution"] is False


def test_predict_writes_attribution_for_imaged_cells_only(synth_trimodal, tmp_path):
    train, query = synth_trimodal
    model = ms.tl.fit(train, "cell_type", max_epochs=1, n_hidden=16, enable_progress_bar=False,
                      image_options=IMAGE_OPTIONS)
    ms.tl.predict(query, model)
    values = query["image"].obsm["mmdyn_attribution"]
    assert values.shape == (query["image"].n_obs, 8, 8) and np.isfinite(values).all()
    assert query["image"].n_obs < query.n_obs  # type_3 cells have no image
    per_cell = model.get_image_attribution(query)
    rows = query.obs_names.get_indexer(query["image"].obs_names)
    np.testing.assert_allclose(per_cell[rows], values, rtol=1e-5, atol=1e-6)
    without = np.setdiff1d(np.arange(query.n_obs), rows)
    assert np.isnan(per_cell[without]).all()
    with pytest.raises(KeyError, match="not an image modality"):
        model.get_image_attribution(query, modality="rna")
    path = tmp_path / "query.h5mu"
    query.write(path)  # the new key and its uns flag survive an h5mu round trip
    back = md.read_h5mu(path)
    np.testing.assert_array_equal(back["image"].obsm["mmdyn_attribution"], values)
    assert bool(back.uns["mmdyn"]["images"]["image"]["attribution"])
