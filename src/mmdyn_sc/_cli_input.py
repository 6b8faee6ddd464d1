"""What the command line checks in its input: files, layers, raw counts; its messages.

Split from :mod:`mmdyn_sc._cli` (which parses and runs the commands): everything here raises
:class:`CLIError` for bad input (exit status 2) and prints through :func:`_info` to stderr.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ._keys import MODEL_FILE

#: Modality names :func:`mmdyn_sc.pp.prepare` knows how to normalise (RNA or protein counts).
_PREPARABLE = {"rna", "gex", "mrna", "prot", "protein", "adt"}

#: Modality name given to the AnnData of an ``.h5ad`` input by default.
H5AD_MODALITY = "rna"


class CLIError(Exception):
    """Bad input found by the command line itself (exit status 2)."""


def _info(message: str) -> None:
    print(f"[mmdyn-sc] {message}", file=sys.stderr)


def _error_message(err: BaseException) -> str:
    """The message of ``err``, without the quotes ``str(KeyError(...))`` adds."""
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]
    return str(err)


def _layer_spec(text: str) -> tuple[str, str | None]:
    """``MOD=LAYER`` as (modality, layer); ``LAYER`` ``X`` means ``.X``."""
    mod, sep, layer = text.partition("=")
    if not sep or not mod or not layer:
        raise argparse.ArgumentTypeError(f"expected MOD=LAYER (e.g. rna=counts), got {text!r}")
    return mod, None if layer == "X" else layer


def _check_paths(input_path: Path, out: Path, force: bool) -> None:
    if not input_path.is_file():
        raise CLIError(f"input file not found: {input_path}")
    if out.resolve() == input_path.resolve() and not force:
        raise CLIError(f"--out {out} is the input file; choose another path or pass --force "
                       "to overwrite it")
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give a file path (e.g. {out / 'out.h5mu'})")
    if out.suffix.lower() != ".h5mu":
        raise CLIError(f"--out {out} does not end in .h5mu: what is written is a MuData file "
                       f"(e.g. {out.with_suffix('.h5mu')}); read its tables with "
                       "mudata.read_h5mu")


def _check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise CLIError(f"model folder not found: {model_dir} (write one with "
                       "`mmdyn-sc fit ... --model-dir DIR`)")
    if not (model_dir / MODEL_FILE).is_file():
        raise CLIError(f"no saved model in {model_dir}: {MODEL_FILE} is missing (write one "
                       "with `mmdyn-sc fit ... --model-dir DIR`)")


def _is_h5ad(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file holding one AnnData (no ``mod`` group) and not a MuData."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "mod" not in f and ("X" in f or "obs" in f)
    except OSError:
        return False  # not HDF5 at all: read_h5mu says so below


def _read(path: Path, h5ad_modality: str = H5AD_MODALITY):
    """The MuData in ``path``; an ``.h5ad`` becomes a MuData with one modality ``h5ad_modality``."""
    import mudata

    from ._utils import mudata_options

    _info(f"reading {path}")
    with mudata_options(), warnings.catch_warnings():
        # Modalities sharing feature names (e.g. CD4 gene and CD4 protein) are normal here.
        warnings.filterwarnings("ignore", message="var_names are not unique")
        if _is_h5ad(path):
            import anndata

            adata = anndata.read_h5ad(path)
            _info(f"{path.name} holds one AnnData (.h5ad), not a MuData: read as a MuData with "
                  f"one modality {h5ad_modality!r} (name it with --h5ad-modality)")
            return mudata.MuData({h5ad_modality: adata})
        try:
            return mudata.read_h5mu(path)
        except (OSError, TypeError, KeyError) as err:
            raise CLIError(f"cannot read {path} as .h5mu (MuData) or .h5ad (AnnData): "
                           f"{_error_message(err)}") from err


def _write(mdata, path: Path) -> None:
    from ._utils import mudata_options

    path.parent.mkdir(parents=True, exist_ok=True)
    with mudata_options():
        mdata.write_h5mu(path)
    _info(f"wrote {path}")


def _used_layers(mdata, modalities: list[str], given: dict, image_key: str) -> dict:
    """The matrix each modality trains on, as ``tl.fit`` resolves it: ``MOD -> layer``.

    ``None`` is ``.X``; an image modality maps to ``.obsm[image_key]``. Modalities missing
    from ``mdata`` are left to ``tl.fit``'s own error.
    """
    from ._keys import PREPARED_LAYER
    from ._utils import layer_names

    used = {}
    for mod in modalities:
        if mod not in mdata.mod:
            continue
        adata = mdata.mod[mod]
        if image_key in adata.obsm and mod not in given:
            used[mod] = f".obsm[{image_key!r}]"
        elif mod in given:
            used[mod] = given[mod]
        else:
            used[mod] = PREPARED_LAYER if PREPARED_LAYER in layer_names(adata) else None
    return used


def _layer_text(used: dict) -> str:
    """``rna: layers['mmdyn_prepared'], img: .obsm['image']`` (``None`` is ``.X``)."""
    parts = []
    for mod, layer in used.items():
        if layer is None:
            where = ".X"
        elif layer.startswith(".obsm"):  # an image modality
            where = layer
        else:
            where = f"layers[{layer!r}]"
        parts.append(f"{mod}: {where}")
    return ", ".join(parts)


def _raw_count_modalities(mdata, used: dict, given: dict) -> list[str]:
    """RNA/protein modalities that would train on raw counts in ``.X`` by default."""
    from ._utils import looks_like_counts

    return [mod for mod, layer in used.items()
            if layer is None and mod not in given and mod.lower() in _PREPARABLE
            and looks_like_counts(mdata.mod[mod].X)]


def _prepare_counts(mdata, mods: list[str]) -> None:
    from . import pp
    from ._keys import PREPARED_LAYER

    pp.prepare(mdata, modalities=mods)
    _info(f"--prepare: normalised the counts in .X of {', '.join(mods)} with "
          f"mmdyn_sc.pp.prepare (RNA: total counts 1e4 and log1p; protein: CLR) into "
          f"layers[{PREPARED_LAYER!r}]")


def _check_counts(mdata, modalities: list[str], given: dict, image_key: str,
                  prepare: bool) -> dict:
    """Stop (or, with ``--prepare``, normalise) where raw counts would be trained on.

    Returns the layer each modality uses, after preparation.
    """
    from ._keys import PREPARED_LAYER

    used = _used_layers(mdata, modalities, given, image_key)
    counts = _raw_count_modalities(mdata, used, given)
    if counts and not prepare:
        names = ("modality " if len(counts) == 1 else "modalities ") + ", ".join(counts)
        raise CLIError(
            f"{names}: .X holds raw counts (non-negative integers) and there is no "
            f"layers[{PREPARED_LAYER!r}], so the model would train on counts, which costs "
            "accuracy. Rerun with --prepare to normalise them first with mmdyn_sc.pp.prepare "
            "(written into the output), or with --layers "
            + " ".join(f"{m}=X" for m in counts) + " to train on the counts as they are."
        )
    if counts:
        _prepare_counts(mdata, counts)
        used = _used_layers(mdata, modalities, given, image_key)
    elif prepare:
        _info("--prepare: no modality trains on raw counts in .X; nothing to prepare")
    return used
