"""Quiet training: one progress bar on stderr, no Lightning banners, the session left alone.

Lightning announces the accelerators ("GPU available: ...", "TPU available: ..."), advertises
its cloud logger ("💡 Tip: ... litlogger") and reports why ``fit`` stopped, all at INFO level
on its own loggers; on torch >= 2.10 its tree utilities also raise a ``FutureWarning`` about
``LeafSpec``. scvi-tools' progress bar writes to stdout. :func:`quiet_training` silences the
first two for the duration of a fit only, restoring the loggers' levels afterwards, and
:func:`progress_bar_options` replaces the bar by :class:`StderrProgressBar`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from lightning.pytorch.callbacks import ProgressBar

#: Loggers whose INFO messages (device banners, the litlogger tip, "fit stopped") are dropped.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                     "lightning_fabric")

#: Warnings raised inside Lightning or scvi-tools by our calls, not by the user's: they name
#: nothing the user can change.
_IGNORED_WARNINGS = (
    # torch >= 2.10 deprecates LeafSpec, which Lightning 2.6 still uses for every batch.
    (FutureWarning, r".*isinstance\(treespec, LeafSpec\).*"),
)


@contextmanager
def quiet_training() -> Iterator[None]:
    """Lightning's INFO messages and its known deprecation notices off, for the block only.

    What is printed inside the block (scvi-tools prints why early stopping stopped) goes to
    stderr, so that stdout stays the user's.

    Each logger of :data:`LIGHTNING_LOGGERS` whose effective level lets INFO through is set
    to WARNING inside the block and reset to its own level afterwards (also on error); a
    user who set one to WARNING or above is not touched. Warnings and errors still show.
    """
    changed = []
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            changed.append((logger, logger.level))
            logger.setLevel(logging.WARNING)
    try:
        # scvi-tools' early stopping prints its reason to stdout: it goes to stderr with the bar
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            for category, message in _IGNORED_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        for logger, level in changed:
            logger.setLevel(level)


def _tqdm_class():
    # As Lightning's own bar: the notebook widget only where ipywidgets can draw it (else
    # tqdm.auto warns and falls back anyway); plain text redraws one line in Jupyter too.
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm


class StderrProgressBar(ProgressBar):
    """One bar over the epochs, on stderr (scvi-tools' simple bar writes to stdout).

    It shows the epoch and the metrics of the last epoch, like scvi-tools' bar, and keeps
    stdout free for what a user pipes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self.bar = None

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def __getstate__(self):  # tqdm objects cannot be pickled (DDP spawns)
        state = self.__dict__.copy()
        state["bar"] = None
        return state

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self.is_enabled:
            self.bar = _tqdm_class()(total=trainer.max_epochs, desc="Training", file=sys.stderr,
                                     dynamic_ncols=True, leave=True,
                                     initial=trainer.current_epoch)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self.bar is not None:
            self.bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.bar is not None:
            self.bar.update()
            metrics = self.get_metrics(trainer, pl_module)
            metrics.pop("v_num", None)  # the logger's version number, meaningless here
            self.bar.set_postfix(metrics)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()


def progress_bar_options(trainer_kwargs: dict) -> dict:
    """``trainer_kwargs`` with scvi-tools' stdout bar replaced by :class:`StderrProgressBar`.

    Left as given when the bar is off (``enable_progress_bar=False``), when the caller asked
    for Lightning's own bar (``simple_progress_bar=False``) or passed a progress-bar callback.
    """
    options = dict(trainer_kwargs)
    callbacks = list(options.get("callbacks") or [])
    if (not options.get("enable_progress_bar", True)
            or not options.get("simple_progress_bar", True)
            or any(isinstance(c, ProgressBar) for c in callbacks)):
        return options
    options["simple_progress_bar"] = False
    options["callbacks"] = [*callbacks, StderrProgressBar()]
    return options
