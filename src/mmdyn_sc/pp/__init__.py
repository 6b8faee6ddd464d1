"""Preprocessing: per-cell normalisation into layers; image modality helpers."""

from ._images import crops_from_image, images_from_files, pair_images_by_label
from ._prepare import prepare

__all__ = ["crops_from_image", "images_from_files", "pair_images_by_label", "prepare"]
