"""Seeding a fit without touching the user's random state."""

from __future__ import annotations

import numbers
import random
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def kept_random_state():
    """Give back the caller's torch (CPU and CUDA), NumPy and Python random states on exit.

    Whatever the block draws (dropout, minibatch order, the seed a torch ``DataLoader``
    draws for every pass), the user's session then draws the same numbers as without it.
    """
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def check_seed(seed) -> None:
    """Raise a named error unless ``seed`` is ``None`` or an integer NumPy can seed with."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or not 0 <= seed < 2**32):
        raise ValueError(f"seed must be None or an integer from 0 to 2**32 - 1, got {seed!r}.")


@contextmanager
def local_seed(seed: int | None):
    """Seed torch and NumPy inside the block; the caller's random state is given back after.

    Inside, torch's and NumPy's global generators are seeded with ``seed`` (what Lightning,
    dropout and scvi-tools' minibatch sampler draw from), so a fit is bit-identical per seed;
    see :func:`kept_random_state` for the exit. ``seed=None`` leaves the global state as it
    is and uses it.
    """
    check_seed(seed)
    if seed is None:
        yield
        return
    with kept_random_state():
        torch.manual_seed(int(seed))
        np.random.seed(int(seed))
        yield
