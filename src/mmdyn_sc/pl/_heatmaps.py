"""``pl.heatmaps``: cell images beside the patch gate or patch attribution of image MM dynamics."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.font_manager import FontProperties
from mudata import MuData

from .._data._images import IMAGE_KEY
from .._keys import DEFAULT_KEY, Key
from ._modality_confidence import group_labels
from ._utils import check_modality, doc_show_return_fig, finish, fit_record

#: Number of rows of cells drawn when neither ``cells`` nor ``groupby`` is given.
DEFAULT_ROWS = 4
#: Default number of cells per row with ``cells`` (scanpy's embedding plots use 4 too).
DEFAULT_NCOLS = 4
#: Default side of one panel, in inches: 4 cells side by side (8 panels) fit the ~7 inch
#: width of the documentation pages without being scaled down.
DEFAULT_PANEL_SIZE = 0.8

#: What each ``values`` reads (the name of the ``obsm`` entry), how the colour bar is
#: labelled, its default colour map, and how to produce the array when it is missing.
VALUES = {
    "gate": {
        "name": Key.obsm.heatmap,
        "flag": "heatmap",
        "label": "patch gate",
        "cmap": "magma",
        "missing": "the model had no patch gate. Run mmdyn_sc.tl.fit(..., key_added={key!r}) "
                   "with feature_informativeness=True (or mmdyn_sc.tl.predict with such a "
                   "model) to store the heat map",
    },
    "attribution": {
        "name": Key.obsm.image_attribution,
        "flag": "attribution",
        "label": "patch attribution (log-probability)",
        "cmap": "RdBu_r",
        "missing": "no patch attribution was stored. Run mmdyn_sc.tl.fit(..., "
                   "key_added={key!r}, attribution=True) or mmdyn_sc.tl.predict(..., "
                   "attribution=True) to store it",
    },
}
#: Percentile of the drawn absolute attributions that ends the default colour scale.
ATTRIBUTION_PERCENTILE = 99.0
#: Kept for callers of the gate's colour-bar label.
COLORBAR_LABEL = VALUES["gate"]["label"]
TITLE_OPTIONS = ("class", "name")

# Layout, in inches and points (fixed sizes: the figure grows with the number of cells).
TITLE_FONT = 7.0  # points; panel titles, colour-bar ticks and label
GROUP_FONT = 8.0  # points; group labels left of the rows
LINE = 1.25  # line height / font size
PAIR_GAP = 0.03  # between the image and its heat map
CELL_GAP = 0.12  # between two cells of a row
ROW_GAP = 0.08  # between a row's panels and the next row's titles
TITLE_PAD = 3.0  # points between a panel and its title
MARGIN = 0.08
GROUP_WRAP = 1.2  # group labels are wrapped to this width
GROUP_PAD = 0.1  # between the group labels and the first panel
TITLE_WRAP_MIN = 1.6  # titles are wrapped to max(cell width, this)
COLORBAR = {"gap": 0.12, "height": 0.09, "below": 0.42, "width": 2.6}


@doc_show_return_fig
def heatmaps(
    mdata: MuData,
    modality: str | None = None,
    *,
    key: str = DEFAULT_KEY,
    values: str = "gate",
    cells: str | Sequence[str] | None = None,
    groupby: str | None = None,
    label: str | bool | None = None,
    n_per_group: int = 3,
    seed: int = 0,
    overlay: bool = False,
    alpha: float = 0.5,
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    titles: str = "class",
    ncols: int | None = None,
    panel_size: float = DEFAULT_PANEL_SIZE,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Cell images beside the model's per-patch gate or attribution.

    The image branch of the model cuts every image into ``patch_size`` x ``patch_size``
    patches. Per imaged cell, the fit can store one value per patch (a grid_h x grid_w
    array), and this plot draws that grid next to the cell's image:

    - ``values="gate"``: the patch gate in [0, 1], the factor by which the model multiplied
      every pixel (all channels) of the patch (feature informativeness);
    - ``values="attribution"``: integrated gradients of the log probability of the cell's
      predicted class, summed over the pixels and channels of each patch (signed: positive
      patches are evidence for the predicted class, negative ones against it).

    By default (``overlay=False``) each cell is drawn as two panels side by side, its image
    and the heat map on its own axes (no blending), both spanning the same pixels: the
    grid is upsampled by repeating each value ``patch_size`` times along both axes
    (nearest; if the model saw a resized image, the heat map is stretched over the stored
    one). ``overlay=True`` draws the heat map over the image instead, one panel per cell,
    with opacity ``alpha``. One colour bar, below the panels, serves all of them: labelled
    ``"patch gate"`` or ``"patch attribution (log-probability)"``. The colour scale is, by
    default, stretched to the values drawn (the model's gates often all lie near 0.4-0.5,
    which a fixed 0..1 scale would show as one flat colour); compare colours between
    figures only with the same explicit ``vmin`` / ``vmax``.

    Each cell's title is short: its true class (``"true: X"``, when a label column is
    known, see ``label``) and its prediction (``"pred: Y"``); ``titles="name"`` puts the
    cell's name first. With ``groupby``, each row is labelled with its group, left of the
    row, and the column's name heads those labels. Titles and labels are wrapped and the
    columns widened so that no two overlap.

    Reads

    - ``mdata.uns[key]["images"][modality]``: ``obsm_key`` (where the images are),
      ``patch_size`` (pixels per patch side; default: image side // grid side) and the
      booleans ``heatmap`` (the fit wrote the patch gate; ``False`` means an array left
      under the name by an earlier fit is stale) and ``attribution`` (the fit wrote the
      patch attribution; ``False``: stale; absent: not recorded, the array is used if
      present), written by :func:`mmdyn_sc.tl.fit` / :func:`mmdyn_sc.tl.predict`;
    - ``mdata[modality].obsm[obsm_key]``: the images, (cells, channels, H, W), ``uint8``
      (0..255) or float in [0, 1], 3 channels (RGB) or 1 (drawn in grey);
    - ``values="gate"``: ``mdata[modality].obsm[f"{key}_heatmap"]``
      (``Key.obsm.heatmap(key)``), (cells, grid_h, grid_w) in [0, 1], written
      for a model with feature informativeness;
    - ``values="attribution"``: ``mdata[modality].obsm[f"{key}_attribution"]``
      (``Key.obsm.image_attribution(key)``), signed float
      (cells, grid_h, grid_w), written by :func:`mmdyn_sc.tl.fit` /
      :func:`mmdyn_sc.tl.predict` with ``attribution=True`` for at most
      ``attribution_cells`` cells per predicted class (NaN for the others; cells are
      then chosen among those with values);
    - ``mdata.obs[f"{key}_prediction"]`` if present (``"pred: Y"`` in the titles),
      ``mdata.obs[label]`` (``"true: X"``) and ``mdata.obs[groupby]``.

    Parameters
    ----------
    mdata
        MuData annotated by :func:`mmdyn_sc.tl.fit` or :func:`mmdyn_sc.tl.predict`.
    modality
        Image modality to draw. ``None``: the fit's only image modality (an error lists them
        when the fit has several).
    key
        The fit's ``key_added``.
    values
        What the heat map shows: ``"gate"`` (the patch gate) or ``"attribution"`` (the
        signed patch attribution of the predicted class); see above for where each is read.
    cells
        Names of the cells to draw (a name or a list), in that order. They must be cells of
        the image modality (cells of the MuData without an image are not in it) with values
        (a named error otherwise).
    groupby
        Column of ``mdata.obs`` (e.g. the labels, or the prediction
        ``f"{key}_prediction"``): one row per group, labelled with the group, of
        ``n_per_group`` cells with an image drawn at random (``seed``) from the group and
        shown in the modality's order. Groups without any imaged cell are left out.
        Exclusive with ``cells``. With neither ``cells`` nor ``groupby``, the first
        ``n_per_group * 4`` cells of the image modality with values are drawn.
    label
        Column of ``mdata.obs`` holding the true labels, shown as ``"true: X"`` in the
        titles. ``None``: ``groupby``, unless it is the prediction column or not given (then
        no true label is shown); ``False``: never show one.
    n_per_group
        Cells per group with ``groupby``; sets the default number of cells otherwise.
    seed
        Seed of the random choice of cells per group.
    overlay
        ``False`` (default): image and heat map side by side, two panels per cell.
        ``True``: the heat map drawn over the image with opacity ``alpha``, one panel per
        cell (this function's earlier layout).
    alpha
        Opacity of the heat map over the image with ``overlay=True`` (0: image only, 1: heat
        map only); not used side by side.
    cmap
        Colour map of the heat map. ``None``: ``"magma"`` (sequential) for the gate,
        ``"RdBu_r"`` (diverging, white at 0 with the default scale) for the attribution.
    vmin, vmax
        Ends of the colour scale, shared by all panels. ``None`` (each independently): the
        range of the values drawn, over the drawn cells only: their minimum and maximum gate
        for ``"gate"``; ``-m`` and ``+m`` with ``m`` the 99th percentile of the absolute
        attributions for ``"attribution"`` (a scale centred on 0; one cell's extreme patches
        do not wash out the others, larger values show in the end colours). A range of zero
        width is widened slightly.
    titles
        ``"class"`` (default): ``"true: X"`` and ``"pred: Y"``, whichever is known (the
        cell's name if neither is). ``"name"``: the cell's name, then those.
    ncols
        Cells per row with ``cells`` or the default choice (default: 4, fewer for fewer
        cells). Not used with ``groupby``: one row per group, ``n_per_group`` cells.
    panel_size
        Width and height of each panel (an image, or a heat map), in inches. The default
        fits 4 cells side by side (8 panels) in about 7 inches, the width of the
        documentation, with titles in 7 pt type; the figure's size follows from the number
        of panels, titles and group labels.
    ax
        Where to draw a single cell (e.g. ``cells=[name]``): with ``overlay=True`` an Axes;
        side by side, an Axes (split in two: the image left, the heat map right, on inset
        Axes; the given one is hidden) or a pair of Axes ``(image, heat map)``. The colour
        bar takes its space from the given Axes.
    {show_return_fig}

    Returns
    -------
    :class:`~matplotlib.axes.Axes`, list of Axes, :class:`~matplotlib.figure.Figure` or None
        Side by side (the default), the list of Axes, two per cell (image, then heat map),
        cell by cell, row by row. With ``overlay=True``, the Axes of the panel (one cell) or
        the list of Axes of the panels, row by row. With ``return_fig=True``, the Figure;
        ``None`` when the plot is shown.

    Raises
    ------
    KeyError
        Without a fit under ``key``, with a modality that is not an image modality of the
        fit, with cells that are not in the image modality, with an unknown ``groupby`` or
        ``label`` column, or without the array ``values`` asks for (gate: fit with
        ``feature_informativeness=True``; attribution: :func:`mmdyn_sc.tl.fit` /
        :func:`mmdyn_sc.tl.predict` with ``attribution=True``).
    ValueError
        With both ``cells`` and ``groupby``, with ``ax`` and more than one cell, with an
        unknown ``values`` or ``titles``, with ``vmin >= vmax``, or with invalid sizes.
    """
    if values not in VALUES:
        raise ValueError(f"values must be one of {list(VALUES)}, got {values!r}.")
    if titles not in TITLE_OPTIONS:
        raise ValueError(f"titles must be one of {list(TITLE_OPTIONS)}, got {titles!r}.")
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
    overlay = bool(overlay)

    adata = mdata.mod[modality]
    obsm_key = str(info.get("obsm_key", IMAGE_KEY))
    images = _image_array(adata, modality, obsm_key)
    heat = _values_array(adata, modality, key, values, info, images.shape)
    patch = _patch_size(info, images.shape, heat.shape)

    names = adata.obs_names
    # The patch attribution is computed for at most attribution_cells cells per class (NaN
    # for the others): cells are chosen among those with values.
    drawable = np.isfinite(heat).all(axis=(1, 2))
    if len(drawable) and not drawable.any():  # (an empty modality: its own error below)
        raise ValueError(f"mdata[{modality!r}] has no cell with {VALUES[values]['label']} "
                         "values (all NaN).")
    if groupby is not None:
        rows = _rows_by_group(mdata, names, groupby, key, n_per_group, seed, drawable)
        layout = [[names.get_loc(c) for c in chosen] for _, chosen in rows]
        row_labels = [str(group) for group, _ in rows]
    else:
        positions = _selected_positions(mdata, names, modality, cells, n_per_group, drawable,
                                        values)
        n_cols = min(ncols or DEFAULT_NCOLS, len(positions))
        layout = [positions[i : i + n_cols] for i in range(0, len(positions), n_cols)]
        row_labels = None
    n_cells = sum(len(row) for row in layout)
    if ax is not None and n_cells != 1:
        raise ValueError(
            f"ax draws a single cell but {n_cells} were selected; pass cells=[name] with "
            "ax, or leave ax=None for a figure with one panel per cell."
        )

    prediction_column = Key.obs.prediction(key)
    predictions = mdata.obs[prediction_column] if prediction_column in mdata.obs else None
    truth = _label_column(mdata, label, groupby, prediction_column)
    cell_titles = [
        [_title_lines(names[p], truth, predictions, titles) for p in row] for row in layout
    ]
    drawn_values = heat[[p for row in layout for p in row]]
    norm = _norm(drawn_values, values, vmin, vmax)
    cmap = cmap if cmap is not None else VALUES[values]["cmap"]

    if ax is None:
        fig, grid, cax, title_x, cell_titles = _figure(
            layout, cell_titles, row_labels, groupby, overlay, float(panel_size)
        )
        hosts = None
    else:
        fig, grid, hosts, title_x = _given_axes(ax, overlay)
        cax = None
    drawn: list[Axes] = []
    for row, row_panels, row_titles in zip(layout, grid, cell_titles, strict=True):
        for position, (image_ax, heat_ax), lines in zip(row, row_panels, row_titles,
                                                          strict=True):
            _draw_cell(image_ax, heat_ax, images[position], heat[position], patch, norm,
                       cmap, alpha)
            image_ax.set_title("\n".join(lines), x=title_x, ha="center",
                               fontsize=TITLE_FONT, pad=TITLE_PAD, parse_math=False,
                               gid="title")
            drawn.extend([image_ax] if heat_ax is None else [image_ax, heat_ax])
    if ax is not None and row_labels is not None:
        grid[0][0][0].set_ylabel(row_labels[0], fontsize=GROUP_FONT)

    # The colour bar shows the colour map itself, not its blend with the images (alpha).
    scale = ScalarMappable(norm=norm, cmap=cmap)
    if cax is not None:
        colorbar = fig.colorbar(scale, cax=cax, orientation="horizontal")
    else:
        colorbar = fig.colorbar(scale, ax=hosts, shrink=0.9)
    colorbar.set_label(VALUES[values]["label"], fontsize=TITLE_FONT)
    colorbar.ax.tick_params(labelsize=TITLE_FONT)
    result = drawn[0] if overlay and len(drawn) == 1 else drawn
    return finish(fig, result, show, return_fig)


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


