"""Image modality: reading files, crops around nuclei, pairing by label, checks, torch pieces.

Real files (BCCD crops, the CellProfiler example image) where the test reads a real dataset;
conftest's synthetic images and CITE-seq elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import skimage.io
import torch

from mmdyn_sc import pp
from mmdyn_sc._data._images import check_image_modality
from mmdyn_sc.module import ImageEncoder, PatchUNet, as_float_images, random_flips
from mmdyn_sc.module._patch_unet import gate_pool_factor

CELLPROFILER = [f"AS_09125_050116030001_D03f00d{i}.tif" for i in range(3)]

#: Synthetic cell types -> synthetic image classes (conftest's synth and synth_images), as the
#: study paired CITE-seq cells with images by class; type_3 gets no image.
MAPPING = {"type_0": "class_0", "type_1": "class_1", "type_2": "class_1"}


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bccd_index(bccd_root) -> pd.DataFrame:
    index = pd.read_csv(bccd_root / "index.csv")
    index.index = [Path(p).stem for p in index["path"]]
    return index


@pytest.fixture(scope="module")
def bccd(bccd_root, bccd_index) -> ad.AnnData:
    """All 351 BCCD white-blood-cell crops, 3 x 64 x 64 uint8, labelled in obs["label"]."""
    return pp.images_from_files(bccd_index["path"], root=bccd_root, obs=bccd_index)


@pytest.fixture(scope="module")
def cellprofiler(dataset_path) -> tuple[np.ndarray, np.ndarray]:
    """(512, 512, 3) uint8 fluorescence image and nucleus centroids (Otsu on DNA, > 30 px)."""
    from skimage import filters, measure

    root = dataset_path("cellprofiler_examplehuman")
    image = np.stack([skimage.io.imread(root / f) for f in CELLPROFILER], axis=-1)
    dna = image[..., 0]
    labels = measure.label(dna > filters.threshold_otsu(dna))
    centroids = np.array([r.centroid for r in measure.regionprops(labels) if r.area > 30])
    return image, centroids


@pytest.fixture(scope="module")
def images64(make_synth_images) -> ad.AnnData:
    """24 synthetic 3 x 64 x 64 uint8 images (conftest.synthetic_images)."""
    return make_synth_images(n_per_class=6, size=64)


def _write(path: Path, image: np.ndarray) -> Path:
    skimage.io.imsave(path, image, check_contrast=False)
    return path


def _rgb(rows: int = 100, cols: int = 160, seed: int = 0) -> np.ndarray:
    """A random (rows, cols, 3) uint8 picture: smooth colour ramps and noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, cols)[None, :, None] * rng.uniform(60, 190, size=3)
    return (ramp + rng.integers(0, 60, size=(rows, cols, 3))).astype(np.uint8)


# --- images_from_files ---------------------------------------------------------------------


def test_images_from_files_reads_bccd(bccd, bccd_index):
    images = bccd.obsm["image"]
    assert images.shape == (351, 3, 64, 64) and images.dtype == np.uint8
    assert bccd.X.shape == (351, 0) and bccd.X.dtype == np.float32
    assert list(bccd.obs_names) == list(bccd_index.index)
    assert (bccd.obs["label"] == bccd_index["label"]).all()
    assert bccd.obs["image_path"].str.endswith(".jpg").all()
    assert bccd.uns["image"] == {
        "size": 64, "channels": 3, "dtype": "uint8", "source": "files", "obsm_key": "image",
        "background": "border",
    }
    assert 0 < images.mean() < 255 and images.std() > 10  # real pictures, not blank


def test_images_from_files_float32_default_names(bccd, bccd_root, bccd_index):
    paths = list(bccd_index["path"][:8])
    adata = pp.images_from_files(paths, root=bccd_root, dtype="float32", size=64, obsm_key="img")
    images = adata.obsm["img"]
    assert images.dtype == np.float32 and images.shape == (8, 3, 64, 64)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert list(adata.obs_names) == [Path(p).stem for p in paths]
    np.testing.assert_allclose(images * 255, bccd.obsm["image"][:8], atol=0.51)
    assert adata.uns["image"]["dtype"] == "float32"


