"""Preprocessing: per-cell normalisation into layers."""

from ._prepare import prepare

__all__ = ["prepare"]
