"""mmdyn_sc: multimodal cell classification that explains itself (MM dynamics on MuData)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mmdyn-sc")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

from . import datasets, pl, pp, tl
from ._keys import Key
from ._settings import settings
from .model import MMDynamics

__all__ = ["Key", "MMDynamics", "datasets", "pl", "pp", "settings", "tl"]
