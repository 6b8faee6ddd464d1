"""Datasets: real CITE-seq / bulk multi-omics loaders and a seeded synthetic generator.

Real loaders read a local copy under ``mmdyn_sc.settings.data_dir`` (environment variable
``MMDYN_SC_DATA_DIR``) first and otherwise download the public original, verified by SHA-256,
where one exists; a failed download raises :class:`DownloadError` and leaves nothing behind.
The loaders are imported on first use (PEP 562 ``__getattr__``).
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from ._fetch import DownloadError
    from ._real import bmmc_cite, pbmc10k_cite, rosmap
    from ._synthetic import synthetic

#: Public name -> module that defines it, imported on first access.
_LAZY = {
    "DownloadError": "._fetch",
    "bmmc_cite": "._real",
    "pbmc10k_cite": "._real",
    "rosmap": "._real",
    "synthetic": "._synthetic",
}

__all__ = [
    "DownloadError",
    "bmmc_cite",
    "pbmc10k_cite",
    "rosmap",
    "synthetic",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
