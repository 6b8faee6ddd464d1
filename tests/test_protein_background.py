"""``pp.protein_background`` on real BMMC protein: finite, per batch, documented keys only."""

from __future__ import annotations

import numpy as np
import pytest

import mmdyn_sc
from mmdyn_sc.pp._protein_background import background_level


def test_background_is_removed_per_batch(bmmc):
    before = {name: layer.copy() for name, layer in bmmc.mod["prot"].layers.items()}
    mmdyn_sc.pp.protein_background(bmmc, "prot", batch_key="batch")
    prot = bmmc.mod["prot"]
    denoised = prot.layers["mmdyn_denoised"]
    assert denoised.dtype == np.float32 and denoised.shape == prot.shape
    assert np.isfinite(denoised).all()
    record = prot.uns["protein_background"]
    assert record["batches"] == ["s1d1", "s1d2"] and record["batch_key"] == "batch"
    clr = np.asarray(prot.layers["mmdyn_prepared"], dtype=np.float64)
    for batch in record["batches"]:
        rows = (prot.obs["batch"] == batch).to_numpy()
        levels = np.array([record["background"][batch][p] for p in prot.var_names])
        np.testing.assert_allclose(denoised[rows], clr[rows] - levels, atol=1e-5)
        # the level lies within the protein's values in that batch
        assert ((levels >= clr[rows].min(0) - 1e-9) & (levels <= clr[rows].max(0))).all()
    # the donors' backgrounds differ: that is what is removed
    gap = [abs(record["background"]["s1d1"][p] - record["background"]["s1d2"][p])
           for p in prot.var_names]
    assert np.median(gap) > 0.01
    for name, layer in before.items():  # nothing else changed
        np.testing.assert_array_equal(np.asarray(prot.layers[name].todense()
                                                 if hasattr(prot.layers[name], "todense")
                                                 else prot.layers[name]),
                                      np.asarray(layer.todense() if hasattr(layer, "todense")
                                                 else layer))


def test_the_negative_cells_sit_near_zero(bmmc):
    """CD3 (T cells express it, the others do not): after denoising, non-T cells ~ 0."""
    mmdyn_sc.pp.protein_background(bmmc, "prot", batch_key="batch")
    prot = bmmc.mod["prot"]
    cd3 = prot[:, "CD3"].layers["mmdyn_denoised"].ravel()
    types = bmmc.obs["cell_type"].reindex(prot.obs_names).astype(str)
    t_cell = types.str.contains("T").to_numpy() & ~types.str.contains("Transitional").to_numpy()
    for batch in ("s1d1", "s1d2"):
        rows = (prot.obs["batch"] == batch).to_numpy()
        assert abs(np.median(cd3[rows & ~t_cell])) < 0.5
        assert np.median(cd3[rows & t_cell]) > 1.0


def test_copy_leaves_the_input_alone(bmmc):
    out = mmdyn_sc.pp.protein_background(bmmc, "prot", copy=True)
    assert "mmdyn_denoised" not in bmmc.mod["prot"].layers
    assert out.mod["prot"].uns["protein_background"]["batches"] == ["all"]


def test_a_model_trains_on_the_denoised_layer(bmmc, fast):
    mmdyn_sc.pp.protein_background(bmmc, "prot", batch_key="batch")
    mmdyn_sc.tl.fit(bmmc, "cell_type", layers={"rna": "mmdyn_prepared",
                                              "prot": "mmdyn_denoised"}, **fast)
    assert bmmc.uns["mmdyn"]["layers"]["prot"] == "mmdyn_denoised"
    assert bmmc.obs["mmdyn_prediction"].notna().all()


def test_errors_name_the_problem(bmmc):
    with pytest.raises(KeyError, match="Modality 'adt' not found"):
        mmdyn_sc.pp.protein_background(bmmc, "adt")
    with pytest.raises(KeyError, match="no layer 'clr'"):
        mmdyn_sc.pp.protein_background(bmmc, "prot", layer="clr")
    with pytest.raises(KeyError, match="batch_key 'donor'"):
        mmdyn_sc.pp.protein_background(bmmc, "prot", batch_key="donor")
    small = bmmc[:12].copy()
    small.obs["run"] = ["a"] * 6 + ["b"] * 6
    with pytest.raises(ValueError, match="Batch 'a' has 6"):
        mmdyn_sc.pp.protein_background(small, "prot", batch_key="run")
    assert "mmdyn_denoised" not in bmmc.mod["prot"].layers


def test_background_level_of_a_constant_protein():
    assert background_level(np.full(20, 0.3)) == pytest.approx(0.3)
    values = np.r_[np.random.default_rng(0).normal(0.2, 0.05, 80),
                   np.random.default_rng(1).normal(3.0, 0.3, 20)]
    assert background_level(values) == pytest.approx(0.2, abs=0.05)


def test_the_layer_and_record_survive_an_h5mu_file(bmmc, tmp_path):
    import mudata as md

    from mmdyn_sc._utils import mudata_options

    mmdyn_sc.pp.protein_background(bmmc, "prot", batch_key="batch")
    with mudata_options():
        bmmc.write_h5mu(tmp_path / "denoised.h5mu")
    back = md.read_h5mu(tmp_path / "denoised.h5mu")["prot"]
    np.testing.assert_array_equal(back.layers["mmdyn_denoised"],
                                  bmmc.mod["prot"].layers["mmdyn_denoised"])
    record = back.uns["protein_background"]
    assert list(record["batches"]) == ["s1d1", "s1d2"]
    assert record["background"]["s1d2"]["CD3"] == pytest.approx(
        bmmc.mod["prot"].uns["protein_background"]["background"]["s1d2"]["CD3"])
