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


def test_a_gene_and_a_protein_named_alike_do_not_warn_inside_the_package():
    """CITE-seq panels name some proteins like their genes (BMMC: CD36, CD69, HLA-E).

    The user's MuData already has these global ``var_names``; the package's copies of it
    (``tl.fit``'s, the demo's) must not repeat mudata's warning about them.
    """
    import mudata

    from mmdyn_sc._utils import copy_mudata

    mdata, _ = ms.datasets.synthetic(n_cells=120, n_classes=3, noise_modality=False, seed=5)
    ms.pp.prepare(mdata)
    prot = mdata["prot"]
    prot.var_names = [mdata["rna"].var_names[0], *prot.var_names[1:]]
    with mudata.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata.update()
    assert not mdata.var_names.is_unique
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copied = copy_mudata(mdata[mdata.obs_names[::2]])
        ms.tl.fit(copied, "cell_type", max_epochs=1, n_hidden=8, attribution=False,
                  enable_progress_bar=False)
    assert not [w for w in caught if "var_names are not unique" in str(w.message)]
    # (mudata's view of such data may list a modality's features in another order)
    assert sorted(copied["prot"].var_names) == sorted(prot.var_names)
