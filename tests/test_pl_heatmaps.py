"""pl.heatmaps on a hand-made MuData following the image data contract (real BCCD images).

Legibility (layout, colour scale, titles, the attribution) is tested in
test_pl_heatmaps_legible.py on synthetic images.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scanpy as sc  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mudata import MuData  # noqa: E402

import mmdyn_sc as ms  # noqa: E402
from mmdyn_sc.pl._heatmaps import heatmaps  # noqa: E402

KEY = "mmdyn"
SIZE, PATCH, GRID = 64, 8, 8
PER_LABEL = 2
LABELS = ["Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]


def heatmaps_fn():
    """The exported function once pl/__init__ lists it, else the module's."""
    return getattr(ms.pl, "heatmaps", heatmaps)


def blob(n: int) -> np.ndarray:
    """A centred blob per cell in [0, 1], brighter to the right (orientation shows), scaled
    differently per cell."""
    yy, xx = np.mgrid[:GRID, :GRID]
    centre = (GRID - 1) / 2
    base = np.exp(-((yy - centre) ** 2 + (xx - centre) ** 2) / 6.0) * (0.5 + xx / (2 * GRID))
    scale = np.linspace(0.4, 1.0, n)[:, None, None]
    return (base[None] * scale).astype(np.float32)


@pytest.fixture(scope="module")
def real_images(bccd_root) -> tuple[np.ndarray, pd.DataFrame]:
    from skimage import io
    from skimage.transform import resize

    folder = bccd_root
    index = pd.read_csv(folder / "index.csv")
    index = index[index["label"].isin(LABELS)].groupby("label").head(PER_LABEL)
    images = []
    for path in index["path"]:
        image = io.imread(folder / path)[..., :3]
        small = resize(image, (SIZE, SIZE), anti_aliasing=True)  # float in [0, 1]
        images.append(np.moveaxis(np.rint(small * 255).astype(np.uint8), -1, 0))
    obs = pd.DataFrame(
        {"label": pd.Categorical(index["label"].to_numpy(), categories=LABELS)},
        index=[p.split("/")[-1].removesuffix(".jpg") for p in index["path"]],
    )
    return np.stack(images), obs


def make_mdata(images: np.ndarray, obs: pd.DataFrame, *, heatmap: bool = True) -> MuData:
    """An image modality (all real images) and an rna modality with 3 more cells."""
    n = len(obs)
    image = ad.AnnData(X=np.zeros((n, 0), dtype=np.float32), obs=obs.copy(),
                       obsm={"image": images})
    if heatmap:
        image.obsm[f"{KEY}_heatmap"] = blob(n)
    extra = [f"rna_only_{i}" for i in range(3)]
    rng = np.random.default_rng(0)
    rna = ad.AnnData(
        X=rng.poisson(1.0, size=(n + 3, 5)).astype(np.float32),
        obs=pd.DataFrame(index=list(obs.index) + extra),
    )
    mdata = MuData({"rna": rna, "image": image})
    labels = pd.concat([obs["label"].astype(str),
                        pd.Series("Neutrophil", index=extra)]).reindex(mdata.obs_names)
    mdata.obs["label"] = pd.Categorical(labels, categories=LABELS)
    # a made-up prediction: every cell predicted as the next label
    shifted = {a: b for a, b in zip(LABELS, LABELS[1:] + LABELS[:1], strict=True)}
    mdata.obs[f"{KEY}_prediction"] = pd.Categorical(labels.map(shifted), categories=LABELS)
    mdata.uns[KEY] = {
        "classes": LABELS,
        "images": {"image": {"obsm_key": "image", "patch_size": PATCH, "grid_size": GRID,
                             "image_size": SIZE, "channels": int(images.shape[1]),
                             "heatmap": heatmap}},
    }
    return mdata


@pytest.fixture
def mdata(real_images) -> MuData:
    return make_mdata(*real_images)


#: Plots return their Axes (scanpy's autoshow off) and every figure is closed after a test.
pytestmark = pytest.mark.usefixtures("plotting")


def image_axes(fig: Figure) -> list[Axes]:
    """The panels showing a cell's image (side by side, the heat map is on the next Axes)."""
    return [a for a in fig.axes if any(im.get_gid() == "image" for im in a.images)]


def pairs(axes: list[Axes]) -> list[tuple[Axes, Axes]]:
    """Side by side: the returned Axes as (image panel, heat-map panel) per cell."""
    assert len(axes) % 2 == 0
    return list(zip(axes[::2], axes[1::2], strict=True))


