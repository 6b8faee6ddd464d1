"""Checkpoints every N epochs and exact resumption of an interrupted fit."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from scvi.train import TrainRunner

from ._quiet import progress_bar_options, quiet_training

#: File name (in the checkpoint directory) of the checkpoint a fit resumes from.
LAST_CHECKPOINT = "last.ckpt"


def _history_state(trainer) -> dict:
    """The training history so far, as plain lists (safe for ``torch.load``).

    A checkpoint is written at the end of a training epoch, after the epoch's metrics were
    computed (``trainer.callback_metrics``) but before the logger records them; they are
    added here.
    """
    logger = getattr(trainer, "logger", None)
    data = getattr(getattr(logger, "experiment", None), "data", None) or {}
    state = {
        name: {"index": [int(i) for i in frame.index],
               "values": [float(v) for v in frame.iloc[:, 0]]}
        for name, frame in data.items()
    }
    epoch = int(trainer.current_epoch)
    for name, value in trainer.callback_metrics.items():
        entry = state.setdefault(name, {"index": [], "values": []})
        if epoch not in entry["index"]:
            entry["index"].append(epoch)
            entry["values"].append(float(value))
    return state


def _restore_history(logger, state: dict) -> None:
    import pandas as pd

    experiment = getattr(logger, "experiment", None)
    if experiment is None or not hasattr(experiment, "data"):
        return
    for name, entry in state.items():
        frame = pd.DataFrame({name: entry["values"]}, index=pd.Index(entry["index"]),
                             dtype=object)
        frame.index.name = "epoch"
        experiment.data[name] = frame


class ResumableState(Callback):
    """Keep in every checkpoint what Lightning does not: random-number states and history.

    Lightning's checkpoint holds the weights, optimizer, scheduler, loop and callback states.
    This callback adds the torch, numpy and Python random-number states (so that minibatch
    order and dropout continue as in an uninterrupted fit), the metrics logged so far, and a
    fingerprint of the fit's settings, checked on resumption.

    Parameters
    ----------
    fingerprint
        Settings that must be equal for a checkpoint to be resumed (str -> str).
    """

    def __init__(self, fingerprint: dict[str, str]):
        self.fingerprint = dict(fingerprint)
        self._pending_history: dict | None = None
        self._trainer = None

    @property
    def state_key(self) -> str:
        return "mmdyn_sc.ResumableState"

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:
        numpy_state = np.random.get_state()
        return {
            "fingerprint": dict(self.fingerprint),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": {
                "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
                "pos": int(numpy_state[2]),
                "has_gauss": int(numpy_state[3]),
                "cached_gaussian": float(numpy_state[4]),
            },
            "python_rng": list(_flatten_python_state(random.getstate())),
            "history": _history_state(self._trainer) if self._trainer is not None else {},
        }

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("fingerprint", {})
        diff = {k: (saved.get(k), v) for k, v in self.fingerprint.items() if saved.get(k) != v}
        if diff:
            details = "; ".join(f"{k}: checkpoint {a!r}, this fit {b!r}" for k, (a, b) in
                                diff.items())
            raise ValueError(
                "The checkpoint was written by a fit with other settings or data, so it "
                f"cannot be resumed: {details}. Use another checkpoint_dir or resume=False."
            )
        torch.set_rng_state(state["torch_rng"])
        np_state = state["numpy_rng"]
        np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32),
                             np_state["pos"], np_state["has_gauss"],
                             np_state["cached_gaussian"]))
        random.setstate(_unflatten_python_state(state["python_rng"]))
        self._pending_history = state.get("history") or {}

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending_history:
            _restore_history(trainer.logger, self._pending_history)
        self._pending_history = None


def _flatten_python_state(state: tuple) -> list:
    version, internal, gauss = state
    return [int(version), *[int(v) for v in internal], -1.0 if gauss is None else float(gauss)]


def _unflatten_python_state(flat: list) -> tuple:
    gauss = None if flat[-1] == -1.0 else float(flat[-1])
    return int(flat[0]), tuple(int(v) for v in flat[1:-1]), gauss


def checkpoint_callbacks(
    directory: str | Path, every_n_epochs: int, fingerprint: dict[str, str]
) -> list[Callback]:
    """Lightning's ModelCheckpoint (``last.ckpt`` every N epochs) and :class:`ResumableState`."""
    if int(every_n_epochs) < 1:
        raise ValueError(f"checkpoint_every_n_epochs must be >= 1, got {every_n_epochs}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = ModelCheckpoint(
        dirpath=directory,
        filename="epoch{epoch:04d}",
        auto_insert_metric_name=False,
        every_n_epochs=int(every_n_epochs),
        save_top_k=1,  # with no monitor: the latest only
        save_last=True,
        # At the end of the training epoch, after its validation and early-stopping check.
        save_on_train_epoch_end=True,
    )
    return [checkpoint, ResumableState(fingerprint)]


def last_checkpoint(directory: str | Path) -> Path | None:
    """``directory/last.ckpt`` when it exists."""
    path = Path(directory) / LAST_CHECKPOINT
    return path if path.is_file() else None


class MMDynamicsTrainRunner(TrainRunner):
    """scvi-tools' TrainRunner, quiet, with callbacks added after the Trainer is built.

    scvi-tools' Trainer replaces ``enable_checkpointing=True`` by its own model-saving
    callback (writing into ``scvi_log`` in the working directory); Lightning's
    ModelCheckpoint is therefore added here, to the Trainer it built.

    Building the Trainer and training run inside :func:`~mmdyn_sc.model._quiet.quiet_training`
    (no device banners or litlogger tip; the loggers' levels are restored afterwards), and the
    progress bar is :class:`~mmdyn_sc.model._quiet.StderrProgressBar`, on stderr.
    """

    def __init__(self, *args, extra_callbacks: list[Callback] | None = None, **kwargs):
        with quiet_training():
            super().__init__(*args, **progress_bar_options(kwargs))
        self.trainer.callbacks.extend(extra_callbacks or [])

    def __call__(self):
        with quiet_training():
            return super().__call__()
