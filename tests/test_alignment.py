"""Aligning modalities that do not cover all cells (synthetic CITE-seq, conftest.synth)."""

import anndata as ad
import mudata as md
import numpy as np
import pytest
from scipy import sparse

from mmdyn_sc._data import align_mudata, presence_column
from mmdyn_sc._utils import mudata_options


def _unpaired(synth, seed=0):
    """RNA for all cells; protein (sparse, as real CITE-seq loaders store it) for 70% of them,
    rows shuffled."""
    rng = np.random.default_rng(seed)
    rna = synth["rna"].copy()
    prot = synth["prot"].copy()
    prot.X = sparse.csr_matrix(prot.X)
    prot.layers["counts"] = sparse.csr_matrix(prot.layers["counts"])
    keep = rng.permutation(prot.n_obs)[: int(0.7 * prot.n_obs)]
    prot = prot[keep].copy()
    with mudata_options():
        mdata = md.MuData({"rna": rna, "prot": prot})
    mdata.obs["cell_type"] = synth.obs["cell_type"].reindex(mdata.obs_names)
    return mdata


def test_shuffled_partial_modality_is_aligned_by_name(synth):
    mdata = _unpaired(synth)
    prot = mdata["prot"]
    features = {"rna": list(mdata["rna"].var_names[:50]), "prot": list(prot.var_names[::-1])}
    aligned = align_mudata(mdata, ["rna", "prot"], {"rna": "counts", "prot": "counts"}, features)
    a_prot = aligned.mdata["prot"]
    assert list(aligned.mdata.obs_names) == list(mdata.obs_names)
    assert a_prot.n_obs == mdata.n_obs
    assert list(a_prot.var_names) == features["prot"]
    has = aligned.present[:, 1]
    assert has.sum() == prot.n_obs
    np.testing.assert_array_equal(aligned.mdata.obs[presence_column(1)].to_numpy(), has)
    assert sparse.issparse(a_prot.X)
    dense = a_prot.X.toarray()
    # Each present cell's row equals that cell's protein counts, features reversed.
    for name in mdata.obs_names[has][:25]:
        row = dense[mdata.obs_names.get_loc(name)]
        expected = prot[name].layers["counts"].toarray().ravel()[::-1]
        np.testing.assert_array_equal(row, expected)
    assert np.all(dense[~has] == 0)


def test_user_object_untouched(synth):
    mdata = _unpaired(synth)
    before_uns = dict(mdata.uns)
    before_obs = mdata.obs.copy()
    x_before = mdata["prot"].X.copy()
    align_mudata(mdata, ["rna", "prot"], {}, {m: list(mdata[m].var_names) for m in mdata.mod})
    assert dict(mdata.uns) == before_uns
    assert mdata.obs.equals(before_obs)
    assert (mdata["prot"].X != x_before).nnz == 0


def test_missing_features_listed(synth):
    features = {"rna": ["gene_3", "NOT_A_GENE", "ALSO_MISSING"]}
    with pytest.raises(KeyError, match="NOT_A_GENE.*ALSO_MISSING"):
        align_mudata(synth, ["rna"], {}, features)


def test_no_shared_cells():
    a = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    a.obs_names = ["a", "b", "c"]
    b = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    b.obs_names = ["x", "y"]
    with mudata_options():
        mdata = md.MuData({"one": a, "two": b})
    aligned = align_mudata(mdata, ["one", "two"], {}, {"one": ["0", "1"], "two": ["0", "1"]})
    assert aligned.present.sum(0).tolist() == [3, 2]
    with pytest.raises(ValueError, match="shares no cells"):
        align_mudata(mdata[["a", "b"]].copy(), ["one", "two"], {},
                     {"one": ["0", "1"], "two": ["0", "1"]})
