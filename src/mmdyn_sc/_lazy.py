"""Import a package's public names on first use (PEP 562), so that ``import mmdyn_sc`` is fast."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module


def lazy_attributes(package: str, names: Mapping[str, str], extra_dir: tuple[str, ...] = ()
                    ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package with lazy public names.

    Parameters
    ----------
    package
        The package's ``__name__``.
    names
        Public name -> module (relative to ``package``) that defines it; a name equal to the
        module's last part is the module itself (``{"pl": ".pl"}``).
    extra_dir
        Names ``dir()`` lists besides ``names`` (those defined eagerly).

    Returns
    -------
    ``(__getattr__, __dir__)``: the first imports a name's module on first access and keeps
    the value in the package's namespace; unknown names raise ``AttributeError``.
    """
    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = import_module(names[name], package)
        value = module if module.__name__.endswith(f".{name}") else getattr(module, name)
        setattr(import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*names, *extra_dir})

    return __getattr__, __dir__
