"""feature_clip: z-scored inputs clipped to [-c, c] (recipe "default": 5); real BMMC genes for the
clip's effect, synthetic CITE-seq for the options and errors."""

import numpy as np
import pytest
import torch

import mmdyn_sc as ms
from mmdyn_sc.module import FeatureScaler


def test_scaler_clips_both_sides_after_scaling():
    scaler = FeatureScaler(2, clip=3.0)
    scaler.set(np.array([1.0, 0.0]), np.array([2.0, 0.5]))
    x = torch.tensor([[1.0, 0.0], [9.0, -4.0], [3.0, 1.0]])
    expected = torch.tensor([[0.0, 0.0], [3.0, -3.0], [1.0, 2.0]])
    torch.testing.assert_close(scaler(x), expected)
    scaler.clip = None
    torch.testing.assert_close(scaler(x)[1], torch.tensor([4.0, -8.0]))


def scaled_training_inputs(model, mdata, m):
    """Modality ``m``'s inputs of the training cells after the model's own scaler."""
    mod = model.modalities_[m]
    adata = mdata[mod][:, model.features_[mod]]
    x = adata.layers["mmdyn_prepared"]
    x = torch.as_tensor(np.asarray(x.todense() if hasattr(x, "todense") else x),
                        dtype=torch.float32)
    rows = np.flatnonzero(mdata.obs["mmdyn_split"].to_numpy() == "train")
    with torch.no_grad():
        return model.module.branches[m].scaler(x[rows])


def test_default_recipe_clips_the_z_scores_of_real_genes(bmmc, fast):
    model = ms.tl.fit(bmmc, "cell_type", **fast)
    assert model.feature_clip == 5.0
    assert bmmc.uns["mmdyn"]["model_params"]["feature_clip"] == 5.0
    clipped = scaled_training_inputs(model, bmmc, 0)
    assert clipped.abs().max() == pytest.approx(5.0)
    # The clip acts: without it, some training z-scores of BMMC genes lie beyond 5.
    model.module.branches[0].scaler.clip = None
    raw = scaled_training_inputs(model, bmmc, 0)
    assert (raw.abs() > 5).float().mean() > 0.001
    torch.testing.assert_close(raw.clamp(-5, 5), clipped)


def test_no_clip_and_other_scalings(synth, fast):
    model = ms.tl.fit(synth, "cell_type", feature_clip=None, **fast)
    assert model.feature_clip is None and model.module.branches[0].scaler.clip is None
    assert scaled_training_inputs(model, synth, 0).abs().max() > 5  # rarely expressed genes
    # Another scaling without feature_clip drops the recipe's clip with the z-scores.
    model = ms.tl.fit(synth, "cell_type", feature_scaling="minmax", key_added="mm", **fast)
    assert model.feature_clip is None
    assert synth.uns["mm"]["model_params"]["feature_scaling"] == "minmax"


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"feature_scaling": "minmax", "feature_clip": 3}, ValueError,
     r"feature_clip clips z-scores and needs feature_scaling='standard'.*'minmax'"),
    ({"feature_scaling": None, "feature_clip": 3}, ValueError, r"feature_scaling=None"),
    ({"feature_clip": 0}, ValueError, r"feature_clip must be None or a positive number, got 0"),
    ({"feature_clip": -1.0}, ValueError, r"positive number, got -1.0"),
    ({"feature_clip": float("inf")}, ValueError, r"positive number, got inf"),
    ({"feature_clip": "3"}, TypeError, r"feature_clip must be None or a positive number, got str"),
    ({"feature_clip": True}, TypeError, r"got bool"),
])
def test_bad_feature_clip(synth, fast, options, error, message):
    with pytest.raises(error, match=message):
        ms.tl.fit(synth, "cell_type", **options, **fast)
    assert "mmdyn" not in synth.uns
