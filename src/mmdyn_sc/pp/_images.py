"""Image modality helpers: images from files, crops around cells, pairing images by label.

An image modality is an AnnData whose ``.obsm[obsm_key]`` holds an array (n_cells, channels,
H, W) in ``uint8`` (0..255) or ``float32`` ([0, 1]); its ``.X`` is an empty (n_cells, 0)
matrix. Images are never densified at float64: the model converts them per minibatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from mudata import MuData

from .._data._images import IMAGE_KEY, check_image_modality
from .._data._validation import examples, suggest
from .._utils import copy_mudata, logger, mudata_options, warn

DTYPES = ("uint8", "float32")
BACKGROUNDS = ("border", "zero")


# --- shared pieces -------------------------------------------------------------------------


def _check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    return value


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive integer (pixels per side), got {size!r}.")
    return int(size)


def _to_float(image: np.ndarray, where: str) -> np.ndarray:
    """Channels-last image as float32 in [0, 1], intensities scaled by the dtype's range."""
    from skimage.util import img_as_float32

    if image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise ValueError(f"{where} contains NaN or infinite values.")
        if image.size and (image.min() < 0 or image.max() > 1):
            raise ValueError(
                f"{where} is a float image with values in [{image.min():g}, {image.max():g}]; "
                "float images must lie in [0, 1]."
            )
    elif image.dtype.kind not in "uib":
        raise TypeError(f"{where} has non-numeric dtype {image.dtype}.")
    return img_as_float32(image)


def _to_dtype(image: np.ndarray, dtype: str) -> np.ndarray:
    """A float image in [0, 1] as uint8 (rounded) or float32."""
    image = np.clip(image, 0.0, 1.0)
    if dtype == "uint8":
        return np.rint(image * 255.0).astype(np.uint8)
    return image.astype(np.float32, copy=False)


def _obs_frame(obs: pd.DataFrame | None, n: int, default_names: Sequence[str]) -> pd.DataFrame:
    if obs is None:
        return pd.DataFrame(index=pd.Index([str(x) for x in default_names]))
    if not isinstance(obs, pd.DataFrame):
        raise TypeError(f"obs must be a pandas DataFrame, got {type(obs).__name__}.")
    if len(obs) != n:
        raise ValueError(f"obs has {len(obs)} rows but there are {n} images; one row per image.")
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    duplicates = obs.index[obs.index.duplicated()].unique()
    if len(duplicates):
        raise ValueError(
            f"obs has {len(duplicates)} duplicate index name(s): {examples(duplicates)}; the index "
            "names the cells and must be unique."
        )
    return obs


def _image_anndata(
    images: np.ndarray, obs: pd.DataFrame, obsm_key: str, source: str, **info
) -> ad.AnnData:
    adata = ad.AnnData(X=np.zeros((images.shape[0], 0), dtype=np.float32), obs=obs)
    adata.obsm[obsm_key] = images
    adata.uns["image"] = {
        "size": int(images.shape[-1]),
        "channels": int(images.shape[1]),
        "dtype": str(images.dtype),
        "source": source,
        "obsm_key": obsm_key,
        **info,
    }
    check_image_modality(adata, obsm_key)
    return adata


# --- images from files ---------------------------------------------------------------------


def _resolve_paths(paths: Sequence, root) -> list[Path]:
    if isinstance(paths, str | Path):
        raise TypeError("paths must be a sequence of file paths, not a single path.")
    resolved = [Path(root) / p if root is not None else Path(p) for p in paths]
    if not resolved:
        raise ValueError("No image paths given.")
    missing = [str(p) for p in resolved if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image file(s) not found: {examples(missing)}.")
    return resolved


def _read_image(path: Path) -> np.ndarray:
    """Read one image channels-last (H, W, C); an RGBA image loses its alpha channel."""
    import skimage.io

    try:
        image = np.asarray(skimage.io.imread(path))
    except Exception as err:  # any reader failure: name the file
        raise ValueError(f"Cannot read image file {str(path)!r}: {err}") from err
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[-1] > 4:
        raise ValueError(
            f"Image file {str(path)!r} has shape {image.shape}; expected (H, W) or (H, W, C) with "
            "at most 4 channels (a multi-page or channels-first file needs its own reader; "
            "build the array and use crops_from_image or an AnnData directly)."
        )
    if image.shape[-1] == 4:
        image = image[:, :, :3]  # RGBA -> RGB
    return image


def _border_median(image: np.ndarray) -> np.ndarray:
    """Per-channel median of the outermost pixel ring of a (H, W, C) image."""
    ring = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]], axis=0)
    return np.median(ring, axis=0).astype(image.dtype)


