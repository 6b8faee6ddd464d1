"""``tl.predict(copy=True)`` returns the annotated copy and leaves the input as it was."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from scipy import sparse

import mmdyn_sc as ms
from mmdyn_sc._keys import Key

TINY = {"max_epochs": 2, "n_hidden": 16, "enable_progress_bar": False}


def digest(mdata) -> dict[str, str]:
    """Hash of every matrix, layer and obs/var table, and the keys of obsm/varm/uns."""
    out = {}

    def h(name, value):
        if sparse.issparse(value):
            value = value.toarray()
        if isinstance(value, pd.DataFrame | pd.Series):
            value = pd.util.hash_pandas_object(value, index=True).to_numpy()
        out[name] = hashlib.sha1(np.ascontiguousarray(np.asarray(value)).tobytes()).hexdigest()

    h("obs", mdata.obs)
    out["obs_columns"] = str(list(mdata.obs.columns))
    out["obsm"] = str(sorted(mdata.obsm.keys()))
    out["uns"] = str(sorted(mdata.uns.keys()))
    for mod, adata in mdata.mod.items():
        h(f"{mod}.X", adata.X)
        for layer, value in adata.layers.items():
            h(f"{mod}.layers.{layer}", value)
        h(f"{mod}.obs", adata.obs)
        h(f"{mod}.var", adata.var)
        out[f"{mod}.var_columns"] = str(list(adata.var.columns))
        for where in ("obsm", "varm", "uns"):
            out[f"{mod}.{where}"] = str(sorted(getattr(adata, where).keys()))
    return out


def test_predict_copy_returns_the_annotated_copy_and_leaves_the_input(synth_batches):
    train, query = synth_batches
    model = ms.tl.fit(train, "cell_type", **TINY)
    before = digest(query)

    out = ms.tl.predict(query, model, key_added="q", copy=True)

    assert digest(query) == before
    assert out is not query
    assert Key.obsm.proba("q") in out.obsm and Key.uns.params("q") in out.uns
    assert (out.obs[Key.obs.split("q")] == "query").all()
    assert list(out.obs_names) == list(query.obs_names)
    # the copy holds what an in-place prediction writes, and nothing else differs
    assert ms.tl.predict(query, model, key_added="q") is None
    pd.testing.assert_frame_equal(out.obsm[Key.obsm.proba("q")], query.obsm[Key.obsm.proba("q")])
    assert digest(out) == digest(query)
