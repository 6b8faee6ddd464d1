"""The image branch's input scaling and patch-gate sparsity: fitted, warmed up, gate kept open
(synthetic images of conftest; the gate staying open on real BCCD crops)."""

from __future__ import annotations

import mudata as md
import numpy as np
import pytest
import torch

import mmdyn_sc as ms
from mmdyn_sc.model._feature_scaling import fit_channel_scaling
from mmdyn_sc.module import DEFAULT_IMAGE_OPTIONS, ImageBranch
from mmdyn_sc.module._image_branch import image_options

SMALL = {"patch_size": 4, "unet_channels": 4, "encoder_width": 8, "encoder_fc": 32}


def image_only(images) -> md.MuData:
    mdata = md.MuData({"image": images.copy()})
    mdata.obs["label"] = images.obs["label"].astype(str).to_numpy()
    return mdata


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_channel_scaling_matches_numpy(synth_images, dtype):
    images = synth_images.obsm["image"]
    if dtype == "float32":
        images = images.astype(np.float32) / 255
    rows = np.arange(0, len(images), 3)
    pixels = np.moveaxis(images[rows].astype(np.float64), 1, -1).reshape(-1, 3)
    pixels /= 255 if dtype == "uint8" else 1
    mean, std = fit_channel_scaling(images, rows, "standard")
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-10)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-8)
    low, span = fit_channel_scaling(images, rows, "minmax")
    np.testing.assert_allclose(low, pixels.min(0))
    np.testing.assert_allclose(span, pixels.max(0) - pixels.min(0))
    shift, scale = fit_channel_scaling(images, rows, None)
    assert (shift == 0).all() and (scale == 1).all()
    with pytest.raises(ValueError, match="feature_scaling must be one of"):
        fit_channel_scaling(images, rows, "zscore")


