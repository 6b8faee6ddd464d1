"""``pl.heatmaps``: cell images with the patch-informativeness heat map of image MM dynamics."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from mudata import MuData

from .._data._images import IMAGE_KEY
from .._keys import DEFAULT_KEY, Key
from ._modality_confidence import group_labels
from ._utils import check_modality, doc_show_return_fig, finish, fit_record

#: Number of rows of panels drawn when neither ``cells`` nor ``groupby`` is given.
DEFAULT_ROWS = 4
#: Default number of panels per row with ``cells`` (scanpy's embedding plots use 4 too).
DEFAULT_NCOLS = 4

COLORBAR_LABEL = "patch gate"


@doc_show_return_fig
def heatmaps(
    mdata: MuData,
    modality: str | None = None,
    *,
    key: str = DEFAULT_KEY,
    cells: str | Sequence[str] | None = None,
    groupby: str | None = None,
    n_per_group: int = 3,
    seed: int = 0,
    alpha: float = 0.5,
    cmap: str = "magma",
    ncols: int | None = None,
    panel_size: float = 2.0,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Cell images with the model's patch-informativeness heat map overlaid.

    The image branch of the model multiplies every pixel of an image (all channels) by the
    gate value of the ``patch_size`` x ``patch_size`` patch it lies in. Each panel shows one
    cell's image with that gate drawn on top: the stored grid of patch gates, upsampled to
    pixels by repeating each value ``patch_size`` times along both axes (nearest), on a
    fixed colour scale from 0 to 1 shared by all panels (one colour bar, ``"patch gate"``).

    Reads

    - ``mdata.uns[key]["images"][modality]``: ``obsm_key`` (where the images are),
      ``patch_size`` (pixels per patch side) and ``heatmap`` (whether the model wrote one),
      written by :func:`mmdyn_sc.tl.fit` / :func:`mmdyn_sc.tl.predict`;
    - ``mdata[modality].obsm[obsm_key]``: the images, (cells, channels, H, W), ``uint8``
      (0..255) or float in [0, 1], 3 channels (RGB) or 1 (drawn in grey);
    - ``mdata[modality].obsm[f"{key}_heatmap"]``: the patch gates, (cells, grid_h, grid_w) in
      [0, 1], written by :func:`mmdyn_sc.tl.fit` / :func:`mmdyn_sc.tl.predict` for a model
      with feature informativeness;
    - ``mdata.obs[f"{key}_prediction"]`` if present (shown in the panel titles) and
      ``mdata.obs[groupby]``.

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit` or :func:`mmdyn_sc.tl.predict`.
    modality
        Image modality to draw. ``None``: the fit's only image modality (an error lists them
        when the fit has several).
    key
        The fit's ``key_added``.
    cells
        Names of the cells to draw (a name or a list), in that order. They must be cells of
        the image modality: cells of the MuData without an image are not in it.
    groupby
        Column of ``mdata.obs`` (e.g. the prediction ``f"{key}_prediction"`` or the labels):
        one row per group, labelled with the group, of ``n_per_group`` cells with an image
        drawn at random (``seed``) from the group and shown in the modality's order. Groups
        without any imaged cell are left out. Exclusive with ``cells``. With neither
        ``cells`` nor ``groupby``, the first ``n_per_group * 4`` cells of the image modality
        are drawn.
    n_per_group
        Cells per group with ``groupby``; sets the default number of cells otherwise.
    seed
        Seed of the random choice of cells per group.
    alpha
        Opacity of the heat map over the image (0: image only, 1: heat map only).
    cmap
        Colour map of the heat map (the colour scale is always 0..1).
    ncols
        Panels per row with ``cells`` or the default choice (default: 4, fewer for fewer
        cells). Not used with ``groupby``: one row per group, ``n_per_group`` columns.
    panel_size
        Width and height of each panel, in inches.
    ax
        Axes to draw into; only for a single cell (e.g. ``cells=[name]``).
    {show_return_fig}

    Returns
    -------
    The Axes of the panel (one cell) or the list of Axes of the panels, row by row; the
    Figure with ``return_fig=True``; nothing when shown.

    Raises
    ------
    KeyError
        Without a fit under ``key``, with a modality that is not an image modality of the
        fit, with cells that are not in the image modality, with an unknown ``groupby``
        column, or without a stored heat map (the model had no patch gate: fit with
        ``feature_informativeness=True``).
    ValueError
        With both ``cells`` and ``groupby``, with ``ax`` and more than one cell, or with
        invalid sizes.
    """
    record = fit_record(mdata, key)
    modality, info = _image_modality(mdata, record, modality, key)
    if cells is not None and groupby is not None:
        raise ValueError("Pass cells or groupby, not both.")
    n_per_group = _positive_int(n_per_group, "n_per_group")
    if ncols is not None:
        ncols = _positive_int(ncols, "ncols")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
    if not float(panel_size) > 0:
        raise ValueError(f"panel_size must be positive, got {panel_size}.")

    adata = mdata.mod[modality]
    obsm_key = str(info.get("obsm_key", IMAGE_KEY))
    images = _image_array(adata, modality, obsm_key)
    heat = _heatmap_array(adata, modality, key, images.shape, info.get("heatmap", True))
    patch = _patch_size(info, images.shape, heat.shape)

    names = adata.obs_names
    if groupby is not None:
        rows = _rows_by_group(mdata, names, groupby, key, n_per_group, seed)
        layout = [[names.get_loc(c) for c in chosen] for _, chosen in rows]
        row_labels = [str(group) for group, _ in rows]
    else:
        positions = _selected_positions(mdata, names, modality, cells, n_per_group)
        n_cols = min(ncols or DEFAULT_NCOLS, len(positions))
        layout = [positions[i : i + n_cols] for i in range(0, len(positions), n_cols)]
        row_labels = None
    n_panels = sum(len(row) for row in layout)
    if ax is not None and n_panels != 1:
        raise ValueError(
            f"ax draws a single cell but {n_panels} were selected; pass cells=[name] with "
            "ax, or leave ax=None for a figure with one panel per cell."
        )

    prediction_column = Key.obs.prediction(key)
    predictions = mdata.obs[prediction_column] if prediction_column in mdata.obs else None
    fig, grid = _panels(layout, ax, float(panel_size))
    drawn: list[Axes] = []
    overlay = None
    for r, (row, row_axes) in enumerate(zip(layout, grid, strict=True)):
        for position, panel in zip(row, row_axes, strict=False):
            cell = names[position]
            overlay = _draw_cell(
                panel, images[position], heat[position], patch, alpha, cmap,
                _title(cell, predictions),
            )
            drawn.append(panel)
        for unused in row_axes[len(row) :]:
            unused.remove()
        if row_labels is not None:
            row_axes[0].set_ylabel(row_labels[r])
    if row_labels is not None and ax is None:
        fig.supylabel(groupby)
    # The colour bar shows the colour map itself, not its blend with the images (alpha).
    scale = ScalarMappable(norm=overlay.norm, cmap=overlay.get_cmap())
    fig.colorbar(scale, ax=drawn, label=COLORBAR_LABEL, shrink=min(0.9, 3.0 / len(layout)))
    return finish(fig, drawn[0] if len(drawn) == 1 else drawn, show, return_fig)


