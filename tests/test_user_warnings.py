"""Our warnings point at the user's line, whatever the call path inside the package."""

import warnings

import mmdyn_sc as ms


def test_query_without_a_modality_warns_at_the_users_call():
    mdata, _ = ms.datasets.synthetic(n_cells=150, n_classes=3, noise_modality=False, seed=4)
    ms.pp.prepare(mdata)
    model = ms.tl.fit(mdata, "cell_type", max_epochs=2, n_hidden=8, enable_progress_bar=False)
    import mudata

    with mudata.set_options(pull_on_update=False):
        rna_only = mudata.MuData({"rna": mdata["rna"].copy()})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ms.tl.predict(rna_only, model)
    ours = [w for w in caught if "absent from the data" in str(w.message)]
    assert len(ours) == 1
    assert "['prot']" in str(ours[0].message)
    assert ours[0].filename == __file__
    assert rna_only.obs["mmdyn_prediction"].notna().all()
