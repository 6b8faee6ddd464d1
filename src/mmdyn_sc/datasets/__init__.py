"""Datasets: real CITE-seq / bulk multi-omics loaders and a seeded synthetic generator.

Real loaders read a local copy under ``mmdyn_sc.settings.data_dir`` (environment variable
``MMDYN_SC_DATA_DIR``) first and otherwise download the public original, verified by SHA-256,
where one exists.
"""

from ._real import bmmc_cite, pbmc10k_cite, rosmap
from ._synthetic import synthetic

__all__ = ["bmmc_cite", "pbmc10k_cite", "rosmap", "synthetic"]