def layers(ax: Axes, heat_ax: Axes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image, heat map) arrays drawn on ``ax`` (overlay) or on ``ax`` and ``heat_ax``."""
    image = next(im for im in ax.images if im.get_gid() == "image")
    heat = next(im for im in (heat_ax or ax).images if im.get_gid() == "heatmap")
    return np.asarray(image.get_array()), np.asarray(heat.get_array())


def cell_of(ax: Axes) -> str:
    """The cell a panel drawn with titles="name" shows (the title's first line)."""
    return ax.get_title().split("\n")[0]


def nearest_upsampled(heat: np.ndarray) -> np.ndarray:
    return np.kron(heat, np.ones((PATCH, PATCH), dtype=heat.dtype))


def test_fixture_follows_the_contract(mdata):
    image = mdata["image"]
    assert image.n_obs == len(LABELS) * PER_LABEL < mdata.n_obs
    assert image.obsm["image"].shape == (image.n_obs, 3, SIZE, SIZE)
    assert image.obsm["image"].dtype == np.uint8
    assert image.obsm[f"{KEY}_heatmap"].shape == (image.n_obs, GRID, GRID)
    assert set(image.obs_names) < set(mdata.obs_names)


def test_cells_panels_side_by_side_and_colorbar(mdata):
    names = list(mdata["image"].obs_names)
    cells = [names[3], names[0], names[5]]
    fig = heatmaps_fn()(mdata, cells=cells, return_fig=True)
    assert isinstance(fig, Figure)
    assert len(image_axes(fig)) == 3
    axes = [a for a in fig.axes if a.images]
    assert len(axes) == 6  # image and heat map, side by side
    images = mdata["image"].obsm["image"]
    heat = mdata["image"].obsm[f"{KEY}_heatmap"]
    drawn = heat[[names.index(c) for c in cells]]
    prediction = mdata.obs[f"{KEY}_prediction"]
    for (ax, heat_ax), cell in zip(pairs(axes), cells, strict=True):
        i = names.index(cell)
        drawn_image, drawn_heat = layers(ax, heat_ax)
        np.testing.assert_allclose(drawn_image, np.moveaxis(images[i], 0, -1) / 255.0,
                                   atol=1e-6)
        assert drawn_heat.shape == (SIZE, SIZE)
        np.testing.assert_array_equal(drawn_heat, nearest_upsampled(heat[i]))
        assert [im.get_gid() for im in ax.images] == ["image"]
        shown = next(im for im in heat_ax.images if im.get_gid() == "heatmap")
        assert shown.get_alpha() is None
        # the colour scale is the range of the drawn gates
        assert shown.norm.vmin == pytest.approx(drawn.min())
        assert shown.norm.vmax == pytest.approx(drawn.max())
        assert shown.get_cmap().name == "magma"
        assert ax.get_title() == f"pred: {prediction[cell]}"  # short: no file name
    # one colour bar for the whole figure, over the drawn range, labelled
    colorbars = [a for a in fig.axes if a.get_xlabel() == "patch gate"]
    assert len(colorbars) == 1
    assert colorbars[0].get_xlim() == pytest.approx((drawn.min(), drawn.max()))
    solids = colorbars[0]._colorbar.solids  # the colour scale itself, opaque
    assert solids.get_cmap().name == "magma" and solids.get_alpha() in (None, 1.0)
    assert len(fig.axes) == 7


def test_cells_overlay(mdata):
    names = list(mdata["image"].obs_names)
    cells = [names[3], names[0], names[5]]
    fig = heatmaps_fn()(mdata, cells=cells, overlay=True, titles="name", return_fig=True)
    axes = image_axes(fig)
    assert len(axes) == 3
    images = mdata["image"].obsm["image"]
    heat = mdata["image"].obsm[f"{KEY}_heatmap"]
    prediction = mdata.obs[f"{KEY}_prediction"]
    for ax, cell in zip(axes, cells, strict=True):
        i = names.index(cell)
        drawn_image, drawn_heat = layers(ax)
        np.testing.assert_allclose(drawn_image, np.moveaxis(images[i], 0, -1) / 255.0,
                                   atol=1e-6)
        np.testing.assert_array_equal(drawn_heat, nearest_upsampled(heat[i]))
        overlay = next(im for im in ax.images if im.get_gid() == "heatmap")
        assert overlay.get_alpha() == 0.5
        assert ax.get_title() == f"{cell}\npred: {prediction[cell]}"
    colorbars = [a for a in fig.axes if a.get_xlabel() == "patch gate"]
    assert len(colorbars) == 1
    assert colorbars[0]._colorbar.solids.get_alpha() in (None, 1.0)
    assert len(fig.axes) == 4


def test_default_choice_and_ncols(mdata):
    n_image = mdata["image"].n_obs
    axes = heatmaps_fn()(mdata, n_per_group=1, ncols=2, titles="name")
    assert isinstance(axes, list) and len(axes) == 8
    assert [cell_of(ax) for ax, _ in pairs(axes)] == list(mdata["image"].obs_names[:4])
    rows = {round(ax.get_position().y0, 3) for ax in axes}
    assert len(rows) == 2
    # more than the modality holds: all of its cells
    fig = heatmaps_fn()(mdata, n_per_group=5, return_fig=True)
    assert len(image_axes(fig)) == n_image


def group_labels(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.texts if t.get_gid() == "group_label"]


def test_groupby_rows(mdata):
    groupby = f"{KEY}_prediction"
    fig = heatmaps_fn()(mdata, groupby=groupby, n_per_group=1, seed=3, titles="name",
                        return_fig=True)
    axes = image_axes(fig)
    assert len(axes) == len(LABELS)
    row_labels = group_labels(fig)
    assert row_labels == LABELS  # category order
    assert [t.get_text() for t in fig.texts if t.get_gid() == "group_header"] == [groupby]
    predicted = mdata.obs[groupby]
    for ax, label in zip(axes, row_labels, strict=True):
        cell = cell_of(ax)
        assert cell in mdata["image"].obs_names
        assert predicted[cell] == label

    # more per group than a group holds: all its imaged cells, in modality order
    fig = heatmaps_fn()(mdata, groupby="label", n_per_group=3, titles="name",
                        return_fig=True)
    axes = image_axes(fig)
    assert len(axes) == len(LABELS) * PER_LABEL
    names = list(mdata["image"].obs_names)
    by_row: dict[str, list[str]] = {}
    for ax in axes:
        label = mdata.obs["label"][cell_of(ax)]
        by_row.setdefault(label, []).append(cell_of(ax))
        # groupby="label" gives the true labels of the titles
        assert ax.get_title().split("\n")[1] == f"true: {label}"
    for label, cells in by_row.items():
        expected = [c for c in names if mdata["image"].obs["label"][c] == label]
        assert cells == expected
    # the 3 rna-only cells (Neutrophil) have no image and are never drawn
    assert not any(cell_of(ax).startswith("rna_only") for ax in axes)


def test_groupby_seeded_choice(mdata):
    def chosen(seed):
        axes = heatmaps_fn()(mdata, groupby="label", n_per_group=1, seed=seed, titles="name")
        return [cell_of(ax) for ax, _ in pairs(axes)]

    assert chosen(1) == chosen(1)
    assert len({tuple(chosen(s)) for s in range(6)}) > 1


def test_single_channel_float_images(real_images):
    images, obs = real_images
    grey = (images.astype(np.float32).mean(axis=1, keepdims=True) / 255.0).astype(np.float32)
    mdata = make_mdata(grey, obs)
    cell = mdata["image"].obs_names[2]
    ax = heatmaps_fn()(mdata, cells=cell, overlay=True, alpha=0.3, cmap="viridis")
    assert isinstance(ax, Axes)
    drawn_image, drawn_heat = layers(ax)
    assert drawn_image.shape == (SIZE, SIZE)
    np.testing.assert_allclose(drawn_image, grey[2, 0])
    base = next(im for im in ax.images if im.get_gid() == "image")
    assert base.get_cmap().name == "gray"
    np.testing.assert_array_equal(
        drawn_heat, nearest_upsampled(mdata["image"].obsm[f"{KEY}_heatmap"][2]))
    # side by side
    image_ax, heat_ax = heatmaps_fn()(mdata, cells=cell, cmap="viridis")
    drawn_image, drawn_heat = layers(image_ax, heat_ax)
    np.testing.assert_allclose(drawn_image, grey[2, 0])
    np.testing.assert_array_equal(
        drawn_heat, nearest_upsampled(mdata["image"].obsm[f"{KEY}_heatmap"][2]))


def test_ax_show_return_fig(mdata, monkeypatch):
    cell = mdata["image"].obs_names[0]
    fig, ax = plt.subplots()
    plot = heatmaps_fn()
    assert plot(mdata, cells=[cell], ax=ax, overlay=True) is ax
    assert plot(mdata, cells=[cell], ax=ax, overlay=True, return_fig=True) is fig
    assert isinstance(plot(mdata, cells=[cell], overlay=True), Axes)
    # side by side: the given Axes is split in two, both returned
    panels = plot(mdata, cells=[cell], ax=ax)
    assert len(panels) == 2 and all(p in ax.child_axes for p in panels)
    assert plot(mdata, cells=[cell], ax=ax, return_fig=True) is fig
    axes = plot(mdata, cells=[cell])
    assert isinstance(axes, list) and len(axes) == 2
    assert all(isinstance(a, Axes) for a in axes)
    assert isinstance(plot(mdata, cells=[cell], return_fig=True), Figure)
    shown: list = []
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: shown.append(1))
    assert plot(mdata, cells=[cell], show=True) is None
    assert len(shown) == 1
    sc.settings.autoshow = True  # scanpy's default: show=None shows, returns nothing
    assert plot(mdata, cells=[cell]) is None
    assert plot(mdata, cells=[cell], ax=ax, overlay=True) is None
    assert len(shown) == 3
    assert isinstance(plot(mdata, cells=[cell], return_fig=True), Figure)
    assert plot(mdata, cells=[cell], ax=ax, overlay=True, show=False) is ax
    assert len(shown) == 3
    with pytest.raises(ValueError, match="single cell but 2"):
        plot(mdata, cells=list(mdata["image"].obs_names[:2]), ax=ax)