# ------------------------------------------------------------------------------- reading


def _image_modality(mdata: MuData, record, modality: str | None, key: str) -> tuple[str, dict]:
    """The image modality to draw and its entry of ``uns[key]["images"]``."""
    images = dict(record.get("images") or {})
    where = f"mdata.uns[{key!r}]['images']"
    if modality is None:
        if not images:
            raise KeyError(
                f"{where} records no image modality: the fit under key {key!r} used none."
            )
        if len(images) > 1:
            raise ValueError(
                f"The fit has several image modalities ({list(images)}); pass modality=."
            )
        modality = next(iter(images))
    if modality not in images:
        check_modality(mdata, modality)
        raise KeyError(
            f"{modality!r} is not an image modality of the fit under key {key!r} "
            f"(image modalities in {where}: {list(images)})."
        )
    check_modality(mdata, modality)
    return modality, dict(images[modality])


def _image_array(adata, modality: str, obsm_key: str):
    if obsm_key not in adata.obsm:
        raise KeyError(
            f"mdata[{modality!r}].obsm[{obsm_key!r}] (the images) not found "
            f"(obsm keys: {list(adata.obsm.keys())})."
        )
    images = adata.obsm[obsm_key]
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4 or shape[1] not in (1, 3) or shape[0] != adata.n_obs:
        raise ValueError(
            f"mdata[{modality!r}].obsm[{obsm_key!r}] has shape {shape}; expected "
            f"({adata.n_obs}, 1 or 3 channels, H, W)."
        )
    return images


def _heatmap_array(adata, modality: str, key: str, image_shape: tuple, written) -> np.ndarray:
    name = Key.obsm.heatmap(key)
    # ``written`` (uns[key]["images"][modality]["heatmap"]) is False for a model without
    # feature informativeness: a heat map left by an earlier fit under the key is stale.
    if not bool(written) or name not in adata.obsm:
        raise KeyError(
            f"mdata[{modality!r}].obsm[{name!r}] not found: the model had no patch gate. "
            f"Run mmdyn_sc.tl.fit(..., key_added={key!r}) with feature_informativeness=True "
            "(or mmdyn_sc.tl.predict with such a model) to store the heat map."
        )
    heat = np.asarray(adata.obsm[name])
    if heat.ndim != 3 or heat.shape[0] != image_shape[0]:
        raise ValueError(
            f"mdata[{modality!r}].obsm[{name!r}] has shape {heat.shape}; expected "
            f"({image_shape[0]}, grid_h, grid_w)."
        )
    return heat


