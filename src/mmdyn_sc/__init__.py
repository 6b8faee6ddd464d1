"""mmdyn_sc: multimodal cell classification that explains itself (MM dynamics on MuData).

``import mmdyn_sc`` is fast: the subpackages and :class:`MMDynamics` (scvi-tools, Lightning,
matplotlib) are imported on first use (PEP 562), e.g. by ``mmdyn_sc.tl.fit``.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("mmdyn-sc")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.2.0"

from ._keys import Key
from ._lazy import lazy_attributes
from ._settings import settings

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from . import datasets, pl, pp, tl
    from .model import MMDynamics

#: Public name -> module that defines it, imported on first access.
_LAZY = {
    "datasets": ".datasets",
    "pl": ".pl",
    "pp": ".pp",
    "tl": ".tl",
    "MMDynamics": ".model",
}

__all__ = ["Key", "MMDynamics", "datasets", "pl", "pp", "settings", "tl"]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, ("Key", "settings", "__version__"))