def test_images_from_files_pads_to_square(tmp_path):
    wide = _rgb(100, 160)
    path = _write(tmp_path / "wide.png", wide)
    zero = pp.images_from_files([path], background="zero").obsm["image"][0]
    border = pp.images_from_files([path]).obsm["image"][0]
    # 100 x 160 is centred in 160 x 160: rows 0-29 and 130-159 are padding (0-11, 52-63 at 64 px)
    assert (zero[:, :10] == 0).all() and (zero[:, -10:] == 0).all()
    ring = np.concatenate([wide[0], wide[-1], wide[1:-1, 0], wide[1:-1, -1]])
    median = np.median(ring, axis=0).astype(np.uint8)
    assert np.abs(border[:, :10].astype(int) - median[:, None, None]).max() <= 1
    np.testing.assert_array_equal(zero[:, 20:44], border[:, 20:44])  # the image itself


def test_images_from_files_channel_conventions(tmp_path):
    rgb = _rgb(120, 90, seed=1)
    grey = _write(tmp_path / "grey.png", rgb[..., 0])
    rgba = _write(tmp_path / "rgba.png", np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]))
    plain = _write(tmp_path / "rgb.png", rgb)
    assert pp.images_from_files([grey, grey]).obsm["image"].shape == (2, 1, 64, 64)
    np.testing.assert_array_equal(
        pp.images_from_files([rgba]).obsm["image"], pp.images_from_files([plain]).obsm["image"]
    )
    with pytest.raises(ValueError, match=r"grey\.png.* 1 channel.*rgb\.png.* has 3"):
        pp.images_from_files([plain, rgba, grey])


