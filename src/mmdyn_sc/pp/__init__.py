"""Preprocessing: per-cell normalisation into layers; image modality helpers.

The functions are imported on first use (PEP 562 ``__getattr__``).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from ._images import crops_from_image, images_from_files, pair_images_by_label
    from ._prepare import prepare
    from ._protein_background import protein_background

#: Public name -> module that defines it, imported on first access.
_LAZY = {
    "crops_from_image": "._images",
    "images_from_files": "._images",
    "pair_images_by_label": "._images",
    "prepare": "._prepare",
    "protein_background": "._protein_background",
}

__all__ = [
    "crops_from_image",
    "images_from_files",
    "pair_images_by_label",
    "prepare",
    "protein_background",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
