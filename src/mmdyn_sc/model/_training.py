"""Training an :class:`~mmdyn_sc.MMDynamics`: split, fitted preprocessing, Lightning run."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .._data import CALIBRATION_COLUMN
from .._data._images import ALIGNED_IMAGE_KEY
from .._utils import logger
from . import _registry_keys as rk
from ._checkpoint import checkpoint_callbacks, last_checkpoint
from ._feature_scaling import fit_channel_scaling, fit_scaling
from ._fingerprint import run_fingerprint
from ._recipes import resolve_batch_size
from ._seeding import local_seed
from ._split import calibration_split, stratified_split


def is_ddp_strategy(strategy) -> bool:
    """Whether ``strategy`` (a Lightning strategy name or object) is DDP-like."""
    if strategy is None:
        return False
    if isinstance(strategy, str):
        return "ddp" in strategy.lower()
    from lightning.pytorch.strategies import DDPStrategy

    return isinstance(strategy, DDPStrategy)


def run_training(
    model, *, max_epochs, lr, weight_decay, lr_step_size, lr_gamma, batch_size, train_size,
    calibration_size, early_stopping, early_stopping_patience, early_stopping_monitor, seed,
    accelerator, devices, checkpoint_dir, checkpoint_every_n_epochs, resume,
    datasplitter_kwargs, plan_kwargs, trainer_kwargs, train_only_cells=None,
) -> None:
    """The body of :meth:`~mmdyn_sc.MMDynamics.train` (see there for the options)."""
    if max_epochs is None or int(max_epochs) < 1:
        raise ValueError(f"max_epochs must be a positive integer, got {max_epochs}.")
    batch_size = resolve_batch_size(batch_size, bool(model.images_))  # before any work
    labels = model.label_codes
    if (labels >= 0).sum() == 0:
        raise ValueError("No labelled cells to train on.")
    split_seed = 0 if seed is None else int(seed)
    train_only = check_train_only_cells(train_only_cells, labels)
    split_labels = labels.copy()
    split_labels[train_only] = -1  # validated on cells with real labels only
    train_idx, val_idx = stratified_split(split_labels, train_size, split_seed,
                                          classes=model.classes_)
    train_idx = np.union1d(train_idx, train_only).astype(int)
    # Held-out calibration cells (tcp_calibrated) come from cells with the user's labels only.
    calibration_idx = mark_calibration_cells(model, labels, np.setdiff1d(train_idx, train_only),
                                             calibration_size, split_seed)
    has_none = ~model._present[train_idx].any(axis=1)
    if has_none.any():
        raise ValueError(
            f"{int(has_none.sum())} training cell(s) have none of the modalities "
            f"{model.modalities_}."
        )
    fit_preprocessing(model, train_idx)
    if batch_size is None:
        batch_size = len(train_idx)
    add_early_stopping(trainer_kwargs, early_stopping, early_stopping_patience,
                       early_stopping_monitor, has_validation=len(val_idx) > 0)
    train_params = {
        "max_epochs": int(max_epochs), "lr": lr, "weight_decay": weight_decay,
        "lr_step_size": lr_step_size, "lr_gamma": lr_gamma, "batch_size": int(batch_size),
        "train_size": train_size, "calibration_size": calibration_size,
        "early_stopping": early_stopping,
        "early_stopping_patience": early_stopping_patience, "seed": seed,
    }
    add_checkpointing(model, trainer_kwargs, checkpoint_dir, checkpoint_every_n_epochs,
                      resume, train_idx, val_idx, train_params)
    datasplitter_kwargs = {**model._loader_kwargs(model.adata), **(datasplitter_kwargs or {})}
    if is_ddp_strategy(trainer_kwargs.get("strategy")):
        # Without it, Lightning would replace scvi-tools' batch sampler by one of single
        # cells; with it, each process draws whole minibatches of its own share.
        datasplitter_kwargs.setdefault("distributed_sampler", True)
    with local_seed(seed):
        data_splitter = model._data_splitter_cls(
            model.adata_manager,
            # scvi-tools wants every cell in one of the sets: unlabeled cells form the
            # "test" set, which training never reads.
            external_indexing=[train_idx, val_idx, np.flatnonzero(labels < 0)],
            batch_size=batch_size,
            **datasplitter_kwargs,
        )
        plan = model._training_plan_cls(
            model.module, n_modalities=len(model.modalities_), lr=lr, weight_decay=weight_decay,
            lr_step_size=lr_step_size, lr_gamma=lr_gamma, **(plan_kwargs or {}),
        )
        runner = model._train_runner_cls(
            model, training_plan=plan, data_splitter=data_splitter, max_epochs=int(max_epochs),
            accelerator=accelerator, devices=devices, **trainer_kwargs,
        )
        with warnings.catch_warnings():
            if resume:  # the directory holds the checkpoints being resumed
                warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*Last batch will have a small size.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            runner()
    model._global_rank = int(runner.trainer.global_rank)
    model.train_indices = np.asarray(train_idx)
    model.validation_indices = np.asarray(val_idx)
    model.calibration_indices = calibration_idx
    model.train_params_ = train_params


def check_train_only_cells(cells, labels: np.ndarray) -> np.ndarray:
    """``train_only_cells`` as sorted unique indices of labelled cells (checked)."""
    if cells is None:
        return np.array([], dtype=int)
    cells = np.asarray(cells)
    if cells.dtype == bool or not np.issubdtype(cells.dtype, np.integer):
        raise TypeError("train_only_cells must be integer indices of cells, got an array of "
                        f"dtype {cells.dtype}.")
    cells = np.unique(cells)
    if len(cells) and (cells[0] < 0 or cells[-1] >= len(labels)):
        raise IndexError(f"train_only_cells must index the {len(labels)} cells.")
    if (labels[cells] < 0).any():
        raise ValueError("train_only_cells must be labelled cells; "
                         f"{int((labels[cells] < 0).sum())} have no label.")
    return cells


def add_early_stopping(trainer_kwargs: dict, early_stopping: bool, patience: int,
                       monitor: str, has_validation: bool) -> None:
    """Early-stopping and validation options for scvi-tools' Trainer (those not given)."""
    if early_stopping and not has_validation and monitor.startswith("validation"):
        monitor = monitor.replace("validation", "train", 1)
    trainer_kwargs.setdefault("early_stopping", early_stopping)
    trainer_kwargs.setdefault("early_stopping_monitor", monitor)
    trainer_kwargs.setdefault("early_stopping_patience", patience)
    trainer_kwargs.setdefault("early_stopping_mode",
                              "max" if "f1" in monitor or "accuracy" in monitor else "min")
    if has_validation:
        trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
    else:
        trainer_kwargs.setdefault("limit_val_batches", 0)


