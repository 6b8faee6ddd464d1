"""Checks on an image modality: an AnnData whose ``.obsm`` holds (n_cells, channels, H, W)."""

from __future__ import annotations

import numpy as np

from ._validation import suggest

#: Default ``.obsm`` key of the image array in an image modality.
IMAGE_KEY = "image"

#: Images scanned at a time for NaN and range checks (bounds the temporary memory).
_CHUNK = 1024


def check_image_modality(adata, obsm_key: str = IMAGE_KEY, *, channels: int | None = None):
    """Check that ``adata.obsm[obsm_key]`` is an image array the model can read; return it.

    An image modality stores its images as one array (n_cells, channels, H, W) in ``.obsm``,
    either ``uint8`` (0..255) or float in [0, 1] (``float32``: float64 works but takes 8 times
    the memory of ``uint8``); the model converts them to float per minibatch. Other integer
    types are accepted when their values lie in 0..255.

    Parameters
    ----------
    adata
        The image modality (an AnnData, or any object with ``.obsm`` and ``.n_obs``).
    obsm_key
        Key of the image array in ``adata.obsm``.
    channels
        Expected number of channels (e.g. the number the model was trained with); ``None``:
        any.

    Returns
    -------
    The image array, unchanged (not copied).

    Raises
    ------
    KeyError
        If ``obsm_key`` is not in ``adata.obsm`` (lists the keys present).
    TypeError
        For a non-numeric or boolean dtype.
    ValueError
        For an array that is not 4-D, a channel count other than ``channels``, a first axis
        that does not match ``n_obs``, NaN or infinite values, or values out of range.
    """
    images = _get_images(adata, obsm_key)
    where = f"obsm[{obsm_key!r}]"
    _check_shape(images, where, channels, adata.n_obs)
    _check_dtype(images, where)
    _check_values(images, where)
    return images


def _get_images(adata, obsm_key: str):
    keys = [str(k) for k in adata.obsm.keys()]
    if obsm_key not in adata.obsm:
        raise KeyError(
            f"No image array under obsm[{obsm_key!r}] (obsm keys: {keys}); pass the key that "
            "holds the (n_cells, channels, H, W) array." + suggest(obsm_key, keys)
        )
    images = adata.obsm[obsm_key]
    if not (hasattr(images, "shape") and hasattr(images, "dtype")) or hasattr(images, "columns"):
        raise TypeError(
            f"obsm[{obsm_key!r}] is a {type(images).__name__}, not an array; store the images "
            "as a numpy array (n_cells, channels, H, W)."
        )
    return images


def _check_shape(images, where: str, channels: int | None, n_obs: int) -> None:
    shape = tuple(images.shape)
    if len(shape) != 4:
        hint = (
            " For single-channel images add a channel axis: images[:, None]."
            if len(shape) == 3 else ""
        )
        raise ValueError(
            f"{where} has shape {shape} ({len(shape)}-D); expected 4-D "
            f"(n_cells, channels, H, W).{hint}"
        )
    if channels is not None and shape[1] != channels:
        hint = (
            " The channels look last: move them with np.moveaxis(images, -1, 1)."
            if shape[3] == channels else ""
        )
        raise ValueError(
            f"{where} has {shape[1]} channel(s) (shape {shape}, channels on axis 1); expected "
            f"{channels}.{hint}"
        )
    if shape[0] != n_obs:
        raise ValueError(
            f"{where} holds {shape[0]} images (shape {shape}) but the modality has {n_obs} "
            "cells (n_obs); there must be one image per cell, in obs order."
        )


def _check_dtype(images, where: str) -> None:
    dtype = np.dtype(images.dtype)
    if dtype.kind == "b":
        raise TypeError(
            f"{where} is boolean; a mask is not an image: store intensities, e.g. "
            "images.astype(np.uint8) * 255."
        )
    if dtype.kind not in "uif":
        raise TypeError(
            f"{where} has non-numeric dtype {dtype}; store uint8 (0..255) or float32 in [0, 1]."
        )


def _check_values(images, where: str) -> None:
    if np.dtype(images.dtype) == np.uint8 or images.shape[0] == 0:
        return  # 0..255 by construction
    is_float = np.issubdtype(images.dtype, np.floating)
    n_bad, low, high = 0, np.inf, -np.inf
    for start in range(0, images.shape[0], _CHUNK):
        chunk = np.asarray(images[start : start + _CHUNK])
        if is_float:
            finite = np.isfinite(chunk)
            n_bad += int(chunk.size - finite.sum())
            chunk = chunk[finite]
        if chunk.size:
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if n_bad:
        raise ValueError(
            f"{where} contains {n_bad} NaN or infinite value(s); fix or drop those images."
        )
    bounds, hint = ((0.0, 1.0), "divide 8-bit intensities by 255") if is_float else (
        (0, 255), "rescale to 0..255 and store as uint8"
    )
    if low < bounds[0] or high > bounds[1]:
        raise ValueError(
            f"{where} ({images.dtype}) has values in [{low:g}, {high:g}], outside "
            f"[{bounds[0]}, {bounds[1]}]; {hint} (or build the modality with "
            "mmdyn_sc.pp.images_from_files / crops_from_image)."
        )


#: ``.obsm`` key of the images in the model's private aligned copy (whatever the user's key).
ALIGNED_IMAGE_KEY = "image"


def image_spec(images, obsm_key: str) -> dict:
    """What a model records about an image modality: ``obsm_key``, ``channels``, ``image_size``."""
    return {"obsm_key": obsm_key, "channels": int(images.shape[1]),
            "image_size": int(images.shape[2])}


def check_image_size(images, where: str, image_size: int | None = None) -> None:
    """Raise unless the images are square and, when given, ``image_size`` pixels per side."""
    height, width = int(images.shape[2]), int(images.shape[3])
    if height != width:
        raise ValueError(
            f"{where} holds {height} x {width} images; the model needs square images (resize "
            "or pad them, e.g. with mmdyn_sc.pp.images_from_files(..., size=64))."
        )
    if image_size is not None and height != image_size:
        raise ValueError(
            f"{where} holds {height} x {width} images but the model was trained on "
            f"{image_size} x {image_size}; bring them to that size (e.g. "
            f"mmdyn_sc.pp.images_from_files(..., size={image_size}))."
        )


def image_storage(images) -> np.ndarray:
    """Images as the model stores them: ``uint8`` or ``float32``, shared when already so.

    float64 is converted to float32 in chunks (never a whole float64 copy); other integer
    types (checked to lie in 0..255 by :func:`check_image_modality`) become ``uint8``.
    """
    dtype = np.dtype(images.dtype)
    if dtype in (np.uint8, np.float32) and isinstance(images, np.ndarray):
        return images
    target = np.float32 if dtype.kind == "f" else np.uint8
    out = np.empty(images.shape, dtype=target)
    for start in range(0, images.shape[0], _CHUNK):
        out[start : start + _CHUNK] = np.asarray(images[start : start + _CHUNK])
    return out


def reindex_images(images: np.ndarray, rows: np.ndarray, n_cells: int) -> np.ndarray:
    """Images placed at the global cells' positions; zero images where ``rows < 0``."""
    present = rows >= 0
    out = np.zeros((n_cells, *images.shape[1:]), dtype=images.dtype)
    out[present] = images[rows[present]]
    return out


def absent_images(n_cells: int, channels: int, image_size: int) -> np.ndarray:
    """A read-only all-zero image array (n_cells, C, S, S) that takes no memory per cell."""
    return np.broadcast_to(np.zeros((1, channels, image_size, image_size), dtype=np.uint8),
                           (n_cells, channels, image_size, image_size))
