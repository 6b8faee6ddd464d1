"""pp.prepare on real BMMC counts."""

import muon as mu
import numpy as np
import scanpy as sc

from mmdyn_sc import datasets, pp


def test_prepare_writes_layers_and_keeps_counts():
    mdata = datasets.bmmc_cite()
    rna_counts = mdata["rna"].X.copy()
    prot_counts = mdata["prot"].X.copy()
    pp.prepare(mdata)
    assert (mdata["rna"].X != rna_counts).nnz == 0
    assert (mdata["prot"].X != prot_counts).nnz == 0
    # RNA: normalise-total + log1p, as scanpy does it.
    ref = sc.AnnData(rna_counts.copy())
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    np.testing.assert_allclose(mdata["rna"].layers["mmdyn_prepared"].toarray(), ref.X.toarray(),
                               rtol=1e-5)
    # Protein: CLR per cell (muon's implementation, axis=1).
    ref = sc.AnnData(prot_counts.toarray())
    mu.prot.pp.clr(ref, axis=1)
    np.testing.assert_allclose(mdata["prot"].layers["mmdyn_prepared"], ref.X, rtol=1e-5)


def test_prepare_copy_and_kinds():
    mdata, _ = datasets.synthetic(n_cells=100, seed=1)
    out = pp.prepare(mdata, kinds={"noise": "none"}, copy=True)
    assert "mmdyn_prepared" not in mdata["rna"].layers
    np.testing.assert_array_equal(out["noise"].layers["mmdyn_prepared"], out["noise"].X)
    try:
        pp.prepare(mdata)
    except ValueError as err:
        assert "modality 'noise'" in str(err)
    else:
        raise AssertionError("an unknown modality kind must be an error")