def mark_calibration_cells(model, labels: np.ndarray, train_idx: np.ndarray, size: float,
                           seed: int) -> np.ndarray:
    """Choose the held-out calibration cells and flag them in the aligned copy's obs."""
    if not 0.0 <= size < 1.0:
        raise ValueError(f"calibration_size must be in [0, 1), got {size}.")
    calibration_idx = np.array([], dtype=int)
    if (size > 0 and model.module.learns_confidence_held_out
            and rk.CALIBRATION in model.adata_manager.data_registry):
        calibration_idx = calibration_split(labels, train_idx, size, seed)
    flags = np.zeros(model.adata.n_obs, dtype=np.float32)  # align_mudata made the column
    flags[calibration_idx] = 1.0
    model.adata.obs[CALIBRATION_COLUMN] = flags
    return calibration_idx


def add_checkpointing(model, trainer_kwargs: dict, checkpoint_dir, every_n_epochs, resume,
                      train_idx, val_idx, train_params) -> None:
    """Add checkpoint callbacks (and the checkpoint to resume from) to ``trainer_kwargs``."""
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs the checkpoint_dir to resume from.")
        return
    fingerprint = run_fingerprint(model, train_idx, val_idx, train_params)
    trainer_kwargs["extra_callbacks"] = checkpoint_callbacks(checkpoint_dir, every_n_epochs,
                                                             fingerprint)
    last = last_checkpoint(checkpoint_dir) if resume else None
    if last is not None:
        logger.info("resuming from %s", last)
        trainer_kwargs["ckpt_path"] = str(last)
    elif resume:
        logger.info("no checkpoint in %s yet: training from the start", checkpoint_dir)


def fit_preprocessing(model, train_idx: np.ndarray) -> None:
    """Fit feature (image: channel) scaling and class weights on the training cells.

    Also records ``model.input_means_``: the training mean of each tabular modality's input,
    the baseline of the attributions (saved with the model).
    """
    model.input_means_ = {}
    for m, mod in enumerate(model.modalities_):
        rows = train_idx[model._present[train_idx, m]]
        branch = model.module.branches[m]
        if mod in model.images_:
            shift, scale = fit_channel_scaling(model.adata.mod[mod].obsm[ALIGNED_IMAGE_KEY],
                                               rows, model.feature_scaling, branch.input_pool)
        else:
            data = model.adata.mod[mod].X
            shift, scale = fit_scaling(data, rows, model.feature_scaling)
        branch.scaler.set(shift, scale)
        if mod not in model.images_:
            mean = shift if model.feature_scaling == "standard" else \
                fit_scaling(data, rows, "standard")[0]
            model.input_means_[mod] = np.asarray(mean, dtype=np.float32)
    weights = np.ones(len(model.classes_))
    if model.class_weights == "balanced":
        counts = np.bincount(model.label_codes[train_idx], minlength=len(model.classes_))
        nonzero = counts > 0
        weights[nonzero] = len(train_idx) / (nonzero.sum() * counts[nonzero])
    model.module.class_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))
