"""tl.fit keeps no copy of the data once its model is gone (scvi-tools' stores included)."""

from __future__ import annotations

import gc
import weakref

import pytest

import mmdyn_sc as ms
from mmdyn_sc import MMDynamics
from mmdyn_sc.model._registration import ALIGNED_COPIES


def _stores() -> tuple[int, int]:
    return (len(MMDynamics._setup_adata_manager_store),
            len(MMDynamics._per_instance_manager_store))


@pytest.mark.parametrize("options", [{"n_fits": 2}, {"transductive": True, "n_fits": 1}])
def test_fit_leaves_no_copy_of_the_data_behind(synth, options):
    """Every fit inside ``tl.fit`` (the model's own, an extra fit, a transductive first fit)
    registers an aligned copy of the data; scvi-tools would keep each for the session."""
    gc.collect()
    before = _stores()
    if options.get("transductive"):
        synth.obs["cell_type"] = synth.obs["cell_type"].astype(object).where(
            synth.obs["batch"] == "a").astype("category")
    model = ms.tl.fit(synth, "cell_type", max_epochs=2, n_hidden=16,
                      enable_progress_bar=False, attribution_cells=10, **options)
    assert synth.uns["mmdyn"]["attribution"]["n_fits"] == options["n_fits"]
    assert _stores()[0] == before[0]  # no class-wide registration left
    assert ALIGNED_COPIES.get(synth) is None
    # the model still predicts, saves and loads
    query = synth.copy()
    ms.tl.predict(query, model)
    assert ALIGNED_COPIES.get(query) is None and _stores()[0] == before[0]
    copy = weakref.ref(model.adata)
    del model
    gc.collect()  # the model (in reference cycles) and its finalizer, which frees ...
    gc.collect()  # ... scvi-tools' store of its managers, and with it the copy
    assert copy() is None  # the aligned copy went with the model
    assert _stores() == before


def test_a_model_needs_its_own_setup_after_tl_fit(synth):
    ms.tl.fit(synth, "cell_type", max_epochs=1, n_hidden=16, enable_progress_bar=False,
              attribution=False)
    with pytest.raises(ValueError, match="setup_mudata first"):
        MMDynamics(synth)
    MMDynamics.setup_mudata(synth, labels_key="cell_type")
    MMDynamics(synth, n_hidden=16)