def _patch_size(info: dict, image_shape: tuple, heat_shape: tuple) -> int:
    """Pixels per patch side: recorded by the fit, else image side / grid side."""
    patch = info.get("patch_size")
    if patch is None:
        patch = image_shape[-2] // heat_shape[1]
    return max(int(patch), 1)


# ------------------------------------------------------------------------ choosing cells


def _missing_cells(mdata: MuData, names: pd.Index, modality: str, cells: list) -> None:
    missing = [c for c in cells if c not in names]
    if not missing:
        return
    shown = ", ".join(repr(c) for c in missing[:10]) + (", ..." if len(missing) > 10 else "")
    in_mdata = [c for c in missing if c in mdata.obs_names]
    note = (
        f"; {len(in_mdata)} of them are cells of the MuData without an image"
        if in_mdata else ""
    )
    raise KeyError(
        f"{len(missing)} cell(s) not in the image modality mdata[{modality!r}] ({shown}): "
        f"they may have no image ({len(names)} of the {mdata.n_obs} cells have one){note}."
    )


def _selected_positions(mdata, names, modality, cells, n_per_group) -> list[int]:
    if cells is None:
        n = min(n_per_group * DEFAULT_ROWS, len(names))
        if n == 0:
            raise ValueError(f"mdata[{modality!r}] holds no cells.")
        return list(range(n))
    cells = [cells] if isinstance(cells, str) else list(cells)
    if not cells:
        raise ValueError("cells is empty.")
    _missing_cells(mdata, names, modality, cells)
    return [names.get_loc(c) for c in cells]


def _rows_by_group(mdata, names, groupby, key, n_per_group, seed) -> list[tuple]:
    """``(group, cells)`` for each group with imaged cells, cells in the modality's order."""
    column, groups = group_labels(mdata, groupby, key)
    labels = column.reindex(names).to_numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for group in groups:
        members = np.flatnonzero(labels == group)
        if not len(members):
            continue
        if len(members) > n_per_group:
            members = np.sort(rng.choice(members, size=n_per_group, replace=False))
        rows.append((group, [names[i] for i in members]))
    if not rows:
        raise ValueError(f"No cell of the image modality has a value in mdata.obs[{groupby!r}].")
    return rows


# ---------------------------------------------------------------------------- drawing


def _panels(layout: list[list[int]], ax, panel_size: float) -> tuple:
    """The figure and one list of Axes per row (as many Axes as the longest row)."""
    if ax is not None:
        return ax.figure, [[ax]]
    n_rows, n_cols = len(layout), max(len(row) for row in layout)
    fig, axes = plt.subplots(
        n_rows, n_cols, squeeze=False, layout="constrained",
        figsize=(panel_size * n_cols + 1.0, (panel_size + 0.35) * n_rows),
    )
    return fig, [list(row) for row in axes]


def _title(cell, predictions: pd.Series | None) -> str:
    if predictions is None or cell not in predictions.index:
        return str(cell)
    predicted = predictions.loc[cell]
    if pd.isna(predicted):
        return str(cell)
    return f"{cell}\npredicted: {predicted}"


def _as_display(image) -> np.ndarray:
    """One image (channels, H, W) as float channels-last in [0, 1] ((H, W) for grey)."""
    image = np.asarray(image)
    if image.dtype.kind in "ui":
        image = image.astype(np.float32) / 255.0
    image = np.clip(image.astype(np.float32, copy=False), 0.0, 1.0)
    return image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)


def upsample(heat: np.ndarray, patch: int) -> np.ndarray:
    """Per-pixel heat map: each patch value repeated ``patch`` times along both axes."""
    return np.repeat(np.repeat(np.asarray(heat, dtype=np.float32), patch, axis=0), patch, axis=1)


def _draw_cell(ax, image, heat, patch, alpha, cmap, title):
    pixels = _as_display(image)
    height, width = pixels.shape[:2]
    # Both layers span the same pixels: if the model saw a resized image (grid x patch
    # pixels per side), its heat map is stretched over the stored one.
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    grey = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if pixels.ndim == 2 else {}
    ax.imshow(pixels, interpolation="nearest", extent=extent, gid="image", **grey)
    overlay = ax.imshow(
        upsample(heat, patch), cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha,
        interpolation="nearest", extent=extent, gid="heatmap",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return overlay


def _positive_int(value, name: str) -> int:
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")
    return int(value)