def test_images_from_files_errors(tmp_path):
    (tmp_path / "images").mkdir()
    paths = [f"images/{i}.png" for i in range(3)]
    for i, path in enumerate(paths):
        _write(tmp_path / path, _rgb(40, 40, seed=i))
    paths.append("images/nope.jpg")
    with pytest.raises(FileNotFoundError, match=r"1 image file.*nope\.jpg"):
        pp.images_from_files(paths, root=tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Cannot read image file .*broken\.jpg"):
        pp.images_from_files([broken])
    with pytest.raises(ValueError, match="obs has 2 rows but there are 3 images"):
        pp.images_from_files(paths[:3], root=tmp_path, obs=pd.DataFrame(index=["a", "b"]))
    with pytest.raises(ValueError, match="dtype must be one of"):
        pp.images_from_files(paths[:3], root=tmp_path, dtype="float64")


# --- crops_from_image ----------------------------------------------------------------------


def test_crops_from_image_flags_border_cells(cellprofiler):
    image, centroids = cellprofiler
    assert len(centroids) > 250  # SOURCE.md: ~284 nuclei
    crops = pp.crops_from_image(image, centroids, size=64)
    stack = crops.obsm["image"]
    assert stack.shape == (len(centroids), 3, 64, 64) and stack.dtype == np.uint8
    assert crops.obs_names[0] == "crop_0" and crops.uns["image"]["source"] == "crops"
    rows, cols = np.rint(centroids).astype(int).T
    expected = (rows < 32) | (rows + 32 > 512) | (cols < 32) | (cols + 32 > 512)
    np.testing.assert_array_equal(crops.obs["crop_padded"], expected)
    assert 0 < expected.sum() < len(expected)
    for i in range(len(centroids)):
        np.testing.assert_array_equal(stack[i, :, 32, 32], image[rows[i], cols[i]])
    inner = np.flatnonzero(~expected)[0]
    r, c = rows[inner], cols[inner]
    np.testing.assert_array_equal(
        stack[inner], np.moveaxis(image[r - 32 : r + 32, c - 32 : c + 32], -1, 0)
    )
    edge = np.flatnonzero(rows < 32)[0]  # rows above the image are zeros
    assert (stack[edge, :, : 32 - rows[edge]] == 0).all()
    np.testing.assert_allclose(crops.obs["centroid_row"], centroids[:, 0])


def test_crops_from_image_float_and_errors(cellprofiler):
    image, centroids = cellprofiler
    crops = pp.crops_from_image(image[..., 0], centroids[:5], size=16, dtype="float32")
    assert crops.obsm["image"].shape == (5, 1, 16, 16)
    rows, cols = np.rint(centroids[:5]).astype(int).T
    np.testing.assert_allclose(crops.obsm["image"][:, 0, 8, 8], image[rows, cols, 0] / 255)
    with pytest.raises(ValueError, match="channels-first"):
        pp.crops_from_image(np.moveaxis(image, -1, 0), centroids)
    with pytest.raises(ValueError, match=r"outside the image \(512 x 512\).*\(row, col\)"):
        pp.crops_from_image(image, centroids + [0, 400])
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        pp.crops_from_image(image, np.zeros(10))


# --- pair_images_by_label ------------------------------------------------------------------


def test_pair_images_by_label(synth, synth_images):
    before = synth.copy()
    paired = pp.pair_images_by_label(synth, synth_images, MAPPING, seed=3)
    assert set(paired.mod) == {"rna", "prot", "image"}
    assert list(paired.obs_names) == list(synth.obs_names)  # every cell stays
    image = paired["image"]
    types = synth.obs["cell_type"].astype(str)
    expected = synth.obs_names[types.isin(list(MAPPING))]
    assert list(image.obs_names) == list(expected)
    assert "type_3" in set(types) and not types[image.obs_names].eq("type_3").any()
    assert (image.obs["image_label"].astype(str) == types[image.obs_names].map(MAPPING)).all()
    source = image.obs["image_index"].to_numpy()
    assert image.obsm["image"].dtype == np.uint8 and image.X.shape == (len(expected), 0)
    np.testing.assert_array_equal(image.obsm["image"], synth_images.obsm["image"][source])
    record = paired.uns["image_pairing"]
    assert record["seed"] == 3
    mapping = record["mapping"]  # two arrays: cell type names need not be valid h5mu keys
    assert dict(zip(mapping["cell_types"], mapping["image_classes"], strict=True)) == MAPPING
    np.testing.assert_array_equal(record["source_index"], source)
    assert list(record["source_name"]) == list(synth_images.obs_names[source])
    assert list(record["cells"]) == list(expected)
    # input untouched
    assert set(synth.mod) == {"rna", "prot"} and "image_pairing" not in synth.uns
    assert synth.obs.equals(before.obs) and synth.shape == before.shape


def test_pair_images_by_label_reuses_evenly_and_is_seeded(synth, synth_images):
    one = pp.pair_images_by_label(synth, synth_images, MAPPING, seed=0).uns["image_pairing"]
    again = pp.pair_images_by_label(synth, synth_images, MAPPING, seed=0).uns["image_pairing"]
    other = pp.pair_images_by_label(synth, synth_images, MAPPING, seed=1).uns["image_pairing"]
    np.testing.assert_array_equal(one["source_index"], again["source_index"])
    assert not np.array_equal(one["source_index"], other["source_index"])
    class_0_images = synth_images.obs["label"].to_numpy()[one["source_index"]] == "class_0"
    uses = np.bincount(one["source_index"][class_0_images], minlength=synth_images.n_obs)
    n_cells, n_images = class_0_images.sum(), (synth_images.obs["label"] == "class_0").sum()
    used = uses[uses > 0]
    assert len(used) == min(n_cells, n_images)  # every class_0 image drawn before any twice
    assert used.max() - used.min() <= 1


def test_pair_images_by_label_keeps_groups_apart(synth, synth_images):
    # images alternate between the two batches within each class: disjoint image sets
    rank = synth_images.obs.groupby("label").cumcount().to_numpy()
    image_groups = np.where(rank % 2 == 0, "a", "b")
    paired = pp.pair_images_by_label(
        synth, synth_images, MAPPING, cell_groups="batch", image_groups=image_groups
    )
    image = paired["image"]
    source = image.obs["image_index"].to_numpy()
    batch = synth.obs.loc[image.obs_names, "batch"].astype(str).to_numpy()
    np.testing.assert_array_equal(image_groups[source], batch)
    assert not set(source[batch == "a"]) & set(source[batch == "b"])
    assert paired.uns["image_pairing"]["grouped"]


def test_pair_images_by_label_errors(synth, synth_images):
    with pytest.raises(ValueError, match="Did you mean 'class_0'"):
        pp.pair_images_by_label(synth, synth_images, {"type_0": "class0"})
    with pytest.raises(KeyError, match="Did you mean 'cell_type'"):
        pp.pair_images_by_label(synth, synth_images, MAPPING, labels_key="celltype")
    with pytest.raises(ValueError, match="No cell has a type listed"):
        pp.pair_images_by_label(synth, synth_images, {"type_9": "class_0"})
    with pytest.warns(UserWarning, match="'type_9', which no cell has"):
        pp.pair_images_by_label(synth, synth_images, {**MAPPING, "type_9": "class_0"})
    with pytest.raises(ValueError, match="modality 'rna'"):
        pp.pair_images_by_label(synth, synth_images, MAPPING, modality="rna")
    with pytest.raises(ValueError, match="both cell_groups and image_groups"):
        pp.pair_images_by_label(synth, synth_images, MAPPING, cell_groups="batch")
    only_one = np.where(synth_images.obs["label"] == "class_0", "b", "a")
    with pytest.raises(ValueError, match="No image of class 'class_0' in image group 'a'"):
        pp.pair_images_by_label(
            synth, synth_images, MAPPING, cell_groups="batch", image_groups=only_one
        )


def test_paired_mudata_round_trips_h5mu(synth, synth_images, tmp_path):
    import mudata as md

    paired = pp.pair_images_by_label(synth, synth_images, MAPPING)
    paired.write(tmp_path / "paired.h5mu")
    back = md.read_h5mu(tmp_path / "paired.h5mu")
    np.testing.assert_array_equal(back["image"].obsm["image"], paired["image"].obsm["image"])
    assert back["image"].obsm["image"].dtype == np.uint8
    check_image_modality(back["image"], channels=3)


# --- check_image_modality ------------------------------------------------------------------


def _modality(images: np.ndarray, key: str = "image"):
    return SimpleNamespace(obsm={key: images}, n_obs=len(images))


def test_check_image_modality_accepts_stored_images(synth_images):
    assert check_image_modality(synth_images, channels=3) is synth_images.obsm["image"]
    check_image_modality(_modality(np.linspace(0, 1, 48, dtype=np.float32).reshape(1, 3, 4, 4)))
    check_image_modality(_modality(np.full((2, 1, 4, 4), 255, dtype=np.int64)))


def test_check_image_modality_errors(synth_images):
    with pytest.raises(KeyError, match=r"obsm\['imgae'\].*Did you mean 'image'"):
        check_image_modality(synth_images, "imgae")
    with pytest.raises(ValueError, match=r"shape \(5, 8, 8\) \(3-D\).*images\[:, None\]"):
        check_image_modality(_modality(np.zeros((5, 8, 8), np.uint8)))
    with pytest.raises(ValueError, match=r"has 1 channel.*expected 3"):
        check_image_modality(_modality(np.zeros((5, 1, 8, 8), np.uint8)), channels=3)
    with pytest.raises(ValueError, match="channels look last"):
        check_image_modality(_modality(np.zeros((5, 8, 8, 3), np.uint8)), channels=3)
    short = SimpleNamespace(obsm={"image": np.zeros((4, 3, 8, 8), np.uint8)}, n_obs=5)
    with pytest.raises(ValueError, match=r"holds 4 images .* 5 cells"):
        check_image_modality(short)
    with pytest.raises(TypeError, match="non-numeric dtype"):
        check_image_modality(_modality(np.full((2, 1, 2, 2), "a")))
    with pytest.raises(TypeError, match="boolean"):
        check_image_modality(_modality(np.zeros((2, 1, 2, 2), bool)))
    nan = np.zeros((2, 1, 2, 2), np.float32)
    nan[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        check_image_modality(_modality(nan))
    with pytest.raises(ValueError, match=r"values in \[0, 255\], outside \[0.0, 1.0\]"):
        check_image_modality(_modality(np.array([0, 255], np.float32).reshape(2, 1, 1, 1)))
    with pytest.raises(ValueError, match=r"values in \[-1, 300\], outside \[0, 255\]"):
        check_image_modality(_modality(np.array([-1, 300], np.int16).reshape(2, 1, 1, 1)))


# --- torch pieces --------------------------------------------------------------------------


def _batch(images, n: int = 6) -> torch.Tensor:
    return as_float_images(torch.from_numpy(images.obsm["image"][::4][:n]))


def test_patch_unet_heatmap_and_gate(images64):
    torch.manual_seed(0)
    unet = PatchUNet(in_channels=3, image_size=64, patch_size=8)
    images = _batch(images64).requires_grad_()
    heatmap = unet(images)
    assert heatmap.shape == (6, 8, 8) and unet.grid_size == 8
    assert ((heatmap > 0) & (heatmap < 1)).all()
    gated, grid = unet.gate(images)
    torch.testing.assert_close(grid, heatmap)
    factor = grid.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    for channel in range(3):
        torch.testing.assert_close(gated[:, channel], images[:, channel] * factor)
    (grid.abs().mean() + gated.square().mean()).backward()
    grads = [p.grad for p in unet.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads) and torch.isfinite(images.grad).all()


def test_patch_unet_sizes():
    x = torch.rand(2, 1, 32, 32)
    assert PatchUNet(in_channels=1, image_size=32, patch_size=4)(x).shape == (2, 8, 8)
    assert PatchUNet(in_channels=1, image_size=32, patch_size=16)(x).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="image_size 60 is not divisible by patch_size 8"):
        PatchUNet(image_size=60, patch_size=8)
    with pytest.raises(ValueError, match="not divisible by 16"):
        PatchUNet(image_size=24, patch_size=8, depth=4)
    with pytest.raises(ValueError, match=r"expects images \(n, 3, 64, 64\), got \(2, 1, 32, 32\)"):
        PatchUNet()(x)


def test_patch_unet_pools_large_images():
    """With ``input_size`` the U-net reads the pooled image: the same patch grid, and the
    same logits as its full-resolution twin on the pooled image with half the patch."""
    assert gate_pool_factor(128, 8, 2, 64) == 2 and gate_pool_factor(64, 8, 2, 64) == 1
    assert gate_pool_factor(256, 8, 2, 64) == 4 and gate_pool_factor(128, 8, 2, 0) == 1
    assert gate_pool_factor(128, 1, 2, 64) == 1  # a 1-px patch cannot be pooled
    torch.manual_seed(0)
    pooled = PatchUNet(in_channels=3, image_size=128, patch_size=8, input_size=64)
    twin = PatchUNet(in_channels=3, image_size=64, patch_size=4)
    twin.load_state_dict(pooled.state_dict())
    x = torch.rand(2, 3, 128, 128)
    assert pooled.pool == 2 and pooled(x).shape == (2, 16, 16)
    torch.testing.assert_close(pooled(x), twin(torch.nn.functional.avg_pool2d(x, 2)))
    gated, grid = pooled.gate(x)
    assert gated.shape == x.shape and grid.shape == (2, 16, 16)


def test_image_encoder(images64):
    torch.manual_seed(0)
    encoder = ImageEncoder(in_channels=3, image_size=64, n_hidden=16, depth=2, width=8)
    images = _batch(images64)
    latent = encoder(images)
    assert latent.shape == (6, 16) and torch.isfinite(latent).all()
    latent.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())
    assert encoder.fc.in_features == 16 * 16 * 16  # 2 blocks: 8 -> 16 channels, 64 -> 16 px
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 4"):
        ImageEncoder(image_size=30)
    with pytest.raises(ValueError, match="expects images"):
        encoder(torch.rand(2, 1, 64, 64))


def test_random_flips(images64):
    images = _batch(images64)
    original = images.clone()
    first = random_flips(images, generator=torch.Generator().manual_seed(5))
    second = random_flips(images, generator=torch.Generator().manual_seed(5))
    assert first.shape == images.shape
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(images, original)  # input untouched
    for out, image in zip(first, images, strict=True):
        candidates = [image, image.flip(-1), image.flip(-2), image.flip(-1).flip(-2)]
        assert any(torch.equal(out, c) for c in candidates)
    many = random_flips(images.repeat(20, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    changed = (many != images.repeat(20, 1, 1, 1)).flatten(1).any(1)
    assert 0 < changed.sum() < len(changed)


def test_as_float_images():
    stored = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    torch.testing.assert_close(as_float_images(stored), torch.tensor([[[[0.0, 0.2, 1.0]]]]))
    assert as_float_images(stored.double()).dtype == torch.float32
