"""Named sets of defaults for :func:`mmdyn_sc.tl.fit`."""

from __future__ import annotations

#: ``"default"``: minibatches, class-balanced loss, z-scored inputs clipped to [-5, 5]
#: (``feature_clip``: of the clips 2, 3, 5, 10 and none, 5 has the best mean validation macro
#: F1 over BMMC and pbmc10k, benchmarks/results/pbmc10k_tune.md), early stopping on a
#: validation split. ``"paper"``: the original MM dynamics recipe exactly (full batch,
#: H=1000, dropout 0.5, min-max scaling fitted on the training cells, Adam 1e-4 / weight
#: decay 1e-4, StepLR 500 / 0.2, no class weights, no early stopping, fixed epoch count).
#: ``"default"`` gates modalities of >= 2000 features with rank 64 (``gate_rank="auto"``,
#: benchmarks/results/gate_rank.md); ``"paper"`` keeps the full d x d gate. ``"default"``
#: weighs modalities by the energy score with modality dropout 0.3: of the MM dynamics
#: variants in benchmarks/ablations.py it has the best mean validation macro F1 over the
#: BMMC and pbmc10k runs (validation cells of the training data, never test cells).
RECIPES: dict[str, dict] = {
    "default": {
        "n_hidden": 256,
        "dropout": 0.5,
        "feature_scaling": "standard",
        "feature_clip": 5.0,
        "class_weights": "balanced",
        "confidence": "energy",
        "modality_dropout": 0.3,
        "gate_rank": "auto",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "lr_step_size": None,
        "lr_gamma": 0.2,
        "batch_size": 128,
        "train_size": 0.9,
        "early_stopping": True,
        "max_epochs": 200,
    },
    "paper": {
        "n_hidden": 1000,
        "dropout": 0.5,
        "feature_scaling": "minmax",
        "feature_clip": None,
        "class_weights": None,
        "confidence": "tcp",
        "modality_dropout": 0.0,
        "gate_rank": None,
        "lr": 1e-4,
        "weight_decay": 1e-4,
        "lr_step_size": 500,
        "lr_gamma": 0.2,
        "batch_size": None,
        "train_size": 1.0,
        "early_stopping": False,
        "max_epochs": 1000,
    },
}

#: Image options of each recipe (see :data:`~mmdyn_sc.module.DEFAULT_IMAGE_OPTIONS`); a
#: user's ``image_options`` override them name by name. ``"paper"`` trains the patch gate
#: from the first step, as the study did.
RECIPE_IMAGE_OPTIONS: dict[str, dict] = {"default": {}, "paper": {"gate_warmup": 0}}

MODEL_OPTIONS = ("n_hidden", "dropout", "feature_scaling", "feature_clip", "class_weights",
                 "confidence", "modality_dropout", "gate_rank")


def recipe_options(recipe: str, overrides: dict) -> dict:
    """The recipe's options with every explicitly given (non-``None``-sentinel) override applied.

    A recipe's ``feature_clip`` clips z-scores: when ``overrides`` change ``feature_scaling``
    away from ``"standard"`` without naming ``feature_clip``, the clip is dropped with it.
    """
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}.")
    options = {**RECIPES[recipe], **overrides}
    if options["feature_scaling"] != "standard" and "feature_clip" not in overrides:
        options["feature_clip"] = None
    return options