def _values_array(adata, modality: str, key: str, values: str, info: dict,
                  image_shape: tuple) -> np.ndarray:
    """The per-patch array ``values`` names, (cells, grid_h, grid_w), or a clear error."""
    spec = VALUES[values]
    name = spec["name"](key)
    where = f"mdata[{modality!r}].obsm[{name!r}]"
    missing = spec["missing"].format(key=key)
    # The fit records whether it wrote the array (uns[key]["images"][modality][flag]):
    # False means an array left under the name by an earlier fit is stale; absent (older
    # fits, or the attribution before it was recorded) means the array is used if present.
    if name not in adata.obsm:
        raise KeyError(f"{where} not found: {missing}.")
    written = info.get(spec["flag"])
    if written is not None and not bool(written):
        raise KeyError(
            f"{where} was not written by the fit under key {key!r} "
            f"(mdata.uns[{key!r}]['images'][{modality!r}][{spec['flag']!r}] is False; the "
            f"array under that name is stale): {missing}."
        )
    heat = np.asarray(adata.obsm[name], dtype=np.float32)
    if heat.ndim != 3 or heat.shape[0] != image_shape[0]:
        raise ValueError(
            f"{where} has shape {heat.shape}; expected ({image_shape[0]}, grid_h, grid_w)."
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


def _selected_positions(mdata, names, modality, cells, n_per_group, drawable,
                        values) -> list[int]:
    """Positions of ``cells`` (default: the first cells with values) in the modality."""
    if cells is None:
        n = min(n_per_group * DEFAULT_ROWS, len(names))
        if n == 0:
            raise ValueError(f"mdata[{modality!r}] holds no cells.")
        return [int(p) for p in np.flatnonzero(drawable)[:n]]
    cells = [cells] if isinstance(cells, str) else list(cells)
    if not cells:
        raise ValueError("cells is empty.")
    _missing_cells(mdata, names, modality, cells)
    positions = [names.get_loc(c) for c in cells]
    lacking = [c for c, p in zip(cells, positions, strict=True) if not drawable[p]]
    if lacking:
        shown = ", ".join(map(repr, lacking[:5])) + (", ..." if len(lacking) > 5 else "")
        raise ValueError(
            f"{len(lacking)} cell(s) have no {VALUES[values]['label']} values ({shown}): the "
            "patch attribution is computed for at most attribution_cells cells per predicted "
            "class. Leave cells=None, raise attribution_cells, or store "
            "model.get_image_attribution(mdata) for every cell.")
    return positions


def _rows_by_group(mdata, names, groupby, key, n_per_group, seed, drawable) -> list[tuple]:
    """``(group, cells)`` for each group with imaged cells that have values.

    Cells are in the modality's order.
    """
    column, groups = group_labels(mdata, groupby, key)
    labels = column.reindex(names).to_numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for group in groups:
        members = np.flatnonzero((labels == group) & drawable)
        if not len(members):
            continue
        if len(members) > n_per_group:
            members = np.sort(rng.choice(members, size=n_per_group, replace=False))
        rows.append((group, [names[i] for i in members]))
    if not rows:
        raise ValueError(f"No cell of the image modality has a value in mdata.obs[{groupby!r}].")
    return rows


# ---------------------------------------------------------------------------- titles


def _label_column(mdata: MuData, label, groupby, prediction_column: str) -> pd.Series | None:
    """``mdata.obs[label]`` (the true labels shown in the titles), or ``None``."""
    if label is False:
        return None
    if label is None or label is True:
        if groupby is None or groupby == prediction_column:
            return None
        label = groupby
    if label not in mdata.obs.columns:
        raise KeyError(
            f"mdata.obs[{label!r}] (label=, the true labels) not found. Available columns: "
            f"{list(mdata.obs.columns)}."
        )
    return mdata.obs[label]


def _value_of(column: pd.Series | None, cell):
    if column is None or cell not in column.index:
        return None
    value = column.loc[cell]
    return None if pd.isna(value) else value


def _title_lines(cell, truth: pd.Series | None, predictions: pd.Series | None,
                 titles: str) -> list[str]:
    """The lines of one cell's title: its name (``titles="name"``), true and predicted class."""
    lines = [str(cell)] if titles == "name" else []
    true, predicted = _value_of(truth, cell), _value_of(predictions, cell)
    if true is not None:
        lines.append(f"true: {true}")
    if predicted is not None:
        lines.append(f"pred: {predicted}")
    return lines or [str(cell)]


@lru_cache(maxsize=1)
def _measuring_renderer():
    # Text is measured at 72 dpi (1 pixel = 1 point) whatever the backend of the figure.
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, 72)


