"""Every model saved by an earlier release (tests/data/models/<version>/) still loads and predicts.

``tests/data/models/save_release_model.py`` writes one per release: a small model trained on
BMMC donor s1d1 and the class probabilities it gave donor s1d2 when it was saved.
"""

from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
import pytest

from mmdyn_sc import MMDynamics
from mmdyn_sc._utils import mudata_options

MODELS = Path(__file__).parent / "data" / "models"
RELEASES = sorted(p for p in MODELS.iterdir() if (p / "model.pt").is_file())


def test_a_release_model_is_committed():
    import mmdyn_sc

    assert RELEASES, f"no saved release model under {MODELS}"
    assert any(p.name == mmdyn_sc.__version__ for p in RELEASES), (
        f"no model saved by this version ({mmdyn_sc.__version__}): run "
        "tests/data/models/save_release_model.py"
    )


@pytest.mark.parametrize("folder", RELEASES, ids=[p.name for p in RELEASES])
def test_release_model_loads_and_predicts_as_saved(folder, bmmc_donors):
    _, query = bmmc_donors
    expected = pd.read_csv(folder / "expected_proba.csv", index_col=0)
    model = MMDynamics.load(str(folder), query)  # the query has every RNA feature: extra ones
    assert model.mmdyn_sc_version_ == folder.name
    assert model.classes_ == list(expected.columns)
    proba = model.predict(query, soft=True).loc[expected.index]
    np.testing.assert_allclose(proba.to_numpy(), expected.to_numpy(), atol=1e-5)
    certainty_file = folder / "expected_certainty.csv"  # saved from 0.2.0 on
    if folder.name != "0.1.0":
        assert certainty_file.is_file(), f"{folder} lacks expected_certainty.csv"
    if certainty_file.is_file():
        import mmdyn_sc

        expected_certainty = pd.read_csv(certainty_file, index_col=0)["mmdyn_certainty"]
        mmdyn_sc.tl.predict(query, model, attribution=False)
        np.testing.assert_allclose(
            query.obs["mmdyn_certainty"].loc[expected_certainty.index].to_numpy(),
            expected_certainty.to_numpy(), atol=1e-5)


def test_loading_onto_mismatched_data_lists_every_difference(bmmc_donors):
    _, query = bmmc_donors
    folder = RELEASES[-1]
    model = MMDynamics.load(str(folder), query)
    dropped = model.features_["rna"][:3]
    rna = query["rna"][:, ~query["rna"].var_names.isin(dropped)].copy()
    prot = query["prot"].copy()
    del rna.layers["mmdyn_prepared"]
    with mudata_options():
        broken = md.MuData({"rna": rna, "prot": prot})
    with pytest.raises(ValueError) as info:
        MMDynamics.load(str(folder), broken)
    message = str(info.value)
    assert str(folder) in message
    assert "has no layer 'mmdyn_prepared'" in message
    assert "lacks 3 of the model's 50 features" in message
    assert all(repr(f) in message for f in dropped)
    with mudata_options():
        unrelated = md.MuData({"atac": prot.copy()})
    with pytest.raises(ValueError, match=r"none of the model's modalities \['rna', 'prot'\]"):
        MMDynamics.load(str(folder), unrelated)


def test_release_model_predicts_a_query_without_protein(bmmc_donors):
    """An RNA-only query against an RNA+protein model: predicted from RNA, said so."""
    import mmdyn_sc as ms

    _, query = bmmc_donors
    with mudata_options():
        rna_only = md.MuData({"rna": query["rna"].copy()})
    rna_only.obs["cell_type"] = query.obs["cell_type"].to_numpy()
    model = MMDynamics.load(str(RELEASES[-1]), rna_only)
    ms.tl.predict(rna_only, model)
    assert list(rna_only.uns["mmdyn"]["modalities_used"]) == ["rna"]
    confidence = rna_only.obsm["mmdyn_confidence"]
    assert confidence["prot"].isna().all() and confidence["rna"].notna().all()
    proba = rna_only.obsm["mmdyn_proba"].to_numpy()
    assert np.isfinite(proba).all()
    # The same cells with protein give other probabilities: protein was really left out.
    with_protein = model.predict(query, soft=True).to_numpy()
    assert not np.allclose(proba, with_protein)


def test_unreadable_weights_name_the_saving_version(bmmc_donors, tmp_path):
    import torch

    _, query = bmmc_donors
    saved = torch.load(RELEASES[-1] / "model.pt", map_location="cpu", weights_only=False)
    state = saved["model_state_dict"]
    state["renamed.weight"] = state.pop(next(iter(state)))
    saved["attr_dict"]["mmdyn_sc_version_"] = "0.0.1"
    (tmp_path / "old").mkdir()
    torch.save(saved, tmp_path / "old" / "model.pt")
    with pytest.raises(ValueError, match=r"saved with mmdyn_sc 0\.0\.1.*cannot read its weights"):
        MMDynamics.load(str(tmp_path / "old"), query)


#: Releases saved before the certainty existed (no expected_certainty.csv): 0.1.0.
BEFORE_CERTAINTY = [p for p in RELEASES if not (p / "expected_certainty.csv").is_file()]


@pytest.mark.parametrize("folder", BEFORE_CERTAINTY, ids=[p.name for p in BEFORE_CERTAINTY])
def test_release_model_certainty_falls_back_to_the_highest_probability(folder, bmmc_donors,
                                                                      caplog):
    """A model saved before the certainty existed: tl.predict writes the highest probability."""
    import mmdyn_sc as ms

    _, query = bmmc_donors
    query = query.copy()
    model = MMDynamics.load(str(folder), query)
    assert getattr(model, "certainty_", None) is None
    with caplog.at_level("INFO", logger="mmdyn_sc"):
        ms.tl.predict(query, model, attribution=False)
    np.testing.assert_allclose(query.obs["mmdyn_certainty"],
                               query.obsm["mmdyn_proba"].max(1), rtol=1e-6)
    assert query.uns["mmdyn"]["certainty"]["calibrated_on"].startswith("none: model saved")
    assert "no fitted certainty" in caplog.text
