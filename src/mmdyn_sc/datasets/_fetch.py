"""Locate a dataset file: a local copy under ``settings.data_dir``, else a verified download."""

from __future__ import annotations

from pathlib import Path

from mmdyn_sc._settings import DATA_DIR_ENV, settings

_GH = "https://raw.githubusercontent.com"

_BMMC_COMMIT = "75281c039ab98b459edbf52058a18597e710ed4d"
_BMMC_BASE = (
    f"{_GH}/openproblems-bio/neurips2021_multimodal_viash/{_BMMC_COMMIT}/"
    "resources_test/common/openproblems_bmmc_cite_starter"
)
_MOGONET_COMMIT = "32d9066b7fe289b3f7cdb496a5668834079c274c"
_ROSMAP_BASE = f"{_GH}/txWang/MOGONET/{_MOGONET_COMMIT}/ROSMAP"
_BCCD_COMMIT = "7751031e0b41bcfdff998cbc4c698a445a60b49e"

#: ``folder -> {filename: (url or None, sha256 of the file)}``.
#: A url of ``None`` means the file is never downloaded: there is no single public original of
#: it (it was built locally), or its source has no licence (see :data:`LOCAL_ONLY`).
REGISTRY: dict[str, dict[str, tuple[str | None, str]]] = {
    "bmmc_cite_neurips2021": {
        "openproblems_bmmc_cite_starter.output_rna.h5ad": (
            f"{_BMMC_BASE}/openproblems_bmmc_cite_starter.output_rna.h5ad",
            "e111b6ad48f7236b9291dab56d0aa2ebcc1a5f8d1d402fa232d9bfe3d1af6f61",
        ),
        "openproblems_bmmc_cite_starter.output_mod2.h5ad": (
            f"{_BMMC_BASE}/openproblems_bmmc_cite_starter.output_mod2.h5ad",
            "ad4df05778c27c930bdb9764452af0fa381cbd9b3fb8de669420148f20fb1fed",
        ),
    },
    "pbmc10k_cite_totalvi": {
        "pbmc10k_cite_rna.h5ad": (
            None,
            "5f89976a73c3f9814eeaf0517380875cc3c579748359bf38e6d61f9eb7358703",
        ),
        "pbmc10k_cite_prot.h5ad": (
            None,
            "769cdef8b6ed3c398f28894b7f22a666bd8beb5a857e13a954cdf909401de40d",
        ),
    },
    "bccd_wbc_crops": {
        "index.csv": (
            None,
            "9b4addc9f7dcf1f887a19d0023b5246ac0d6e13560b76edd1791e95595098a3a",
        ),
    },
    "ROSMAP": {
        name: (f"{_ROSMAP_BASE}/{name}", sha)
        for name, sha in {
            "1_featname.csv": "1df5c536e47eb0d532abbb8bea6a9361bba01a913e03cd03b8ef06fb7849a660",
            "1_tr.csv": "37bfcc58da320bf6c37b22617ed821dcfa96ca4abd334adf4d42c8e3375d972b",
            "1_te.csv": "d9d9daf05915556fd13008fb6ad7d88e0c5a8a57e5a985548640d4cd1563712b",
            "2_featname.csv": "7431418fb193e02a1c1431f9446ccc227c8818a4d40c1cb72a2b640a0d8d38b7",
            "2_tr.csv": "b1d1d20f8793e5f11248218f19493d9a7be366ee5bbbaff585058401976f8a21",
            "2_te.csv": "546e9d7f640e54c4c1d6540ed2c1a3adb10497635e7d6b8d4099b4930271ac76",
            "3_featname.csv": "2b0b3451af16597ae34342a6abc99e397482fef30a61821a8e8fe7cb69276bae",
            "3_tr.csv": "fd8708bc0c41f774209f9e6a49a74c5a9acd510dd62eadc299a18d49ccd9e862",
            "3_te.csv": "c0d9efd6c35e8c5768b759238c95c64674d7e1e7f76ed07fca6f168d67e676f4",
            "labels_tr.csv": "5859aa107dbf406937938ebefbec122d01fea5d41a9bd0292199f4406749e45d",
            "labels_te.csv": "20d728c6f51f79ff5fa7719b960daf22074a0e6e1f3028869042b02ca4e3f68d",
        }.items()
    },
}

