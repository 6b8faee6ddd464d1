"""Image MM dynamics end to end on conftest's synthetic images: image only, tri-modal (synthetic
CITE-seq with images paired by label), predict, save/load, errors. Real BCCD crops: test_images.py,
test_image_gate.py, test_pl_heatmaps.py and benchmarks/images.py."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pytest
import torch

import mmdyn_sc as ms
from mmdyn_sc.module import DEFAULT_IMAGE_OPTIONS, ImageBranch

#: Small images and layers: tests check behaviour (benchmarks/images.py checks quality).
IMAGE_OPTIONS = {"patch_size": 4, "unet_channels": 4, "encoder_width": 8, "encoder_fc": 32}
#: No attribution: test_image_attribution.py covers it (16 passes per image).
FIT = {"max_epochs": 2, "n_hidden": 16, "enable_progress_bar": False,
       "image_options": IMAGE_OPTIONS, "attribution": False}


def image_only(images: ad.AnnData) -> md.MuData:
    mdata = md.MuData({"image": images.copy()})
    mdata.obs["label"] = images.obs["label"].astype(str).to_numpy()
    return mdata


def split_by_rank(images: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Alternate images of each class between two halves (disjoint, class-stratified)."""
    rank = images.obs.groupby("label").cumcount().to_numpy()
    return np.flatnonzero(rank % 2 == 0), np.flatnonzero(rank % 2 == 1)


def check_image_outputs(mdata: md.MuData, key: str = "mmdyn", grid: int = 8) -> np.ndarray:
    heatmap = mdata["image"].obsm[f"{key}_heatmap"]
    assert heatmap.shape == (mdata["image"].n_obs, grid, grid) and heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1
    record = mdata.uns[key]["images"]["image"]
    assert record["patch_size"] == 32 // grid and record["grid_size"] == grid
    assert record["image_size"] == 32 and record["channels"] == 3
    assert record["obsm_key"] == "image" and record["heatmap"]
    return heatmap


def test_image_only_fit_writes_heatmaps_and_leaves_images_alone(synth_images):
    mdata = image_only(synth_images)
    images = mdata["image"].obsm["image"]
    before = images.copy()
    model = ms.tl.fit(mdata, "label", **FIT)
    assert mdata["image"].obsm["image"] is images  # not replaced, not copied into
    np.testing.assert_array_equal(images, before)
    check_image_outputs(mdata)
    proba = mdata.obsm["mmdyn_proba"]
    assert proba.shape == (120, 4) and np.allclose(proba.sum(1), 1, atol=1e-5)
    confidence = mdata.obsm["mmdyn_confidence"]
    assert list(confidence.columns) == ["image"] and np.isfinite(confidence.to_numpy()).all()
    assert "mmdyn_feature_weights" not in mdata["image"].varm
    assert model.images_ == {"image": {"obsm_key": "image", "channels": 3, "image_size": 32}}
    assert "n_features" in mdata.uns["mmdyn"] and "image" not in mdata.uns["mmdyn"]["n_features"]


def test_image_heatmaps_follow_the_patch_size(synth_images):
    mdata = image_only(synth_images[::2])
    ms.tl.fit(mdata, "label", **{**FIT, "max_epochs": 1,
                                 "image_options": {**IMAGE_OPTIONS, "patch_size": 8}})
    check_image_outputs(mdata, grid=4)


@pytest.mark.parametrize("fi,mi", [(False, True), (False, False), (True, False)])
def test_image_ablations_train(synth_images, fi, mi):
    mdata = image_only(synth_images[::2])
    ms.tl.fit(mdata, "label", feature_informativeness=fi, modality_informativeness=mi,
              **{**FIT, "max_epochs": 1})
    assert ("mmdyn_heatmap" in mdata["image"].obsm) == fi
    assert bool(mdata.uns["mmdyn"]["images"]["image"]["heatmap"]) == fi
    assert np.isfinite(mdata.obsm["mmdyn_proba"].to_numpy()).all()


