"""The two named sets of defaults (recipes) of MM dynamics, and the types of their options.

``RECIPES["default"]`` is what :class:`~mmdyn_sc.MMDynamics`, its ``train()`` and
:func:`mmdyn_sc.tl.fit` use when an option is not given: one set of defaults everywhere.
``RECIPES["paper"]`` is the study's training, switched on as a whole by
``tl.fit(..., recipe="paper")``. Both are read-only.

A new training option goes into ``"default"`` only, with ``"paper"`` keeping the study's
value; what is computed after training (explanations, certainty) is computed under both.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

#: How MI weighs each modality per cell (see :class:`~mmdyn_sc.module.MMDynamicsModule`).
Confidence = Literal["tcp", "tcp_calibrated", "energy", "pdf"]
#: Per-feature scaling fitted on the training cells (``None``: none).
FeatureScaling = Literal["standard", "minmax"]
#: Class weights of the cross-entropy (``None``: unweighted).
ClassWeights = Literal["balanced"]
#: Names of :data:`RECIPES`.
RecipeName = Literal["default", "paper"]

#: Options of :class:`~mmdyn_sc.MMDynamics` that the recipes set; the others are options of
#: :meth:`~mmdyn_sc.MMDynamics.train`.
MODEL_OPTIONS = ("n_hidden", "dropout", "feature_scaling", "feature_clip", "class_weights",
                 "confidence", "modality_dropout", "gate_rank")
#: Options of :meth:`~mmdyn_sc.MMDynamics.train` that the recipes set.
TRAIN_OPTIONS = ("max_epochs", "lr", "weight_decay", "lr_step_size", "lr_gamma", "batch_size",
                 "train_size", "early_stopping")

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
#: Read-only: pass options to :func:`mmdyn_sc.tl.fit` to change them for one fit. docs/api.md
#: lists them as a table, which tests/test_docs_recipes.py checks against this mapping.
RECIPES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "default": MappingProxyType({
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
        "batch_size": "auto",
        "train_size": 0.9,
        "early_stopping": True,
        "max_epochs": 200,
    }),
    "paper": MappingProxyType({
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
    }),
})

#: ``batch_size="auto"`` (recipe ``"default"``): this many cells per minibatch, or
#: :data:`IMAGE_BATCH_SIZE` when the model has an image modality.
TABULAR_BATCH_SIZE = 128
#: ``batch_size="auto"`` with an image modality. At 128, a few hundred images are two
#: steps per epoch: the image branch's encoder learns little in the patch gate's warm-up,
#: and the gate then shuts every patch (the classifier is better off with no input than
#: with one it reads wrongly); 32 gives it four times the steps for the same epochs
#: (``benchmarks/results/image_heatmaps.md``).
IMAGE_BATCH_SIZE = 32


def resolve_batch_size(batch_size, has_images: bool) -> int | None:
    """The batch size to train with.

    ``"auto"``: :data:`IMAGE_BATCH_SIZE` with an image modality, else
    :data:`TABULAR_BATCH_SIZE`; a positive integer or ``None`` (full batch) as given.
    """
    if batch_size == "auto":
        return IMAGE_BATCH_SIZE if has_images else TABULAR_BATCH_SIZE
    if batch_size is None or (not isinstance(batch_size, str | bool)
                              and int(batch_size) == batch_size and int(batch_size) >= 1):
        return batch_size
    raise ValueError(f"batch_size must be a positive integer, None (full batch) or 'auto', "
                     f"got {batch_size!r}.")

#: The defaults of :class:`~mmdyn_sc.MMDynamics` and its ``train()``.
DEFAULTS = RECIPES["default"]

#: Image options of each recipe (see :data:`~mmdyn_sc.module.DEFAULT_IMAGE_OPTIONS`); a
#: user's ``image_options`` override them name by name. ``"paper"`` trains the patch gate
#: from the first step and on the full image, as the study did.
RECIPE_IMAGE_OPTIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "default": MappingProxyType({}),
    "paper": MappingProxyType({"gate_warmup": 0, "gate_input_size": 0, "input_size": 0}),
})


def recipe_options(recipe: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe's options with every explicitly given override applied.

    A recipe's ``feature_clip`` clips z-scores: when ``overrides`` change ``feature_scaling``
    away from ``"standard"`` without naming ``feature_clip``, the clip is dropped with it.
    """
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}.")
    unknown = sorted(set(overrides) - set(RECIPES[recipe]))
    if unknown:
        raise TypeError(f"Not recipe options: {unknown}.")
    options = {**RECIPES[recipe], **overrides}
    if options["feature_scaling"] != "standard" and "feature_clip" not in overrides:
        options["feature_clip"] = None
    return options


def image_options_for(recipe: str,
                      image_options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The recipe's image options with the user's ``image_options`` applied name by name.

    ``None`` when neither sets any (the class default).
    """
    if image_options is not None and not isinstance(image_options, Mapping):
        raise TypeError(f"image_options must be a dict of option names to values, got "
                        f"{type(image_options).__name__}.")
    return {**RECIPE_IMAGE_OPTIONS[recipe], **(image_options or {})} or None
