"""Alignment of MuData modalities to the global cells, and input validation."""

from ._alignment import (
    CALIBRATION_COLUMN,
    LABELS_COLUMN,
    AlignedData,
    align_mudata,
    presence_column,
)
from ._labels import encode_labels, resolve_labels
from ._validation import check_finite, check_modalities

__all__ = [
    "CALIBRATION_COLUMN",
    "LABELS_COLUMN",
    "AlignedData",
    "align_mudata",
    "check_finite",
    "check_modalities",
    "encode_labels",
    "presence_column",
    "resolve_labels",
]
