"""Before loading a saved model onto new data: say everything that differs, at once."""

from __future__ import annotations

from collections.abc import Mapping

from mudata import MuData

from .._data._validation import duplicate_names, examples
from .._utils import layer_names


def compare_with_saved_setup(
    setup: Mapping, mdata: MuData
) -> tuple[list[str], list[str]]:
    """What in ``mdata`` does not match a saved model's setup.

    Parameters
    ----------
    setup
        The saved registry's ``setup_args`` (modalities, layers, features per modality).
    mdata
        The data the model is loaded onto.

    Returns
    -------
    problems
        Differences that make prediction impossible (no modality of the model, missing
        layers or features), one sentence each.
    notes
        Differences that are handled (absent modalities, features in another order, extra
        features), one sentence each.
    """
    if not isinstance(mdata, MuData):
        return [f"expected a MuData, got {type(mdata).__name__}"], []
    problems, notes = [], []
    modalities = list(setup["modalities"])
    missing_mods = [m for m in modalities if m not in mdata.mod]
    if len(missing_mods) == len(modalities):
        problems.append(
            f"none of the model's modalities {modalities} is in the data (data: "
            f"{list(mdata.mod)})"
        )
    elif missing_mods:
        notes.append(
            f"modalities {missing_mods} are absent from the data: cells are predicted from "
            f"{[m for m in modalities if m not in missing_mods]} only"
        )
    for mod in modalities:
        if mod in missing_mods:
            continue
        adata = mdata.mod[mod]
        images = (setup.get("images") or {}).get(mod)
        if images is not None:
            problem = _image_problem(adata, mod, images)
            if problem:
                problems.append(problem)
            continue
        layer = (setup.get("layers") or {}).get(mod)
        if layer is not None and layer not in adata.layers:
            problems.append(
                f"modality {mod!r} has no layer {layer!r}, which the model was trained on "
                f"(available: {layer_names(adata)})"
            )
        expected = list(setup["features"][mod])
        names = adata.var_names
        # As at prediction: only repeats of the model's own features are a problem.
        wanted = set(expected)
        repeated = [d for d in duplicate_names(names) if d in wanted]
        if repeated:
            problems.append(f"modality {mod!r} has duplicate feature names {examples(repeated)}")
            continue
        available = set(names)
        missing = [f for f in expected if f not in available]
        if missing:
            problems.append(
                f"modality {mod!r} lacks {len(missing)} of the model's {len(expected)} "
                f"features: {examples(missing, 20)}"
            )
            continue
        extra = len(names) - len(expected)
        if list(names) != expected:
            if extra:
                notes.append(f"modality {mod!r}: {extra} features the model does not use are "
                             "ignored")
            else:
                notes.append(f"modality {mod!r}: features are in another order; matched by "
                             "name")
    return problems, notes


def _image_problem(adata, mod: str, spec: Mapping) -> str | None:
    """How the image modality ``mod`` differs from the images the model was trained on."""
    key = spec["obsm_key"]
    if key not in adata.obsm:
        return (f"image modality {mod!r} has no obsm[{key!r}] (obsm keys: "
                f"{[str(k) for k in adata.obsm.keys()]})")
    shape = tuple(getattr(adata.obsm[key], "shape", ()))
    expected = (spec["channels"], spec["image_size"], spec["image_size"])
    if shape[1:] != expected:
        return (f"image modality {mod!r} holds images of shape {shape[1:]} (channels, H, W); "
                f"the model was trained on {expected}")
    return None


def mismatch_error(dir_path, problems: list[str]) -> ValueError:
    """One error listing every difference between the data and the model in ``dir_path``."""
    lines = "\n".join(f"  - {p}" for p in problems)
    return ValueError(
        f"The MuData does not match the model saved in {dir_path}:\n{lines}"
    )


def state_dict_error(dir_path, saved_version: str | None, current: str,
                     error: Exception) -> ValueError:
    """Explain a saved model whose weights this version of mmdyn_sc cannot read."""
    return ValueError(
        f"The model in {dir_path} was saved with mmdyn_sc {saved_version or 'unknown'}; "
        f"mmdyn_sc {current} cannot read its weights ({error}). Load it with the version "
        "that saved it, or retrain."
    )
