"""Datasets: real CITE-seq / bulk multi-omics / image loaders and a seeded synthetic generator.

Real loaders read a local copy under ``mmdyn_sc.settings.data_dir`` (environment variable
``MMDYN_SC_DATA_DIR``) first and otherwise download the public original, verified by SHA-256,
where one exists; a failed download raises :class:`DownloadError` and leaves nothing behind.
The loaders are imported on first use (PEP 562 ``__getattr__``).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from ._fetch import DownloadError
    from ._real import bccd_wbc, bmmc_cite, pbmc10k_cite, rosmap
    from ._synthetic import synthetic

#: Public name -> module that defines it, imported on first access.
_LAZY = {
    "DownloadError": "._fetch",
    "bccd_wbc": "._real",
    "bmmc_cite": "._real",
    "pbmc10k_cite": "._real",
    "rosmap": "._real",
    "synthetic": "._synthetic",
}

__all__ = [
    "DownloadError",
    "bccd_wbc",
    "bmmc_cite",
    "pbmc10k_cite",
    "rosmap",
    "synthetic",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
