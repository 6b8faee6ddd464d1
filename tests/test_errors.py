"""Clear errors for inputs a user can get wrong (real BMMC data)."""

import mudata as md
import numpy as np
import pytest

import mmdyn_sc as ms
from mmdyn_sc._utils import mudata_options


def test_unknown_labels_key_lists_and_suggests(bmmc, fast):
    with pytest.raises(KeyError, match=r"cell_typ.*not found.*Available columns.*'cell_type'"):
        ms.tl.fit(bmmc, "cell_typ", **fast)


def test_labels_key_from_one_modality(bmmc, fast):
    bmmc["prot"].obs["only_here"] = bmmc.obs["cell_type"].to_numpy()
    model = ms.tl.fit(bmmc, "only_here", **fast)
    assert model.classes_ == sorted(str(c) for c in bmmc.obs["cell_type"].cat.categories)
    model = ms.tl.fit(bmmc, "prot:only_here", key_added="b", **fast)
    assert "b_proba" in bmmc.obsm


def test_unknown_modality(bmmc, fast):
    with pytest.raises(KeyError, match=r"Modality 'protein' not found.*Did you mean 'prot'"):
        ms.tl.fit(bmmc, "cell_type", modalities=["rna", "protein"], **fast)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_input(bmmc, bad, fast):
    layer = bmmc["prot"].layers["mmdyn_prepared"]
    layer[3, 5] = bad
    with pytest.raises(ValueError, match=r"modality 'prot' layer 'mmdyn_prepared' contains 1 NaN"):
        ms.tl.fit(bmmc, "cell_type", **fast)


def test_fewer_than_two_classes(bmmc, fast):
    bmmc.obs["one"] = "T cell"
    with pytest.raises(ValueError, match="at least two are needed"):
        ms.tl.fit(bmmc, "one", **fast)


def test_negative_counts(bmmc):
    bmmc["rna"].X = bmmc["rna"].layers["mmdyn_prepared"].copy()
    bmmc["rna"].X[0, 0] = -1.0
    with pytest.raises(ValueError, match=r"modality 'rna' X contains negative values"):
        ms.pp.prepare(bmmc)


def test_query_missing_features(bmmc_donors, fast):
    train, query = bmmc_donors
    model = ms.tl.fit(train, "cell_type", **fast)
    dropped = ["CD3", "CD19"] if "CD3" in query["prot"].var_names else list(
        query["prot"].var_names[:2])
    keep = ~query["prot"].var_names.isin(dropped)
    with mudata_options():
        broken = md.MuData({"rna": query["rna"].copy(), "prot": query["prot"][:, keep].copy()})
    with pytest.raises(KeyError, match=r"modality 'prot'.* lacks 2 of the model's features"):
        ms.tl.predict(broken, model)


def test_bad_options(bmmc, fast):
    with pytest.raises(ValueError, match="Unknown recipe"):
        ms.tl.fit(bmmc, "cell_type", recipe="fancy", **fast)
    with pytest.raises(KeyError, match="Layer 'nope' not found in modality 'rna'"):
        ms.tl.fit(bmmc, "cell_type", layers={"rna": "nope"}, **fast)
    with pytest.raises(KeyError, match="mask_var column 'hvg' not found"):
        ms.tl.fit(bmmc, "cell_type", mask_var={"rna": "hvg"}, **fast)
    with pytest.raises(ValueError, match="feature_scaling must be one of"):
        ms.tl.fit(bmmc, "cell_type", feature_scaling="log", **fast)


def test_mask_var_restricts_features(bmmc, fast):
    bmmc["rna"].var["first"] = np.arange(bmmc["rna"].n_vars) < 100
    model = ms.tl.fit(bmmc, "cell_type", mask_var={"rna": "first"}, **fast)
    assert len(model.features_["rna"]) == 100
    info = bmmc["rna"].var["mmdyn_informativeness"]
    assert info.iloc[:100].notna().all() and info.iloc[100:].isna().all()