def test_image_predicts_new_cells_and_uint8_equals_float32(synth_images):
    train_rows, query_rows = split_by_rank(synth_images)
    train, query = image_only(synth_images[train_rows]), image_only(synth_images[query_rows])
    model = ms.tl.fit(train, "label", **FIT)
    ms.tl.predict(query, model, attribution=False)
    check_image_outputs(query)
    assert set(query.obs["mmdyn_split"]) == {"query"}
    # The same images stored as float32 in [0, 1] give the same probabilities.
    as_float = image_only(synth_images[query_rows])
    as_float["image"].obsm["image"] = as_float["image"].obsm["image"].astype(np.float32) / 255
    proba = model.predict(as_float, soft=True).to_numpy()
    np.testing.assert_allclose(proba, query.obsm["mmdyn_proba"].to_numpy(), atol=1e-5)


def test_trimodal_fit_predict_save_load(synth_trimodal, tmp_path):
    train, query = synth_trimodal
    assert set(train.mod) == {"rna", "prot", "image"}
    assert train["image"].n_obs < train.n_obs  # some cell types have no image class
    model = ms.tl.fit(train, "cell_type", **FIT)
    assert model.modalities_ == ["rna", "prot", "image"]
    check_image_outputs(train)
    ms.tl.predict(query, model, attribution=False)
    check_image_outputs(query)
    confidence = query.obsm["mmdyn_confidence"]
    imaged = query.obs_names.isin(query["image"].obs_names)
    assert confidence.loc[imaged, "image"].notna().all()
    assert confidence.loc[~imaged, "image"].isna().all()  # no image: NaN, not a guess
    assert confidence[["rna", "prot"]].notna().all().all()
    # Heatmaps sit in the image modality's own cell order.
    heatmaps = model.infer(query).heatmaps[2]
    rows = query.obs_names.get_indexer(query["image"].obs_names)
    np.testing.assert_allclose(query["image"].obsm["mmdyn_heatmap"], heatmaps[rows])

    model.save(tmp_path / "model")
    loaded = ms.MMDynamics.load(tmp_path / "model", query)
    np.testing.assert_allclose(loaded.predict(query, soft=True).to_numpy(),
                               query.obsm["mmdyn_proba"].to_numpy(), atol=1e-6)

    path = tmp_path / "query.h5mu"
    query.write(path)
    back = md.read_h5mu(path)
    np.testing.assert_array_equal(back["image"].obsm["image"], query["image"].obsm["image"])
    np.testing.assert_array_equal(back["image"].obsm["mmdyn_heatmap"],
                                  query["image"].obsm["mmdyn_heatmap"])
    assert back.uns["mmdyn"]["images"]["image"]["patch_size"] == 4


def test_trimodal_query_without_images(synth_trimodal):
    train, query = synth_trimodal
    model = ms.tl.fit(train, "cell_type", **{**FIT, "max_epochs": 1, "modality_dropout": 0.3})
    without = md.MuData({"rna": query["rna"].copy(), "prot": query["prot"].copy()})
    ms.tl.predict(without, model, attribution=False)
    assert list(without.uns["mmdyn"]["modalities_used"]) == ["rna", "prot"]
    assert without.obsm["mmdyn_confidence"]["image"].isna().all()


def test_image_flips_only_in_training():
    torch.manual_seed(0)
    branch = ImageBranch(3, 16, 8, 3, dropout=0.0, feature_informativeness=True,
                         modality_informativeness=True, options={"patch_size": 4,
                                                                 "unet_channels": 4,
                                                                 "encoder_width": 4})
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    branch.eval()
    first, second = branch(images), branch(images)
    torch.testing.assert_close(first["logits"], second["logits"])  # no random flips
    branch.train()
    torch.manual_seed(1)
    trained = branch(images)
    flipped = ~torch.isclose(trained["logits"], first["logits"]).all(dim=1)
    assert 0 < flipped.sum() < 32  # about three images in four are flipped
    torch.manual_seed(1)
    torch.testing.assert_close(branch(images)["logits"], trained["logits"])  # seeded