def _width(text: str, size: float) -> float:
    """Width in inches of one line of ``text`` at ``size`` points (the default font)."""
    if not text:
        return 0.0
    width, _, _ = _measuring_renderer().get_text_width_height_descent(
        text, FontProperties(size=size), ismath=False
    )
    return width / 72.0


def _wrap(lines: list[str], width: float, size: float) -> list[str]:
    """``lines`` with each line longer than ``width`` inches broken between words."""
    wrapped = []
    for line in lines:
        if _width(line, size) <= width:
            wrapped.append(line)
            continue
        current = ""
        for word in line.split(" "):
            candidate = f"{current} {word}" if current else word
            if current and _width(candidate, size) > width:
                wrapped.append(current)
                current = word
            else:
                current = candidate
        wrapped.append(current)
    return wrapped


def _height(n_lines: int, size: float) -> float:
    """Height in inches of ``n_lines`` lines of text at ``size`` points (with some slack)."""
    return (n_lines * LINE * size + 2.0) / 72.0


# ---------------------------------------------------------------------------- drawing


def _figure(layout, cell_titles, row_labels, header, overlay: bool, panel: float):
    """A new figure with all panels placed at fixed sizes (inches) so that nothing overlaps.

    Returns the figure; per row, per cell, the pair ``(image Axes, heat-map Axes or None)``;
    the colour bar's Axes; where the titles are centred (in the image Axes' coordinates);
    and the titles, wrapped.
    """
    n_rows, n_cols = len(layout), max(len(row) for row in layout)
    unit = 2 * panel + PAIR_GAP if not overlay else panel  # width of one cell's panels
    wrap_to = max(unit, TITLE_WRAP_MIN)
    cell_titles = [[_wrap(lines, wrap_to, TITLE_FONT) for lines in row] for row in cell_titles]
    all_titles = [lines for row in cell_titles for lines in row]
    title_width = max(_width(line, TITLE_FONT) for lines in all_titles for line in lines)
    title_band = TITLE_PAD / 72.0 + _height(max(len(t) for t in all_titles), TITLE_FONT)
    column = max(unit, title_width) + CELL_GAP  # one cell's width, its titles included
    row_pitch = title_band + panel + ROW_GAP

    label_width, labels, label_heights = 0.0, None, []
    if row_labels is not None:
        labels = [_wrap([text], GROUP_WRAP, GROUP_FONT) for text in row_labels]
        label_heights = [_height(len(lines), GROUP_FONT) for lines in labels]
        label_width = max(
            [_width(line, GROUP_FONT) for lines in labels for line in lines]
            + [_width(str(header), TITLE_FONT)]
        ) + GROUP_PAD
        # a group label taller than its row pushes the rows apart
        row_pitch = max(row_pitch, max(label_heights) + ROW_GAP)
    panels_left = MARGIN + label_width
    panels_width = n_cols * column - CELL_GAP
    colorbar_width = min(COLORBAR["width"], max(panels_width, 1.6))
    bar_band = COLORBAR["gap"] + COLORBAR["height"] + COLORBAR["below"]
    # the first group label may reach above its row's panels: room for it and the header
    top_extra = 0.0
    if labels is not None:
        header_height = _height(1, TITLE_FONT) + 0.03
        reach = max(0.0, (label_heights[0] - panel) / 2) + header_height
        top_extra = max(0.0, reach - title_band)
    width = max(panels_left + panels_width, MARGIN + colorbar_width) + MARGIN
    height = MARGIN + top_extra + n_rows * row_pitch - ROW_GAP + bar_band + MARGIN
    fig = plt.figure(figsize=(width, height), layout="none")

    def box(left, bottom, w, h):
        return [left / width, bottom / height, w / width, h / height]

    grid = []
    for r, row in enumerate(layout):
        panel_top = height - MARGIN - top_extra - r * row_pitch - title_band
        panel_bottom = panel_top - panel
        row_panels = []
        for c in range(len(row)):
            left = panels_left + c * column + (column - CELL_GAP - unit) / 2
            image_ax = fig.add_axes(box(left, panel_bottom, panel, panel))
            heat_ax = None
            if not overlay:
                heat_ax = fig.add_axes(box(left + panel + PAIR_GAP, panel_bottom, panel, panel))
            row_panels.append((image_ax, heat_ax))
        grid.append(row_panels)
        if labels is not None:
            fig.text(
                (panels_left - GROUP_PAD) / width, (panel_bottom + panel / 2) / height,
                "\n".join(labels[r]), ha="right", va="center", fontsize=GROUP_FONT,
                parse_math=False, gid="group_label",
            )
            if r == 0:
                label_top = panel_bottom + panel / 2 + label_heights[0] / 2
                fig.text(
                    (panels_left - GROUP_PAD) / width,
                    (max(panel_top, label_top) + 0.03) / height, str(header), ha="right",
                    va="bottom", fontsize=TITLE_FONT, style="italic", parse_math=False,
                    gid="group_header",
                )
    bar_left = panels_left + (panels_width - colorbar_width) / 2
    if bar_left < MARGIN:
        bar_left = (width - colorbar_width) / 2
    cax = fig.add_axes(
        box(bar_left, MARGIN + COLORBAR["below"], colorbar_width, COLORBAR["height"])
    )
    return fig, grid, cax, (unit / 2) / panel, cell_titles