def _pad_to_square(image: np.ndarray, background: str = "border") -> np.ndarray:
    """Pad a (H, W, C) image to a square, centred, with a constant per channel.

    Parameters
    ----------
    image
        Channels-last image.
    background
        ``"border"``: each channel's median over the outermost pixel ring (the background
        of a cell crop, so the padding leaves no hard edge); ``"zero"``: 0.

    Returns
    -------
    numpy.ndarray
        The (S, S, C) image, S = max(H, W); ``image`` itself if already square.
    """
    _check_choice(background, BACKGROUNDS, "background")
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width)
    fill = _border_median(image) if background == "border" else np.zeros(image.shape[-1])
    out = np.empty((side, side, image.shape[-1]), dtype=image.dtype)
    out[...] = fill
    top, left = (side - height) // 2, (side - width) // 2
    out[top : top + height, left : left + width] = image
    return out


def _square_resize(image: np.ndarray, size: int, background: str, where: str) -> np.ndarray:
    """(H, W, C) image of any dtype -> float32 (C, size, size) in [0, 1]."""
    from skimage.transform import resize

    image = _pad_to_square(_to_float(image, where), background)
    if image.shape[0] != size:
        image = resize(image, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return np.moveaxis(image, -1, 0).astype(np.float32, copy=False)


def images_from_files(
    paths: Sequence[str | Path],
    *,
    size: int = 64,
    obs: pd.DataFrame | None = None,
    obsm_key: str = IMAGE_KEY,
    root: str | Path | None = None,
    dtype: str = "uint8",
    background: str = "border",
) -> ad.AnnData:
    """Read image files into an image modality of square, equally sized images.

    Each file is read with ``skimage.io.imread``; intensities are scaled to [0, 1] by the
    range of the file's dtype (``skimage.util.img_as_float32``: 8-bit by 255, 16-bit by
    65535; rescale images that use a small part of that range beforehand). A grey image
    becomes one channel, an RGB image three; an RGBA image loses its alpha channel. All files
    must end up with the same number of channels. Each image is padded to a square (centred;
    see ``background``), then resized to ``size`` x ``size`` (bilinear, anti-aliased when
    shrinking) and stored channels first.

    Parameters
    ----------
    paths
        Image files, one per cell, in order.
    size
        Side of the stored square images, in pixels.
    obs
        Cell annotations, one row per file; its index (as strings, unique) names the cells.
        Default: the file names without extension, or the paths as given when names repeat
        (with suffixes ``-1``, ``-2``, ... for a file listed twice).
    obsm_key
        Key of the image array in ``.obsm``.
    root
        Directory the ``paths`` are relative to (default: as given).
    dtype
        ``"uint8"`` (0..255, 4x smaller) or ``"float32"`` (values in [0, 1]).
    background
        Padding value: ``"border"``, each channel's median over the image's outermost pixel
        ring (the background around the cell, no hard edge), or ``"zero"``.

    Returns
    -------
    :class:`~anndata.AnnData`
        The image modality, with ``n_obs = len(paths)``:

        - ``.X``: an empty (n, 0) float32 matrix;
        - ``.obs``: ``obs`` (or an empty frame named by file) plus ``"image_path"``, the path
          read;
        - ``.obsm[obsm_key]``: images (n, channels, size, size) of ``dtype``;
        - ``.uns["image"]``: ``{"size", "channels", "dtype", "source": "files", "obsm_key",
          "background"}``.

    Raises
    ------
    FileNotFoundError
        Listing the files that do not exist.
    ValueError
        Naming a file that cannot be read, has an unsupported shape, or has a channel count
        different from the first file's.
    """
    size = _check_size(size)
    _check_choice(dtype, DTYPES, "dtype")
    _check_choice(background, BACKGROUNDS, "background")
    files = _resolve_paths(paths, root)
    stems = [p.stem for p in files]
    default_names = stems if len(set(stems)) == len(stems) else [str(p) for p in paths]
    default_names = ad.utils.make_index_unique(pd.Index(default_names))  # a file listed twice
    obs = _obs_frame(obs, len(files), default_names)
    images = None
    for i, path in enumerate(files):
        image = _read_image(path)
        if images is None:
            images = np.empty((len(files), image.shape[-1], size, size), dtype=dtype)
        elif image.shape[-1] != images.shape[1]:
            raise ValueError(
                f"Image file {str(path)!r} has {image.shape[-1]} channel(s), but the first file "
                f"{str(files[0])!r} has {images.shape[1]}; all images need the same channels."
            )
        images[i] = _to_dtype(_square_resize(image, size, background, repr(str(path))), dtype)
    obs["image_path"] = [str(p) for p in files]
    adata = _image_anndata(images, obs, obsm_key, "files", background=background)
    logger.info("read %d images (%s) into obsm[%r]", len(files), images.shape[1:], obsm_key)
    return adata


# --- crops around cells in a whole image ---------------------------------------------------


def _check_whole_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim != 3:
        raise ValueError(
            f"image has shape {image.shape}; expected (H, W) or channels-last (H, W, C)."
        )
    if image.shape[0] <= 4 < image.shape[-1]:
        raise ValueError(
            f"image has shape {image.shape}, which looks channels-first; channels must be last "
            "(H, W, C), as skimage reads them: pass np.moveaxis(image, 0, -1)."
        )
    return image


def _check_centroids(centroids, image_shape: tuple) -> np.ndarray:
    centroids = np.asarray(centroids, dtype=float)
    if centroids.ndim != 2 or centroids.shape[1] != 2:
        raise ValueError(
            f"centroids has shape {centroids.shape}; expected (n_cells, 2) (row, col) pairs."
        )
    if not np.isfinite(centroids).all():
        raise ValueError("centroids contain NaN or infinite values.")
    height, width = image_shape[:2]
    rows, cols = np.rint(centroids[:, 0]), np.rint(centroids[:, 1])
    outside = np.flatnonzero((rows < 0) | (rows >= height) | (cols < 0) | (cols >= width))
    if len(outside):
        i = outside[0]
        raise ValueError(
            f"{len(outside)} centroid(s) lie outside the image ({height} x {width}), e.g. "
            f"centroid {i}: (row, col) = ({centroids[i][0]:g}, {centroids[i][1]:g}). "
            "Centroids are (row, col), as "
            "skimage.measure.regionprops gives them, not (x, y)."
        )
    return centroids


def _crop(image: np.ndarray, row: int, col: int, size: int) -> tuple[np.ndarray, bool]:
    """(size, size, C) window whose pixel (size // 2, size // 2) is (row, col); zero-padded."""
    height, width = image.shape[:2]
    top, left = row - size // 2, col - size // 2
    out = np.zeros((size, size, image.shape[-1]), dtype=image.dtype)
    r0, r1 = max(top, 0), min(top + size, height)
    c0, c1 = max(left, 0), min(left + size, width)
    out[r0 - top : r1 - top, c0 - left : c1 - left] = image[r0:r1, c0:c1]
    padded = (r0, c0, r1, c1) != (top, left, top + size, left + size)
    return out, padded


def crops_from_image(
    image: np.ndarray,
    centroids,
    *,
    size: int = 64,
    obs: pd.DataFrame | None = None,
    obsm_key: str = IMAGE_KEY,
    dtype: str = "uint8",
) -> ad.AnnData:
    """Cut a ``size`` x ``size`` crop around each cell of a whole image into an image modality.

    Crops are not resized. A cell near the image border gets a zero-padded crop (it is kept,
    not dropped) and is flagged in ``obs["crop_padded"]``.

    Parameters
    ----------
    image
        The whole image, (H, W) or channels-last (H, W, C), as ``skimage.io.imread`` reads
        it (stack single-channel files with ``np.stack(..., axis=-1)``). Intensities are
        scaled to [0, 1] by the range of its dtype (``skimage.util.img_as_float32``), crop by
        crop; a float image must already lie in [0, 1].
    centroids
        (n_cells, 2) array of (row, col) pixel coordinates, e.g. the ``centroid`` of
        ``skimage.measure.regionprops``; rounded to the nearest pixel, which becomes pixel
        (size // 2, size // 2) of the crop.
    size
        Side of the crops, in pixels.
    obs
        Cell annotations, one row per centroid; its index (strings, unique) names the cells.
        Default: ``"crop_0"``, ``"crop_1"``, ...
    obsm_key
        Key of the crop array in ``.obsm``.
    dtype
        ``"uint8"`` (0..255) or ``"float32"`` ([0, 1]). A uint8 image cropped to uint8 is
        copied exactly.

    Returns
    -------
    :class:`~anndata.AnnData`
        The image modality, with one cell per centroid:

        - ``.X``: an empty (n, 0) float32 matrix;
        - ``.obs``: ``obs`` plus ``"centroid_row"``, ``"centroid_col"`` (as given) and
          ``"crop_padded"`` (bool: part of the crop lay outside the image and is 0);
        - ``.obsm[obsm_key]``: crops (n, C, size, size) of ``dtype``;
        - ``.uns["image"]``: ``{"size", "channels", "dtype", "source": "crops", "obsm_key"}``.

    Raises
    ------
    ValueError
        For an image that is not (H, W) or (H, W, C), centroids not of shape (n, 2) or
        outside the image (which usually means (x, y) was passed instead of (row, col)).
    """
    size = _check_size(size)
    _check_choice(dtype, DTYPES, "dtype")
    image = _check_whole_image(image)
    centroids = _check_centroids(centroids, image.shape)
    obs = _obs_frame(obs, len(centroids), [f"crop_{i}" for i in range(len(centroids))])
    crops = np.empty((len(centroids), image.shape[-1], size, size), dtype=dtype)
    padded = np.zeros(len(centroids), dtype=bool)
    exact = dtype == "uint8" and image.dtype == np.uint8
    for i, (row, col) in enumerate(np.rint(centroids).astype(int)):
        crop, padded[i] = _crop(image, row, col, size)
        if not exact:
            crop = _to_dtype(_to_float(crop, f"crop {i}"), dtype)
        crops[i] = np.moveaxis(crop, -1, 0)
    obs["centroid_row"], obs["centroid_col"] = centroids[:, 0], centroids[:, 1]
    obs["crop_padded"] = padded
    adata = _image_anndata(crops, obs, obsm_key, "crops")
    logger.info("cut %d crops (%d padded) into obsm[%r]", len(crops), padded.sum(), obsm_key)
    return adata


# --- pairing omics cells with images by label ----------------------------------------------


def _column(frame: pd.DataFrame, key: str, where: str) -> pd.Series:
    if key not in frame.columns:
        columns = [str(c) for c in frame.columns]
        raise KeyError(
            f"Column {key!r} not found in {where} (columns: {columns})." + suggest(key, columns)
        )
    return frame[key]


def _labels(frame: pd.DataFrame, key: str, where: str) -> pd.Series:
    """Labels as strings, NaN kept as missing."""
    values = _column(frame, key, where).to_numpy(dtype=object)
    return pd.Series(
        [None if pd.isna(x) else str(x) for x in values], index=frame.index, dtype=object
    )


def _groups(groups, frame: pd.DataFrame, where: str) -> np.ndarray:
    """Group of each row as strings: a column name of ``frame`` or one value per row."""
    if isinstance(groups, str):
        groups = _column(frame, groups, where)
    groups = np.asarray(groups)
    if groups.shape != (len(frame),):
        raise ValueError(
            f"Groups for {where} have shape {groups.shape}; expected one value per row "
            f"({len(frame)},), or the name of a column of {where}."
        )
    return groups.astype(str)


def _check_mapping(mapping: Mapping, cell_labels: pd.Series, image_labels: pd.Series) -> dict:
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(
            "mapping must be a non-empty dict from cell type to image class, e.g. "
            "{'CD14+ Mono': 'Monocyte'}."
        )
    mapping = {str(k): str(v) for k, v in mapping.items()}
    classes = sorted(image_labels.dropna().unique())
    for cell_type, image_class in mapping.items():
        if image_class not in classes:
            raise ValueError(
                f"mapping[{cell_type!r}] = {image_class!r} is not an image class (image "
                f"classes: {classes})." + suggest(image_class, classes)
            )
    types = sorted(cell_labels.dropna().unique())
    absent = [t for t in mapping if t not in types]
    if len(absent) == len(mapping):
        raise ValueError(
            f"No cell has a type listed in mapping ({examples(list(mapping))}); cell types: "
            f"{examples(types)}." + suggest(absent[0], types)
        )
    for cell_type in absent:
        warn(f"mapping names cell type {cell_type!r}, which no cell has."
             + suggest(cell_type, types))
    return mapping


def _balanced_draw(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """``n`` draws from ``pool``: without replacement while it lasts, then whole reshuffles.

    Every image of the pool is used ``n // len(pool)`` or ``n // len(pool) + 1`` times.
    """
    rounds = -(-n // len(pool))
    order = np.concatenate([rng.permutation(pool) for _ in range(rounds)])
    return order[:n]


def _draw_images(
    cell_class: pd.Series,
    image_labels: pd.Series,
    cell_groups: np.ndarray,
    image_groups: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Image index per cell (-1: no image), drawn per (group, class) in sorted order."""
    source = np.full(len(cell_class), -1, dtype=np.int64)
    cls, img_cls = cell_class.to_numpy(), image_labels.to_numpy()
    paired = cell_class.notna().to_numpy()
    for group in sorted({str(g) for g in cell_groups[paired]}):
        for image_class in sorted({str(c) for c in cls[paired & (cell_groups == group)]}):
            cells = np.flatnonzero(paired & (cell_groups == group) & (cls == image_class))
            pool = np.flatnonzero((img_cls == image_class) & (image_groups == group))
            if len(pool) == 0:
                raise ValueError(
                    f"No image of class {image_class!r} in image group {group!r}, but "
                    f"{len(cells)} cell(s) of group {group!r} map to it; give that group images "
                    "of every class its cells need, or drop the class from mapping."
                )
            source[cells] = _balanced_draw(rng, pool, len(cells))
    return source


def _paired_modality(
    images: ad.AnnData, source: np.ndarray, names: pd.Index, obsm_key: str,
    image_labels: pd.Series,
) -> ad.AnnData:
    obs = pd.DataFrame(index=names)
    obs["image_index"] = source
    obs["image_name"] = np.asarray(images.obs_names[source], dtype=str)
    obs["image_label"] = pd.Categorical(image_labels.to_numpy()[source])
    if "image_path" in images.obs:
        obs["image_path"] = np.asarray(images.obs["image_path"].to_numpy()[source], dtype=str)
    adata = ad.AnnData(X=np.zeros((len(names), 0), dtype=np.float32), obs=obs)
    adata.obsm[obsm_key] = images.obsm[obsm_key][source]  # same dtype as the source images
    adata.uns["image"] = {**dict(images.uns.get("image", {})), "obsm_key": obsm_key}
    return adata


def pair_images_by_label(
    mdata: MuData,
    images: ad.AnnData,
    mapping: Mapping[str, str],
    *,
    labels_key: str = "cell_type",
    image_labels_key: str = "label",
    cell_groups: str | Sequence | None = None,
    image_groups: str | Sequence | None = None,
    seed: int = 0,
    modality: str = "image",
    obsm_key: str = IMAGE_KEY,
) -> MuData:
    """Give each omics cell an image of its class, drawn at random: pairing by label.

    This is how the study this package starts from built a 3-modality data set (CITE-seq
    cells and images of other cells): a cell whose type maps to an image class gets a
    random image of that class. **The image then carries the cell's label by
    construction**: any gain in accuracy from the image modality is an upper bound, not
    evidence that images of real cells would help. Use it to exercise the image branch, and
    keep training and test images apart (``cell_groups`` / ``image_groups``).

    Draws are without replacement while a class's images last: when more cells need a class
    than it has images, whole reshuffled passes over its images follow, so each image is
    used ``k // m`` or ``k // m + 1`` times (k cells, m images). Cells are paired in the
    order of ``mdata.obs_names``, per (group, class) in sorted order, so a seed gives the
    same pairing every time.

    Parameters
    ----------
    mdata
        Omics cells (e.g. CITE-seq with ``"rna"`` and ``"prot"``); not modified.
    images
        Image modality, e.g. from :func:`images_from_files`, with one image class per
        image in ``images.obs[image_labels_key]``.
    mapping
        Cell type -> image class, e.g. ``{"CD14+ Mono": "Monocyte", "NK": "Lymphocyte"}``.
        Cells whose type is not a key (or is missing) get no image: they stay in the
        returned MuData, absent from the image modality.
    labels_key
        Column of ``mdata.obs`` with the cell types.
    image_labels_key
        Column of ``images.obs`` with the image classes.
    cell_groups, image_groups
        Both or neither: a group per cell and per image (a column name of ``mdata.obs`` /
        ``images.obs`` or one value per row; compared as strings). A cell draws only
        images of its own group, e.g. training cells get training images and test cells
        test images, never shared when the image groups are disjoint.
    seed
        Seed of the draws (``numpy.random.default_rng``).
    modality
        Name of the image modality added; must not exist in ``mdata``.
    obsm_key
        Key of the image array in ``images.obsm``, and in the new modality's ``.obsm``.

    Returns
    -------
    :class:`~mudata.MuData`
        A new MuData: copies of ``mdata``'s modalities, ``.obs`` and ``.uns``, plus

        - ``mod[modality]``: the paired cells (named as in ``mdata``, in its order) with
          ``.obsm[obsm_key]`` their images (same dtype as ``images``, no float copy), an
          empty ``.X`` and ``.obs`` columns ``"image_index"`` (row of ``images``),
          ``"image_name"``, ``"image_label"`` and ``"image_path"`` (when ``images.obs`` has
          it);
        - ``.uns["image_pairing"]``: ``seed``, ``mapping`` (``cell_types`` and
          ``image_classes``, two arrays in the order of ``mapping``), ``modality``,
          ``labels_key``, ``image_labels_key``, ``obsm_key``, ``grouped`` and, per paired
          cell (in the image modality's order), ``cells``, ``source_index``, ``source_name``
          and ``source_path`` (when known), and ``n_reused``, the draws of an image already
          drawn.

    Raises
    ------
    KeyError
        For an absent label or group column (with close matches).
    ValueError
        For an image class in ``mapping`` that no image has, no cell of a mapped type, a
        (group, class) without images, one of the group arguments without the other, or an
        existing ``modality``.
    """
    if not isinstance(mdata, MuData):
        raise TypeError(f"Expected a MuData object, got {type(mdata).__name__}.")
    if not isinstance(images, ad.AnnData):
        raise TypeError(f"images must be an AnnData (image modality), got {type(images).__name__}.")
    if modality in mdata.mod:
        raise ValueError(
            f"mdata already has a modality {modality!r} (modalities: {list(mdata.mod)}); pass "
            "another name with modality=..."
        )
    if (cell_groups is None) != (image_groups is None):
        raise ValueError("Pass both cell_groups and image_groups, or neither.")
    check_image_modality(images, obsm_key)
    cell_labels = _labels(mdata.obs, labels_key, "mdata.obs")
    image_labels = _labels(images.obs, image_labels_key, "images.obs")
    mapping = _check_mapping(mapping, cell_labels, image_labels)
    grouped = cell_groups is not None
    cell_groups = _groups(cell_groups, mdata.obs, "mdata.obs") if grouped else np.full(
        mdata.n_obs, "all"
    )
    image_groups = _groups(image_groups, images.obs, "images.obs") if grouped else np.full(
        images.n_obs, "all"
    )
    rng = np.random.default_rng(seed)
    source = _draw_images(cell_labels.map(mapping), image_labels, cell_groups, image_groups, rng)
    paired = source >= 0
    source = source[paired]
    names = mdata.obs_names[paired]
    image_mod = _paired_modality(images, source, names, obsm_key, image_labels)
    new = copy_mudata(mdata)
    with mudata_options():
        new.mod[modality] = image_mod
        new.update()
    record = {
        "seed": int(seed),
        # two arrays, not a dict keyed by cell type: keys such as "MK/E prog" cannot be
        # written to h5mu, and the names stay as the user gave them
        "mapping": {"cell_types": np.asarray(list(mapping), dtype=str),
                    "image_classes": np.asarray(list(mapping.values()), dtype=str)},
        "modality": modality, "labels_key": labels_key,
        "image_labels_key": image_labels_key, "obsm_key": obsm_key, "grouped": grouped,
        "cells": np.asarray(names, dtype=str), "source_index": source,
        "source_name": image_mod.obs["image_name"].to_numpy(dtype=str),
        "n_reused": int(len(source) - len(np.unique(source))),
    }
    if "image_path" in image_mod.obs:
        record["source_path"] = image_mod.obs["image_path"].to_numpy(dtype=str)
    new.uns["image_pairing"] = record
    logger.info(
        "paired %d of %d cells with images (%d reused draws) in mod[%r]",
        len(source), mdata.n_obs, record["n_reused"], modality,
    )
    return new