def test_image_errors(synth_images, make_synth_images):
    subset = synth_images[::3]  # 40 images, every class
    mdata = image_only(subset)
    wrong_rank = image_only(subset)
    wrong_rank["image"].obsm["image"] = wrong_rank["image"].obsm["image"][:, 0]
    with pytest.raises(ValueError, match="3-D.*expected 4-D.*images\\[:, None\\]"):
        ms.tl.fit(wrong_rank, "label", **FIT)
    wide = image_only(subset)
    wide["image"].obsm["image"] = np.concatenate([wide["image"].obsm["image"]] * 2, axis=3)
    with pytest.raises(ValueError, match="32 x 64 images; the model needs square images"):
        ms.tl.fit(wide, "label", **FIT)
    with pytest.raises(ValueError, match="layers names image modalities"):
        ms.tl.fit(image_only(subset), "label", layers={"image": "counts"}, **FIT)
    with pytest.raises(ValueError, match="not divisible by patch_size 5"):
        ms.tl.fit(image_only(subset), "label",
                  **{**FIT, "image_options": {"patch_size": 5}})

    model = ms.tl.fit(mdata, "label", **{**FIT, "max_epochs": 1})
    grey = image_only(synth_images[1::6])
    grey["image"].obsm["image"] = grey["image"].obsm["image"][:, :1]
    with pytest.raises(ValueError, match="1 channel\\(s\\).*expected 3"):
        ms.tl.predict(grey, model)
    small = image_only(make_synth_images(n_per_class=2, n_classes=3, size=16))
    with pytest.raises(ValueError, match="16 x 16 images but the model was trained on 32 x 32"):
        ms.tl.predict(small, model)
    with pytest.raises(ValueError, match="holds 5 images .* but the modality has 4 cells"):
        from mmdyn_sc._data._images import check_image_modality

        class Short:  # anndata itself refuses such an obsm; other containers may not
            obsm = {"image": np.zeros((5, 3, 32, 32), dtype=np.uint8)}
            n_obs = 4

        check_image_modality(Short())


def test_load_lists_image_mismatches(synth_images, tmp_path):
    mdata = image_only(synth_images[::3])
    model = ms.tl.fit(mdata, "label", **{**FIT, "max_epochs": 1})
    model.save(tmp_path / "model")
    grey = image_only(synth_images[1::6])
    grey["image"].obsm["image"] = grey["image"].obsm["image"][:, :1]
    with pytest.raises(ValueError, match=r"shape \(1, 32, 32\).*trained on \(3, 32, 32\)"):
        ms.MMDynamics.load(tmp_path / "model", grey)
    renamed = image_only(synth_images[1::6])
    renamed["image"].obsm["pixels"] = renamed["image"].obsm.pop("image")
    with pytest.raises(ValueError, match=r"no obsm\['image'\].*'pixels'"):
        ms.MMDynamics.load(tmp_path / "model", renamed)


def test_gate_reads_large_images_pooled_and_old_saves_keep_the_full_image(synth_images,
                                                                           tmp_path):
    """``gate_input_size`` pools the U-net's input; a save without it read the full image."""
    mdata = image_only(synth_images[::3])
    options = {**IMAGE_OPTIONS, "gate_input_size": 16}  # 32 px images: pooled by 2
    model = ms.tl.fit(mdata, "label", **{**FIT, "max_epochs": 1, "image_options": options})
    branch = model.module.branches[model.modalities_.index("image")]
    assert branch.gate.pool == 2
    model.save(tmp_path / "model")
    query = image_only(synth_images[1::6])
    loaded = ms.MMDynamics.load(tmp_path / "model", query)
    assert loaded.module.branches[0].gate.pool == 2
    np.testing.assert_allclose(loaded.predict(query, soft=True).to_numpy(),
                               model.predict(query, soft=True).to_numpy(), atol=1e-6)
    # A model saved before the option existed: its image options lack it.
    path = tmp_path / "model" / "model.pt"
    saved = torch.load(path, weights_only=False)
    init = saved["attr_dict"]["init_params_"]
    groups = [init.get("non_kwargs", {}), *init.get("kwargs", {}).values()]
    found = [g["image_options"] for g in groups if g.get("image_options")]
    assert found and all(o.pop("gate_input_size") == 16 for o in found)
    torch.save(saved, path)
    old = ms.MMDynamics.load(tmp_path / "model", query)
    assert old.module.branches[0].gate.pool == 1
    assert old.module.branches[0].options["gate_input_size"] == 0