def _given_axes(ax, overlay: bool):
    """For a given ``ax``: figure, the cell's ``(image, heat map)`` Axes, colour-bar host.

    Also where the title is centred, in the image Axes' coordinates.
    """
    if overlay:
        if not isinstance(ax, Axes):
            raise ValueError("With overlay=True, ax must be a single Axes.")
        return ax.figure, [[(ax, None)]], [ax], 0.5
    if isinstance(ax, Axes):
        ax.set_axis_off()
        width = (1.0 - 0.03) / 2
        image_ax = ax.inset_axes([0.0, 0.0, width, 1.0])
        heat_ax = ax.inset_axes([1.0 - width, 0.0, width, 1.0])
        return ax.figure, [[(image_ax, heat_ax)]], [ax], 0.5 / width
    pair = list(ax)
    if len(pair) != 2 or not all(isinstance(a, Axes) for a in pair):
        raise ValueError(
            "Side by side, ax must be an Axes (split in two) or a pair of Axes "
            "(image, heat map)."
        )
    return pair[0].figure, [[(pair[0], pair[1])]], pair, 0.5


def _norm(drawn: np.ndarray, values: str, vmin, vmax) -> Normalize:
    """The colour scale: the given ends, else the range of the drawn values."""
    finite = drawn[np.isfinite(drawn)]
    if values == "attribution":
        # A robust end: one cell's extreme patches must not wash out every other panel.
        largest = float(np.percentile(np.abs(finite), ATTRIBUTION_PERCENTILE)) \
            if finite.size else 0.0
        low, high = -largest, largest
    else:
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    low = low if vmin is None else float(vmin)
    high = high if vmax is None else float(vmax)
    if vmin is not None and vmax is not None and not low < high:
        raise ValueError(f"vmin must be below vmax, got vmin={vmin}, vmax={vmax}.")
    if not low < high:
        if vmin is None and vmax is None:  # one value drawn: a scale of zero width
            spread = max(abs(low), abs(high)) * 0.05 or 1e-3
            low, high = low - spread, high + spread
        else:
            raise ValueError(
                f"vmin must be below vmax; got vmin={low}, vmax={high} "
                f"({'vmin' if vmin is not None else 'vmax'} given, the other from the data)."
            )
    return Normalize(vmin=low, vmax=high)


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


def _draw_cell(image_ax, heat_ax, image, heat, patch, norm, cmap, alpha) -> None:
    """The image on ``image_ax``; the heat map on ``heat_ax``, or over the image (alpha)."""
    pixels = _as_display(image)
    height, width = pixels.shape[:2]
    # Both layers span the same pixels: if the model saw a resized image (grid x patch
    # pixels per side), its heat map is stretched over the stored one.
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    grey = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if pixels.ndim == 2 else {}
    image_ax.imshow(pixels, interpolation="nearest", extent=extent, gid="image", **grey)
    on, blend = (image_ax, {"alpha": alpha}) if heat_ax is None else (heat_ax, {})
    on.imshow(upsample(heat, patch), cmap=cmap, norm=norm, interpolation="nearest",
              extent=extent, gid="heatmap", **blend)
    for panel in (image_ax, heat_ax):
        if panel is not None:
            panel.set_xticks([])
            panel.set_yticks([])


def _positive_int(value, name: str) -> int:
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")
    return int(value)