def test_errors(mdata, real_images):
    plot = heatmaps_fn()
    names = list(mdata["image"].obs_names)
    with pytest.raises(KeyError, match=r"uns\['other'\] not found.*mmdyn_sc\.tl\.fit"):
        plot(mdata, key="other")
    no_fi = make_mdata(*real_images, heatmap=False)
    with pytest.raises(KeyError, match=r"obsm\['mmdyn_heatmap'\] not found.*no patch gate"
                                       r".*feature_informativeness=True"):
        plot(no_fi)
    stale = mdata.copy()  # refitted without FI under the same key: the old heat map is stale
    stale.uns[KEY]["images"]["image"]["heatmap"] = False
    with pytest.raises(KeyError, match="no patch gate"):
        plot(stale)
    with pytest.raises(KeyError, match="Modality 'images' not in mdata.mod"):
        plot(mdata, "images")
    with pytest.raises(KeyError, match=r"'rna' is not an image modality.*\['image'\]"):
        plot(mdata, "rna")
    with pytest.raises(KeyError, match=r"2 cell\(s\) not in the image modality.*'rna_only_0'"
                                       r".*'nope'.*may have no image.*1 of them"):
        plot(mdata, cells=[names[0], "rna_only_0", "nope"])
    with pytest.raises(ValueError, match="cells or groupby, not both"):
        plot(mdata, cells=names[:2], groupby="label")
    with pytest.raises(KeyError, match=r"obs\['nope'\] not found"):
        plot(mdata, groupby="nope")
    with pytest.raises(ValueError, match="alpha"):
        plot(mdata, alpha=1.5)
    with pytest.raises(ValueError, match="n_per_group"):
        plot(mdata, n_per_group=0)


def test_modality_choice(mdata):
    two = mdata.copy()
    two.uns[KEY]["images"]["image2"] = dict(two.uns[KEY]["images"]["image"])
    with pytest.raises(ValueError, match=r"several image modalities \(\['image', 'image2'\]\)"):
        heatmaps_fn()(two)
    assert len(heatmaps_fn()(two, "image", cells=[two["image"].obs_names[0]])) == 2
    none = mdata.copy()
    none.uns[KEY]["images"] = {}
    with pytest.raises(KeyError, match="records no image modality"):
        heatmaps_fn()(none)


def test_read_back_from_h5mu(mdata, tmp_path):
    import mudata

    path = tmp_path / "fit.h5mu"
    mdata.write(path)
    back = mudata.read_h5mu(path)
    cells = list(back["image"].obs_names[:2])
    axes = heatmaps_fn()(back, cells=cells)
    for (ax, heat_ax), i in zip(pairs(axes), range(2), strict=True):
        np.testing.assert_array_equal(
            layers(ax, heat_ax)[1],
            nearest_upsampled(mdata["image"].obsm[f"{KEY}_heatmap"][i]))