def pooled_images(images: np.ndarray, factor: int) -> np.ndarray:
    """uint8 (n, C, S, S) average-pooled ``factor`` x ``factor``, float32 in [0, 1]."""
    n, c, side, _ = images.shape
    x = images.astype(np.float64).reshape(n, c, side // factor, factor, side // factor, factor)
    return (x.mean(axis=(3, 5)) / 255.0).astype(np.float32)


def test_branch_reads_large_images_pooled_as_a_fit_on_pooled_images(synth_images, tmp_path,
                                                                    caplog):
    """``input_size`` pools the whole branch's input: the fit is the fit on pooled images.

    Its heatmap and patch attribution cover the stored image in patches of
    ``patch_size`` x pool pixels; a save keeps the pooling.
    """
    from mmdyn_sc.model._load import saved_image_options
    from mmdyn_sc.module._image_branch import input_pool_factor

    mdata = image_only(synth_images[::2])
    options = {**IMAGE_OPTIONS, "input_size": 16}  # 32 px images read at 16 px
    fit = {**FIT, "max_epochs": 3, "seed": 3}
    with caplog.at_level("INFO", logger="mmdyn_sc"):
        model = ms.tl.fit(mdata, "label", **{**fit, "image_options": options})
    assert "32-px images are read average-pooled to 16 px" in caplog.text
    branch = model.module.branches[model.modalities_.index("image")]
    assert branch.input_pool == 2 and branch.encoder.image_size == 16
    assert branch.stored_patch_size == 8 and branch.grid_size == 4
    heatmap = check_image_outputs(mdata, grid=4)

    small = image_only(synth_images[::2])
    small["image"].obsm["image"] = pooled_images(synth_images.obsm["image"][::2], 2)
    reference = ms.tl.fit(small, "label", **fit)  # 16 px: the default reads them whole
    assert reference.module.branches[0].input_pool == 1
    np.testing.assert_allclose(mdata.obsm["mmdyn_proba"].to_numpy(),
                               small.obsm["mmdyn_proba"].to_numpy(), atol=1e-4)
    np.testing.assert_allclose(heatmap, small["image"].obsm["mmdyn_heatmap"], atol=1e-4)

    query = image_only(synth_images[1::4])
    ms.tl.predict(query, model, attribution=True, attribution_cells=5)
    attribution = query["image"].obsm["mmdyn_attribution"]
    assert attribution.shape == (query.n_obs, 4, 4) and np.isfinite(attribution).any()
    model.save(tmp_path / "model")
    loaded = ms.MMDynamics.load(tmp_path / "model", query)
    assert loaded.module.branches[0].input_pool == 2
    np.testing.assert_allclose(loaded.predict(query, soft=True).to_numpy(),
                               model.predict(query, soft=True).to_numpy(), atol=1e-6)
    # Models saved before the option read the full image; the factor's rule.
    assert saved_image_options({"patch_size": 8})["input_size"] == 0
    defaults = DEFAULT_IMAGE_OPTIONS
    assert [input_pool_factor(side, defaults) for side in (32, 64, 96, 128, 256)] == \
        [1, 1, 1, 2, 4]
    assert input_pool_factor(128, {**defaults, "input_size": 0}) == 1
    assert input_pool_factor(136, defaults) == 1  # 68 px is not a multiple of the 8-px patch


def test_feature_tables_of_an_image_modality_are_a_named_error(synth_images):
    """pl.attribution, pl.feature_weights and tl.rank_features point to the patch maps."""
    mdata = image_only(synth_images[::3])
    ms.tl.fit(mdata, "label", **{**FIT, "max_epochs": 1})
    for call in (lambda: ms.pl.attribution(mdata, "image", show=False),
                 lambda: ms.pl.feature_weights(mdata, "image", show=False),
                 lambda: ms.tl.rank_features(mdata, "image")):
        with pytest.raises(ValueError, match=r"image modality .*pl\.heatmaps"):
            call()

