"""pl.heatmaps draws what is stored, legibly: side-by-side panels, a stretched colour scale,
short titles that never overlap, and the patch attribution next to the patch gate.

A hand-made MuData (synthetic images, no real data needed) following the image data
contract: ``uns[key]["images"][mod]`` records the images' ``obsm_key``, the ``patch_size``
and whether the fit wrote the gate (``heatmap``) and the attribution (``attribution``).
"""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mudata import MuData  # noqa: E402

import mmdyn_sc as ms  # noqa: E402
from mmdyn_sc._keys import Key  # noqa: E402

KEY = "mmdyn"
SIZE, PATCH, GRID = 64, 8, 8
PER_GROUP = 4
GROUPS = ["Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
GATE_NAME, ATTRIBUTION_NAME = Key.obsm.heatmap(KEY), Key.obsm.image_attribution(KEY)
#: Long, file-like cell names, as in the BCCD data set.
NAMES = [f"BloodImage_{i:05d}_{i % 3 + 1}" for i in range(len(GROUPS) * PER_GROUP)]

pytestmark = pytest.mark.usefixtures("plotting")


def synthetic_images(n: int, rng) -> np.ndarray:
    """Pale RGB images, uint8 (cells, 3, SIZE, SIZE), each with a dark disc somewhere."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(20, 44, size=2)
        disc = np.hypot(yy - cy, xx - cx) < rng.uniform(9, 16)
        for channel, (background, inside) in enumerate([(220, 150), (205, 60), (215, 190)]):
            noise = rng.normal(0, 6, size=(SIZE, SIZE))
            images[i, channel] = np.clip(np.where(disc, inside, background) + noise, 0, 255)
    return images


def make_mdata(*, attribution_flag: bool | None = True, with_attribution: bool = True,
               groups: list[str] = GROUPS) -> MuData:
    n = len(NAMES)
    rng = np.random.default_rng(7)
    labels = pd.Categorical([groups[i % len(groups)] for i in range(n)], categories=groups)
    obs = pd.DataFrame({"label": labels}, index=NAMES)
    gate = rng.uniform(0.40, 0.50, size=(n, GRID, GRID)).astype(np.float32)
    image = ad.AnnData(X=np.zeros((n, 0), dtype=np.float32), obs=obs,
                       obsm={"image": synthetic_images(n, rng), GATE_NAME: gate})
    if with_attribution:
        image.obsm[ATTRIBUTION_NAME] = rng.normal(0, 0.05, size=(n, GRID, GRID)).astype(
            np.float32)
    mdata = MuData({"image": image})
    mdata.obs["label"] = labels
    shifted = dict(zip(groups, groups[1:] + groups[:1], strict=True))
    mdata.obs[Key.obs.prediction(KEY)] = pd.Categorical(
        [shifted[g] for g in labels], categories=groups)
    record = {"obsm_key": "image", "patch_size": PATCH, "heatmap": True}
    if attribution_flag is not None:
        record["attribution"] = attribution_flag
    mdata.uns[KEY] = {"classes": groups, "images": {"image": record}}
    return mdata


@pytest.fixture
def mdata() -> MuData:
    return make_mdata()


# ------------------------------------------------------------------------------ helpers


def by_gid(ax: Axes, gid: str):
    return next(im for im in ax.images if im.get_gid() == gid)


def cell_pairs(axes: list[Axes]) -> list[tuple[Axes, Axes]]:
    """The returned side-by-side Axes as (image panel, heat-map panel) per cell."""
    assert len(axes) % 2 == 0
    pairs = list(zip(axes[::2], axes[1::2], strict=True))
    for image_ax, heat_ax in pairs:
        assert [im.get_gid() for im in image_ax.images] == ["image"]
        assert [im.get_gid() for im in heat_ax.images] == ["heatmap"]
    return pairs


def heat_panels(fig: Figure) -> list[Axes]:
    return [a for a in fig.axes if any(im.get_gid() == "heatmap" for im in a.images)]


def colorbar_axes(fig: Figure, label: str) -> list[Axes]:
    return [a for a in fig.axes if label in (a.get_xlabel(), a.get_ylabel())]


def upsampled(heat: np.ndarray) -> np.ndarray:
    return np.kron(heat, np.ones((PATCH, PATCH), dtype=heat.dtype))


def position_of(mdata: MuData, image_ax: Axes) -> int:
    """Which stored image a panel shows (the synthetic images are all different)."""
    drawn = np.asarray(by_gid(image_ax, "image").get_array())
    stored = mdata["image"].obsm["image"].astype(np.float32) / 255.0
    matches = [i for i in range(len(stored))
               if np.allclose(np.moveaxis(stored[i], 0, -1), drawn, atol=1e-6)]
    assert len(matches) == 1
    return matches[0]


def texts_to_check(fig: Figure) -> list:
    titles = [a.title for a in fig.axes if a.title.get_text()]
    labels = [t for t in fig.texts if t.get_gid() in ("group_label", "group_header")]
    return titles + labels


def assert_no_overlap(fig: Figure) -> None:
    """No two titles / group labels overlap, and no title covers another cell's panel."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = texts_to_check(fig)
    assert texts
    boxes = [t.get_window_extent(renderer) for t in texts]
    for (a, box_a), (b, box_b) in itertools.combinations(zip(texts, boxes, strict=True), 2):
        assert not box_a.overlaps(box_b), (a.get_text(), b.get_text())
    panels = [a for a in fig.axes if a.images]
    for text, box in zip(texts, boxes, strict=True):
        assert text.get_fontsize() >= 7
        for panel in panels:
            assert not box.overlaps(panel.get_window_extent(renderer)), text.get_text()


# ---------------------------------------------------------------------------- contents


@pytest.mark.parametrize("values", ["gate", "attribution"])
def test_side_by_side_panels_hold_the_stored_arrays(mdata, values):
    cells = [NAMES[5], NAMES[0], NAMES[11]]
    axes = ms.pl.heatmaps(mdata, cells=cells, values=values)
    assert isinstance(axes, list) and len(axes) == 2 * len(cells)
    stored_images = mdata["image"].obsm["image"]
    stored = mdata["image"].obsm[GATE_NAME if values == "gate" else ATTRIBUTION_NAME]
    for (image_ax, heat_ax), cell in zip(cell_pairs(axes), cells, strict=True):
        i = NAMES.index(cell)
        np.testing.assert_allclose(by_gid(image_ax, "image").get_array(),
                                   np.moveaxis(stored_images[i], 0, -1) / 255.0, atol=1e-6)
        heat = by_gid(heat_ax, "heatmap")
        np.testing.assert_array_equal(heat.get_array(), upsampled(stored[i]))
        assert heat.get_alpha() is None  # no blending side by side
        # the heat map spans the image's pixels
        assert heat.get_extent() == by_gid(image_ax, "image").get_extent()
        assert heat_ax is not image_ax


def test_default_scale_is_the_range_of_the_drawn_gates(mdata):
    cells = NAMES[:3]
    # an extreme gate in a cell that is not drawn must not change the scale
    mdata["image"].obsm[GATE_NAME][10, 0, 0] = 0.99
    fig = ms.pl.heatmaps(mdata, cells=cells, return_fig=True)
    drawn = mdata["image"].obsm[GATE_NAME][:3]
    for ax in heat_panels(fig):
        norm = by_gid(ax, "heatmap").norm
        assert norm.vmin == pytest.approx(drawn.min())
        assert norm.vmax == pytest.approx(drawn.max())
        assert by_gid(ax, "heatmap").get_cmap().name == "magma"
        # contrast stretched: gates between 0.40 and 0.50 span the whole colour map
        assert norm(drawn.min()) == pytest.approx(0.0)
        assert norm(drawn.max()) == pytest.approx(1.0)
        assert norm.vmax - norm.vmin < 0.11
    (colorbar,) = colorbar_axes(fig, "patch gate")
    assert colorbar.get_xlim() == pytest.approx((drawn.min(), drawn.max()))
    assert colorbar._colorbar.solids.get_cmap().name == "magma"


def test_default_scale_of_the_attribution_is_symmetric(mdata):
    cells = NAMES[:4]
    fig = ms.pl.heatmaps(mdata, cells=cells, values="attribution", return_fig=True)
    largest = np.percentile(np.abs(mdata["image"].obsm[ATTRIBUTION_NAME][:4]), 99)
    for ax in heat_panels(fig):
        image = by_gid(ax, "heatmap")
        assert (image.norm.vmin, image.norm.vmax) == pytest.approx((-largest, largest))
        assert image.norm(0.0) == pytest.approx(0.5)  # centred on 0
        assert image.get_cmap().name == "RdBu_r"
    assert len(colorbar_axes(fig, "patch attribution (log-probability)")) == 1
    assert not colorbar_axes(fig, "patch gate")


def test_explicit_vmin_vmax_and_cmap_are_honoured(mdata):
    fig = ms.pl.heatmaps(mdata, cells=NAMES[:2], vmin=0.0, vmax=1.0, cmap="viridis",
                         return_fig=True)
    for ax in heat_panels(fig):
        image = by_gid(ax, "heatmap")
        assert (image.norm.vmin, image.norm.vmax) == (0.0, 1.0)
        assert image.get_cmap().name == "viridis"
    fig = ms.pl.heatmaps(mdata, cells=NAMES[:2], values="attribution", vmax=0.5,
                         return_fig=True)
    largest = np.percentile(np.abs(mdata["image"].obsm[ATTRIBUTION_NAME][:2]), 99)
    norm = by_gid(heat_panels(fig)[0], "heatmap").norm
    assert (norm.vmin, norm.vmax) == pytest.approx((-largest, 0.5))
    fig = ms.pl.heatmaps(mdata, cells=NAMES[:2], vmin=0.3, return_fig=True)
    norm = by_gid(heat_panels(fig)[0], "heatmap").norm
    assert norm.vmin == 0.3
    assert norm.vmax == pytest.approx(mdata["image"].obsm[GATE_NAME][:2].max())
    with pytest.raises(ValueError, match="vmin must be below vmax"):
        ms.pl.heatmaps(mdata, cells=NAMES[:2], vmin=0.5, vmax=0.5)


def test_constant_values_get_a_scale(mdata):
    mdata["image"].obsm[GATE_NAME][:] = 0.45
    fig = ms.pl.heatmaps(mdata, cells=NAMES[:2], return_fig=True)
    norm = by_gid(heat_panels(fig)[0], "heatmap").norm
    assert norm.vmin < 0.45 < norm.vmax


# ------------------------------------------------------------------------------ titles


def test_short_titles(mdata):
    prediction = mdata.obs[Key.obs.prediction(KEY)]
    # cells=: only the prediction is known
    axes = ms.pl.heatmaps(mdata, cells=NAMES[:3])
    for image_ax, _ in cell_pairs(axes):
        cell = NAMES[position_of(mdata, image_ax)]
        assert image_ax.get_title() == f"pred: {prediction[cell]}"
        assert "BloodImage" not in image_ax.get_title()
    # label=: the true class too
    axes = ms.pl.heatmaps(mdata, cells=NAMES[:3], label="label")
    for image_ax, _ in cell_pairs(axes):
        cell = NAMES[position_of(mdata, image_ax)]
        assert image_ax.get_title() == (
            f"true: {mdata.obs['label'][cell]}\npred: {prediction[cell]}")
    # groupby is taken as the labels, unless it is the prediction; label=False: none
    for image_ax, _ in cell_pairs(ms.pl.heatmaps(mdata, groupby="label", n_per_group=1)):
        assert image_ax.get_title().startswith("true: ")
    for kwargs in ({"groupby": Key.obs.prediction(KEY)}, {"groupby": "label", "label": False}):
        for image_ax, _ in cell_pairs(ms.pl.heatmaps(mdata, n_per_group=1, **kwargs)):
            assert image_ax.get_title().startswith("pred: ")
    # names only when asked for
    axes = ms.pl.heatmaps(mdata, cells=NAMES[:2], titles="name")
    for image_ax, _ in cell_pairs(axes):
        cell = NAMES[position_of(mdata, image_ax)]
        assert image_ax.get_title() == f"{cell}\npred: {prediction[cell]}"
    # nothing known: the name
    del mdata.obs[Key.obs.prediction(KEY)]
    (image_ax, _), = cell_pairs(ms.pl.heatmaps(mdata, cells=NAMES[:1]))
    assert image_ax.get_title() == NAMES[0]


def test_groupby_titles_and_labels_do_not_overlap(mdata):
    groups = GROUPS[:3]
    mdata = mdata[mdata.obs["label"].isin(groups)].copy()
    mdata.obs["label"] = mdata.obs["label"].cat.remove_unused_categories()
    fig = ms.pl.heatmaps(mdata, groupby="label", n_per_group=3, return_fig=True)
    assert len(heat_panels(fig)) == 9
    labels = [t for t in fig.texts if t.get_gid() == "group_label"]
    assert [t.get_text() for t in labels] == groups
    assert [t.get_text() for t in fig.texts if t.get_gid() == "group_header"] == ["label"]
    assert_no_overlap(fig)
    # each group label sits left of its row and level with it
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    image_axes = [a for a in fig.axes if any(im.get_gid() == "image" for im in a.images)]
    for row, label in enumerate(labels):
        first = image_axes[3 * row].get_window_extent(renderer)
        box = label.get_window_extent(renderer)
        assert box.x1 <= first.x0
        assert first.y0 <= (box.y0 + box.y1) / 2 <= first.y1


def test_cells_titles_do_not_overlap_and_fit_the_docs_width(mdata):
    fig = ms.pl.heatmaps(mdata, cells=NAMES[:8], label="label", return_fig=True)
    assert len(heat_panels(fig)) == 8
    width, _ = fig.get_size_inches()
    assert width <= 7.25  # 4 cells side by side (8 panels) at the docs' width
    assert_no_overlap(fig)
    # with the cells' names as well, the columns widen rather than overlap
    assert_no_overlap(ms.pl.heatmaps(mdata, cells=NAMES[:8], titles="name", return_fig=True))


def test_long_names_are_wrapped_without_overlap():
    groups = ["CD14+ classical monocytes of the peripheral blood",
              "Naive CD4+ T cells (CCR7+, SELL+)", "B", "Plasmacytoid dendritic cells"]
    mdata = make_mdata(groups=groups)
    fig = ms.pl.heatmaps(mdata, groupby="label", n_per_group=3, return_fig=True)
    assert_no_overlap(fig)
    assert any("\n" in t.get_text() for t in fig.texts if t.get_gid() == "group_label")
    fig = ms.pl.heatmaps(mdata, cells=NAMES[:8], label="label", overlay=True, return_fig=True)
    assert_no_overlap(fig)


# ----------------------------------------------------------------------- overlay, errors


def test_overlay_still_works(mdata):
    cells = NAMES[:5]
    fig = ms.pl.heatmaps(mdata, cells=cells, overlay=True, alpha=0.4, values="attribution",
                         return_fig=True)
    panels = heat_panels(fig)
    assert len(panels) == len(cells)
    stored = mdata["image"].obsm[ATTRIBUTION_NAME]
    for ax, cell in zip(panels, cells, strict=True):
        assert [im.get_gid() for im in ax.images] == ["image", "heatmap"]
        heat = by_gid(ax, "heatmap")
        assert heat.get_alpha() == 0.4
        np.testing.assert_array_equal(heat.get_array(), upsampled(stored[NAMES.index(cell)]))
    assert_no_overlap(fig)
    fig, ax = plt.subplots()
    assert ms.pl.heatmaps(mdata, cells=NAMES[0], overlay=True, ax=ax) is ax


def test_given_axes_side_by_side(mdata):
    fig, ax = plt.subplots()
    image_ax, heat_ax = ms.pl.heatmaps(mdata, cells=NAMES[2], ax=ax)
    assert not ax.axison and image_ax in ax.child_axes and heat_ax in ax.child_axes
    np.testing.assert_array_equal(by_gid(heat_ax, "heatmap").get_array(),
                                  upsampled(mdata["image"].obsm[GATE_NAME][2]))
    fig, pair = plt.subplots(1, 2)
    assert ms.pl.heatmaps(mdata, cells=[NAMES[2]], ax=pair) == list(pair)
    assert ms.pl.heatmaps(mdata, cells=[NAMES[2]], ax=pair, return_fig=True) is fig
    with pytest.raises(ValueError, match="pair of Axes"):
        ms.pl.heatmaps(mdata, cells=[NAMES[2]], ax=[pair[0]])


def test_missing_attribution_is_a_key_error():
    absent = make_mdata(with_attribution=False)
    with pytest.raises(KeyError, match=r"obsm\['mmdyn_attribution'\] not found.*"
                                       r"attribution=True"):
        ms.pl.heatmaps(absent, values="attribution")
    ms.pl.heatmaps(absent)  # the gate is still there
    stale = make_mdata(attribution_flag=False)  # present but not written by this fit
    with pytest.raises(KeyError, match=r"'attribution'\] is False.*stale.*attribution=True"):
        ms.pl.heatmaps(stale, values="attribution")
    unrecorded = make_mdata(attribution_flag=None)  # not recorded: the array is used
    assert len(ms.pl.heatmaps(unrecorded, cells=NAMES[:1], values="attribution")) == 2


def test_invalid_arguments(mdata):
    with pytest.raises(ValueError, match="values must be one of"):
        ms.pl.heatmaps(mdata, values="gates")
    with pytest.raises(ValueError, match="titles must be one of"):
        ms.pl.heatmaps(mdata, titles="long")
    with pytest.raises(KeyError, match=r"obs\['truth'\].*not found"):
        ms.pl.heatmaps(mdata, label="truth")


def test_attribution_is_drawn_only_for_cells_that_have_it():
    """The fit attributes at most attribution_cells cells per class (NaN for the others): the
    plot picks among cells with values, and names the cells asked for that have none."""
    mdata = make_mdata()
    values = mdata["image"].obsm[ATTRIBUTION_NAME]
    values[::2] = np.nan  # every other cell was not attributed
    fig = ms.pl.heatmaps(mdata, values="attribution", groupby="label", n_per_group=4,
                         return_fig=True)
    drawn = [np.asarray(by_gid(ax, "heatmap").get_array()) for ax in heat_panels(fig)]
    assert len(drawn) == len(NAMES) // 2 and all(np.isfinite(d).all() for d in drawn)
    axes = ms.pl.heatmaps(mdata, values="attribution", n_per_group=1)  # first cells with values
    assert all(np.isfinite(by_gid(heat_ax, "heatmap").get_array()).all()
               for _, heat_ax in cell_pairs(axes))
    with pytest.raises(ValueError, match=r"1 cell\(s\) have no patch attribution .*"
                                         r"attribution_cells"):
        ms.pl.heatmaps(mdata, values="attribution", cells=[NAMES[0], NAMES[1]])
    ms.pl.heatmaps(mdata, values="gate", cells=[NAMES[0]])  # the gate has every cell
