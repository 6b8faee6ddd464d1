"""Named sets of defaults for :func:`mmdyn_sc.tl.fit` (defined with the model)."""

from ..model._recipes import (  # noqa: F401
    MODEL_OPTIONS,
    RECIPE_IMAGE_OPTIONS,
    RECIPES,
    TRAIN_OPTIONS,
    recipe_options,
)
