"""Loading a saved :class:`~mmdyn_sc.MMDynamics` onto new data, through public hooks only."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from mudata import MuData

from .._utils import logger, warn
from ._load_check import compare_with_saved_setup, mismatch_error, state_dict_error
from ._saved_files import read_saved_model

#: Constructor options a model saved before 0.2.0 may lack, with the class defaults of
#: then: such a model is rebuilt exactly as it was trained, whatever today's defaults are.
PRE_0_2_DEFAULTS = {
    "n_hidden": 256,
    "dropout": 0.5,
    "feature_informativeness": True,
    "modality_informativeness": True,
    "feature_scaling": None,
    "class_weights": None,
    "loss_weights": None,
    "confidence": "tcp",
    "modality_dropout": 0.0,
    "gate_rank": None,
    "image_options": None,
    "feature_clip": None,
}


def saved_image_options(image_options):
    """A saved image model's image options, completed with what it was trained with.

    A model saved before ``gate_input_size`` (or ``input_size``) existed read the full image
    with its gate (with its whole branch): 0.
    """
    return {"gate_input_size": 0, "input_size": 0, **(image_options or {})}


def torch_device(accelerator: str, device: int | str) -> str:
    """The torch device a loaded model goes to (``"auto"``: the first GPU if any, else CPU)."""
    if device != "auto":
        return f"cuda:{device}" if isinstance(device, int) else str(device)
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda:0"
    return "cpu"


def load_model(cls, dir_path: str | Path, mdata: MuData, accelerator: str = "auto",
               device: int | str = "auto"):
    """The body of :meth:`~mmdyn_sc.MMDynamics.load` (see there)."""
    from .. import __version__

    saved = read_saved_model(dir_path)
    name = saved.registry.get("model_name", cls.__name__)
    if name != cls.__name__:
        raise ValueError(f"{dir_path} holds a {name} model, not an {cls.__name__}.")
    version = saved.attrs.get("mmdyn_sc_version_")
    setup = saved.registry["setup_args"]
    problems, notes = compare_with_saved_setup(setup, mdata)
    if problems:
        raise mismatch_error(dir_path, problems)
    for note in notes:
        logger.info(note)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*mod_names is deprecated.*")
        cls.setup_mudata(mdata, source_registry=saved.registry, **setup)
    options = {**PRE_0_2_DEFAULTS, **saved.init_options}
    if setup.get("images"):
        options["image_options"] = saved_image_options(options["image_options"])
    model = cls(mdata, **options)
    for attr, value in saved.attrs.items():
        setattr(model, attr, value)
    try:
        model.module.load_state_dict(saved.state_dict)
    except RuntimeError as err:
        raise state_dict_error(dir_path, version, __version__, err) from None
    model.to_device(torch_device(accelerator, device))
    model.module.eval()
    if version != __version__:
        warn(f"model saved with mmdyn_sc {version}, loaded with {__version__}")
    return model