#: Why a file with no url is not downloaded, unless :data:`LOCAL_ONLY` says otherwise.
_ASSEMBLED_LOCALLY = (
    "has no single public original to download (it was assembled from several sources; see "
    "its SOURCE.md)"
)

#: ``folder -> (why it is not downloaded, what its local copy holds)`` for the datasets with
#: no url for another reason than :data:`_ASSEMBLED_LOCALLY`.
LOCAL_ONLY: dict[str, tuple[str, str]] = {
    "bccd_wbc_crops": (
        "is never downloaded: its source, the GitHub repository apple2373/BCCD at commit "
        f"{_BCCD_COMMIT} (folder BCCD_cropped/<Class>/), has no licence file",
        "'index.csv' (columns path, label, source_image) and the crops as "
        "'images/<Class>/*.jpg' (e.g. images/Neutrophil/BloodImage_00001_1.jpg)",
    ),
}


def _local_or_download(folder: str, filename: str, url: str | None, sha256: str | None) -> Path:
    """Return the path of ``settings.data_dir / folder / filename``, downloading it if needed.

    Parameters
    ----------
    folder
        Dataset folder under the data directory.
    filename
        File name inside ``folder``.
    url
        Public original of the file, or ``None`` when there is none.
    sha256
        Expected SHA-256 of the download (not checked for an existing local copy).

    Returns
    -------
    pathlib.Path
        The local file.

    Raises
    ------
    FileNotFoundError
        If there is no local copy and ``url`` is ``None``.
    DownloadError
        If the download fails; no file or created folder is left behind.
    """
    target_dir = Path(settings.data_dir) / folder
    local = target_dir / filename
    if local.is_file():
        return local
    if url is None:
        why, contents = LOCAL_ONLY.get(folder, (_ASSEMBLED_LOCALLY, repr(filename)))
        raise FileNotFoundError(
            f"{local} not found. The dataset {folder!r} {why}. Place a folder "
            f"{folder!r} containing {contents} under the data directory: set "
            f"`mmdyn_sc.settings.data_dir` or the environment variable {DATA_DIR_ENV} "
            f"(current data directory: {settings.data_dir})."
        )
    return _download(url, sha256, local)


class DownloadError(ConnectionError):
    """A dataset could not be downloaded (no network, server error, or a wrong checksum).

    Nothing is left behind: no partial file, and no folder the failed download created.
    """


def _download(url: str, sha256: str | None, local: Path) -> Path:
    """Download ``url`` to ``local`` (verified), or raise :class:`DownloadError` leaving no trace.

    pooch writes into a temporary file it removes on failure; the folders it created for
    the file (the data directory included) are removed here when they are still empty.
    """
    import pooch

    created = [p for p in (local.parent, *local.parent.parents) if not p.exists()]
    known_hash = f"sha256:{sha256}" if sha256 else None
    # Fail within a minute without network instead of hanging on a dead connection.
    downloader = pooch.HTTPDownloader(timeout=(20, 120), progressbar=False)
    try:
        return Path(pooch.retrieve(url, known_hash=known_hash, fname=local.name,
                                   path=local.parent, downloader=downloader))
    except Exception as err:
        if local.is_file():  # never keep a file that did not verify
            local.unlink()
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty (another file arrived) or already gone
                break
        raise DownloadError(
            f"Could not download {local.name} from {url}: {type(err).__name__}: {err}. "
            f"Without network, place a local copy at {local} (the data directory is "
            f"`mmdyn_sc.settings.data_dir` or the environment variable {DATA_DIR_ENV}; now "
            f"{settings.data_dir})."
        ) from err


def _fetch(folder: str, filename: str) -> Path:
    """Resolve a file listed in :data:`REGISTRY`."""
    url, sha256 = REGISTRY[folder][filename]
    return _local_or_download(folder, filename, url, sha256)
