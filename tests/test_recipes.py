"""One set of defaults: the class, train() and tl.fit share RECIPES["default"]; recipes are
read-only; every recipe key can be set through tl.fit."""

import inspect
import typing

import pytest

import mmdyn_sc as ms
from mmdyn_sc import MMDynamics
from mmdyn_sc.model._recipes import MODEL_OPTIONS, TRAIN_OPTIONS
from mmdyn_sc.tl import RECIPES


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_class_and_train_defaults_are_the_default_recipe():
    model_defaults = _defaults(MMDynamics.__init__)
    train_defaults = _defaults(MMDynamics.train)
    assert set(RECIPES["default"]) == set(MODEL_OPTIONS) | set(TRAIN_OPTIONS)
    for key in MODEL_OPTIONS:
        assert model_defaults[key] == RECIPES["default"][key], key
    for key in TRAIN_OPTIONS:
        assert train_defaults[key] == RECIPES["default"][key], key


def test_recipes_are_read_only():
    with pytest.raises(TypeError):
        RECIPES["default"]["lr"] = 1.0
    with pytest.raises(TypeError):
        RECIPES["mine"] = {}
    assert RECIPES["default"]["lr"] == 1e-3


def test_every_recipe_key_is_a_parameter_of_fit():
    parameters = inspect.signature(ms.tl.fit).parameters
    for recipe in RECIPES.values():
        missing = [k for k in recipe if k not in parameters]
        assert not missing, f"tl.fit cannot set recipe keys {missing}"
        keyword_only = [k for k in recipe if parameters[k].kind != inspect.Parameter.KEYWORD_ONLY]
        assert not keyword_only


def test_option_values_are_typed_as_literals():
    hints = typing.get_type_hints(MMDynamics.__init__)
    assert set(typing.get_args(hints["confidence"])) == {"tcp", "tcp_calibrated", "energy", "pdf"}
    fit_hints = typing.get_type_hints(ms.tl.fit)
    assert set(typing.get_args(fit_hints["recipe"])) == set(RECIPES)


@pytest.fixture(scope="module")
def synthetic_prepared():
    mdata, _ = ms.datasets.synthetic(n_cells=240, n_classes=3, noise_modality=False, seed=1)
    ms.pp.prepare(mdata)
    return mdata


def test_every_recipe_key_set_through_fit_reaches_the_model(synthetic_prepared):
    """One fit that gives every recipe key a value other than the default recipe's."""
    given = {
        "n_hidden": 8, "dropout": 0.25, "feature_scaling": "minmax", "feature_clip": None,
        "class_weights": None, "confidence": "tcp", "modality_dropout": 0.1, "gate_rank": 4,
        "lr": 2e-3, "weight_decay": 1e-5, "lr_step_size": 3, "lr_gamma": 0.5,
        "batch_size": 64, "train_size": 0.8, "early_stopping": False, "max_epochs": 2,
    }
    assert set(given) == set(RECIPES["default"])
    assert all(given[k] != RECIPES["default"][k] for k in given)
    mdata = synthetic_prepared.copy()
    model = ms.tl.fit(mdata, "cell_type", enable_progress_bar=False, **given)
    params = model.init_params_["non_kwargs"]
    for key in MODEL_OPTIONS:
        assert params[key] == given[key], key
    for key in TRAIN_OPTIONS:
        assert model.train_params_[key] == given[key], key
    assert model.module.confidence == "tcp"


def test_direct_class_use_trains_as_tl_fit(synthetic_prepared):
    """MMDynamics(...) with no options and tl.fit with the default recipe: the same model."""
    options = {"max_epochs": 2, "n_hidden": 8}
    via_fit = synthetic_prepared.copy()
    fitted = ms.tl.fit(via_fit, "cell_type", enable_progress_bar=False, seed=4, **options)
    direct = synthetic_prepared.copy()
    MMDynamics.setup_mudata(direct, labels_key="cell_type")
    import torch

    torch.manual_seed(4)
    model = MMDynamics(direct, n_hidden=8)
    model.train(max_epochs=2, seed=4, enable_progress_bar=False)
    assert model.init_params_["non_kwargs"] == fitted.init_params_["non_kwargs"]
    assert model.train_params_ == fitted.train_params_
    torch.testing.assert_close(model.predict(soft=True).to_numpy(),
                               fitted.predict(soft=True).to_numpy(), rtol=0, atol=0)


def test_unknown_recipe_is_named(synthetic_prepared):
    with pytest.raises(ValueError, match="Unknown recipe 'papr'"):
        ms.tl.fit(synthetic_prepared.copy(), "cell_type", recipe="papr")


def test_auto_batch_size_is_32_with_an_image_modality_also_when_train_is_called_directly(
        _synth_images, synth):
    """``batch_size="auto"`` is resolved by train(), not by tl.fit: direct use gets it too."""
    import mudata as md

    from mmdyn_sc.model._recipes import IMAGE_BATCH_SIZE, TABULAR_BATCH_SIZE

    images = md.MuData({"image": _synth_images[:40].copy()})
    images.obs["label"] = _synth_images.obs["label"].astype(str).to_numpy()[:40]
    MMDynamics.setup_mudata(images, labels_key="label")
    image_options = {"patch_size": 8, "unet_channels": 4, "encoder_width": 8, "encoder_fc": 16}
    model = MMDynamics(images, n_hidden=8, image_options=image_options)
    model.train(max_epochs=1, enable_progress_bar=False)
    assert model.train_params_["batch_size"] == IMAGE_BATCH_SIZE
    MMDynamics.setup_mudata(synth, labels_key="cell_type")
    tabular = MMDynamics(synth, n_hidden=8)
    tabular.train(max_epochs=1, enable_progress_bar=False)
    assert tabular.train_params_["batch_size"] == TABULAR_BATCH_SIZE
    with pytest.raises(ValueError, match="batch_size must be a positive integer, None"):
        tabular.train(max_epochs=1, batch_size="large", enable_progress_bar=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, None"):
        tabular.train(max_epochs=1, batch_size=0, enable_progress_bar=False)
