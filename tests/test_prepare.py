"""pp.prepare against scanpy and muon: on synthetic counts, and on real BMMC counts when present."""

import muon as mu
import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

from mmdyn_sc import datasets, pp


def _dense(x) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def _check_prepared(mdata, rna_counts, prot_counts) -> None:
    """``mdata`` prepared from these counts: counts kept in X, layers as scanpy / muon make them."""
    assert np.array_equal(_dense(mdata["rna"].X), _dense(rna_counts))
    assert np.array_equal(_dense(mdata["prot"].X), _dense(prot_counts))
    # RNA: normalise-total + log1p, as scanpy does it.
    ref = sc.AnnData(sparse.csr_matrix(rna_counts, dtype=np.float32))
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    np.testing.assert_allclose(_dense(mdata["rna"].layers["mmdyn_prepared"]), ref.X.toarray(),
                               rtol=1e-5)
    # Protein: CLR per cell (muon's implementation, axis=1).
    ref = sc.AnnData(_dense(prot_counts).astype(np.float32))
    mu.prot.pp.clr(ref, axis=1)
    np.testing.assert_allclose(_dense(mdata["prot"].layers["mmdyn_prepared"]), ref.X, rtol=1e-5)


def test_prepare_writes_layers_and_keeps_counts():
    mdata, _ = datasets.synthetic(n_cells=200, noise_modality=False, seed=2)
    rna_counts, prot_counts = mdata["rna"].X.copy(), mdata["prot"].X.copy()
    assert sparse.issparse(rna_counts) and not sparse.issparse(prot_counts)
    pp.prepare(mdata)
    _check_prepared(mdata, rna_counts, prot_counts)


def test_prepare_on_real_bmmc_counts(bmmc):
    """The conftest fixture ran pp.prepare on BMMC's raw counts (sparse RNA and protein)."""
    _check_prepared(bmmc, bmmc["rna"].X, bmmc["prot"].X)


def test_prepare_copy_and_kinds():
    mdata, _ = datasets.synthetic(n_cells=100, seed=1)
    out = pp.prepare(mdata, kinds={"noise": "none"}, copy=True)
    assert "mmdyn_prepared" not in mdata["rna"].layers
    np.testing.assert_array_equal(out["noise"].layers["mmdyn_prepared"], out["noise"].X)
    with pytest.raises(ValueError, match="modality 'noise'"):
        pp.prepare(mdata)
