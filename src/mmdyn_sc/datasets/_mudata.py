"""Build MuData objects without global option side effects."""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import mudata as md

from .._utils import mudata_options


def _make_mudata(mods: Mapping[str, ad.AnnData]) -> md.MuData:
    """Construct a MuData from modalities; global ``obs`` starts with no columns."""
    with mudata_options():
        mdata = md.MuData(dict(mods))
    return mdata
