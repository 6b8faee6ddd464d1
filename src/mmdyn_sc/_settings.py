"""Package settings: where the real datasets live."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming a directory that holds local copies of the datasets.
DATA_DIR_ENV = "MMDYN_SC_DATA_DIR"


class _Settings:
    """Package-wide settings (``mmdyn_sc.settings`` is the one instance of this class).

    Set an attribute to change a setting for the session, e.g.
    ``mmdyn_sc.settings.data_dir = "~/data"``.
    """

    def __init__(self) -> None:
        self._data_dir: Path | None = None

    @property
    def data_dir(self) -> Path:
        """Directory searched first for local dataset copies, and where downloads are cached.

        Order: a value set here, then the environment variable ``MMDYN_SC_DATA_DIR``, then
        ``~/.cache/mmdyn_sc``. Set it to a path (a string or path-like; ``~`` is expanded),
        or to ``None`` to go back to the environment variable and the default.
        """
        if self._data_dir is not None:
            return self._data_dir
        env = os.environ.get(DATA_DIR_ENV)
        if env:
            return Path(env).expanduser()
        return Path.home() / ".cache" / "mmdyn_sc"

    @data_dir.setter
    def data_dir(self, value: str | os.PathLike | None) -> None:
        self._data_dir = None if value is None else Path(value).expanduser()


settings = _Settings()
