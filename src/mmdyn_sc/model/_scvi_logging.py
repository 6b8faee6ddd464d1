"""scvi-tools' INFO messages off around the calls that print them for every query."""

from __future__ import annotations

import logging
from contextlib import contextmanager


@contextmanager
def quiet_scvi():
    """scvi-tools' logger at WARNING for the duration; its level is restored after."""
    scvi_logger = logging.getLogger("scvi")
    level = scvi_logger.level
    scvi_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        scvi_logger.setLevel(level)