def test_fit_stores_the_training_images_channel_scaling(synth_images):
    mdata = image_only(synth_images)
    model = ms.tl.fit(mdata, "label", max_epochs=1, n_hidden=8, enable_progress_bar=False,
                      image_options=SMALL, seed=0)
    scaler = model.module.branches[0].scaler
    train = np.sort(model.train_indices)
    mean, std = fit_channel_scaling(synth_images.obsm["image"], train, "standard")
    np.testing.assert_allclose(scaler.shift.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(scaler.scale.numpy(), std, rtol=1e-6)
    assert np.array_equal(mdata["image"].obsm["image"], synth_images.obsm["image"])  # untouched


def test_image_options_validate_the_gate_settings():
    assert image_options({"gate_sparsity": 1, "gate_warmup": 0}) == {
        **DEFAULT_IMAGE_OPTIONS, "gate_sparsity": 1.0, "gate_warmup": 0}
    for bad in ({"gate_sparsity": -0.1}, {"gate_sparsity": float("nan")},
                {"gate_sparsity": "high"}, {"gate_warmup": -1}, {"gate_warmup": 2.5},
                {"patch_size": 0}):
        with pytest.raises(ValueError, match=f"image option '{next(iter(bad))}'"):
            image_options(bad)


def test_gate_is_held_during_warmup():
    torch.manual_seed(0)
    branch = ImageBranch(3, 16, 8, 2, 0.0, True, False,
                         options={**SMALL, "gate_sparsity": 0.5, "gate_warmup": 3})
    images = torch.rand(4, 3, 16, 16)
    weights, gate_grads = [], []
    for epoch in range(5):
        branch.start_epoch(epoch)  # as the training plan does (one step per epoch here)
        out = branch.train()(images)
        weights.append(branch.sparsity_weight)  # as the loss reads it, after the forward
        branch.zero_grad()
        (out["logits"].sum() + out["gate"].sum()).backward()
        gate_grads.append(any(p.grad is not None and p.grad.abs().sum() > 0
                              for p in branch.gate.parameters()))
        assert out["heatmap"].min() > 0  # the held gate still gates
    branch.eval()(images)  # predicting does not count
    assert weights == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert gate_grads == [False, False, False, True, True]
    assert int(branch.training_epochs) == 4
    assert "training_epochs" in branch.state_dict()  # saved with the model
    assert not branch.warming_up
    branch.load_state_dict({**branch.state_dict(), "training_epochs": torch.tensor(1)})
    assert branch.warming_up  # a loaded epoch is read again
    old = {k: v for k, v in branch.state_dict().items() if k != "training_epochs"}
    branch.load_state_dict({**old, "training_steps": torch.tensor(1)})  # saved by 0.1.0
    assert not branch.warming_up
    no_warmup = ImageBranch(3, 16, 8, 2, 0.0, True, False, options={**SMALL, "gate_warmup": 0})
    assert no_warmup.sparsity_weight == DEFAULT_IMAGE_OPTIONS["gate_sparsity"]


def test_paper_recipe_trains_the_gate_from_the_first_step(synth_images):
    mdata = image_only(synth_images[::3])  # 40 images, every class
    model = ms.tl.fit(mdata, "label", recipe="paper", max_epochs=1, n_hidden=8,
                      enable_progress_bar=False, image_options=SMALL)
    assert model.module.branches[0].options["gate_warmup"] == 0
    assert model.module.branches[0].options["gate_sparsity"] == 1.0  # the study's weight
    held = ms.tl.fit(mdata, "label", recipe="paper", max_epochs=1, n_hidden=8,
                     enable_progress_bar=False, image_options={**SMALL, "gate_warmup": 5})
    assert held.module.branches[0].options["gate_warmup"] == 5  # the user's name wins
    with pytest.raises(TypeError, match="image_options must be a dict"):
        ms.tl.fit(mdata, "label", image_options=[("patch_size", 4)])


def otsu_nucleus(images: np.ndarray) -> np.ndarray:
    """(n, S, S) nucleus masks: blue / (green + 1) above each image's Otsu threshold (the
    mask of benchmarks/images.py, without its removal of specks)."""
    from skimage.filters import threshold_otsu

    ratio = images[:, 2].astype(float) / (images[:, 1].astype(float) + 1)
    return np.stack([r > threshold_otsu(r) for r in ratio])


def nucleus_ratio(heatmap: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per image: (heatmap mass on the nucleus / total) / (nucleus area share)."""
    patch = mask.shape[-1] // heatmap.shape[-1]
    pixels = np.kron(heatmap, np.ones((1, patch, patch)))
    return (pixels * mask).sum((1, 2)) / pixels.sum((1, 2)) / mask.mean((1, 2))


@pytest.mark.slow
def test_patch_gate_finds_the_nucleus_at_64_px(bccd64):
    """Issue 20: with the default options the gate of a 64 px fit lands on the nucleus.

    Every package default but the epochs (15, no early stopping: the gate held for 5, then 10
    of batch 32, 70 steps), trained on two thirds of the crops, scored on the others. The
    benchmark's target is a ratio of 1.5 over full fits (benchmarks/image_heatmaps.py); 0.1.0's
    defaults (batch 128, the gate held for 100 steps) never train the gate in these 30 steps
    and leave it at its start, a ratio of about 1.
    """
    names = bccd64.obs_names
    test = names[::3]
    mdata = image_only(bccd64)
    train = mdata[~mdata.obs_names.isin(test)].copy()
    query = mdata[test].copy()
    model = ms.tl.fit(train, "label", max_epochs=15, early_stopping=False, seed=0,
                      enable_progress_bar=False, attribution=False)
    assert model.train_params_["batch_size"] == 32
    ms.tl.predict(query, model, attribution=False)
    heatmap = query["image"].obsm["mmdyn_heatmap"]
    assert np.mean(heatmap.max(axis=(1, 2)) > 0.1) > 0.9  # open: the gate did not shut
    ratio = nucleus_ratio(heatmap, otsu_nucleus(query["image"].obsm["image"]))
    assert np.nanmean(ratio) > 1.2, np.nanmean(ratio)
