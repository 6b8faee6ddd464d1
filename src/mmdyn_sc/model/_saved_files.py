"""What scvi-tools' ``BaseModelClass.save`` writes, read back without its private loaders.

The one place that knows scvi-tools' save layout: ``<dir>/model.pt``, a torch pickle of
``{"model_state_dict", "var_names", "attr_dict"}`` where ``attr_dict`` holds every model
attribute ending in ``_`` (``registry_`` with ``setup_args``, ``init_params_`` with
``non_kwargs``/``kwargs``, ...); the state dict carries a ``pyro_param_store`` entry for Pyro
models. ``tests/test_scvi_contract.py`` checks it against the
installed scvi-tools, so that an upgrade that changes it fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .._keys import MODEL_FILE

#: Keys of the saved file, and of its ``attr_dict`` entries that loading needs.
SAVED_KEYS = ("model_state_dict", "var_names", "attr_dict")
ATTR_KEYS = ("registry_", "init_params_")


@dataclass
class SavedModel:
    """A saved model's parts: weights, model attributes, registry and constructor options."""

    state_dict: dict
    attrs: dict
    registry: dict
    init_options: dict


def read_saved_model(dir_path: str | Path, map_location="cpu") -> SavedModel:
    """Read ``dir_path/model.pt`` as written by ``MMDynamics.save``.

    Raises ``ValueError`` naming the path when there is no such file or it is not a saved
    model.
    """
    path = Path(dir_path) / MODEL_FILE
    if not path.is_file():
        raise ValueError(f"No saved model at {path}: give the folder that "
                         "MMDynamics.save wrote.")
    saved = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(saved, dict) or any(k not in saved for k in SAVED_KEYS):
        raise ValueError(f"{path} is not a model saved by MMDynamics.save.")
    attrs = dict(saved["attr_dict"])
    missing = [k for k in ATTR_KEYS if k not in attrs]
    if missing:
        raise ValueError(f"{path} lacks {missing}: not a model saved by MMDynamics.save.")
    registry = attrs.pop("registry_")
    init = attrs.pop("init_params_")
    options = dict(init.get("non_kwargs", {}))
    for group in init.get("kwargs", {}).values():
        options.update(group)
    state_dict = dict(saved["model_state_dict"])
    state_dict.pop("pyro_param_store", None)  # scvi-tools saves it for Pyro models (None here)
    return SavedModel(state_dict, attrs, registry, options)
