"""Lightning training plan for :class:`~mmdyn_sc.module.MMDynamicsModule`."""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning.pytorch as pl
import torch

from .._metrics import metrics_from_confusion
from ._registry_keys import held_out_cells, unpack_batch


class MMDynamicsTrainingPlan(pl.LightningModule):
    """Adam (fused where supported; optionally StepLR) on the MM dynamics loss; logs metrics.

    Logged per epoch (into the model's ``history``; under DDP, of all processes' cells: their
    running sums are added across processes before any metric is computed, so macro F1 is
    that of all cells, not a mean of per-process values): ``train_loss`` and each term
    (``train_loss_fused``, ``train_loss_sparsity``, ``train_loss_confidence``,
    ``train_loss_modality``), ``train_accuracy``; with validation cells the same with
    ``validation_`` plus ``validation_f1_macro`` and ``validation_balanced_accuracy``.

    Parameters
    ----------
    module
        The network.
    n_modalities
        Number of modalities in each batch.
    lr, weight_decay
        Adam's learning rate and L2 weight decay.
    lr_step_size, lr_gamma
        StepLR schedule (epochs, factor); ``None`` for a constant learning rate.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        n_modalities: int,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_step_size: int | None = None,
        lr_gamma: float = 0.2,
    ):
        super().__init__()
        self.module = module
        self.n_modalities = n_modalities
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_step_size = lr_step_size
        self.lr_gamma = lr_gamma
        # Running sums per stage, kept on the device (cells, loss, loss terms, confusion).
        self._epoch_sums: dict[str, dict | None] = {"train": None, "validation": None}

    def _step(self, batch, stage: str):
        xs, present, labels = unpack_batch(batch, self.n_modalities)
        outputs = self.module(xs, present)
        held_out = None
        if stage == "train" and getattr(self.module, "learns_confidence_held_out", False):
            held_out = held_out_cells(batch)
        # held-out calibration cells (if any) train the confidence heads only
        loss, parts = self.module.loss(outputs, labels, present, held_out=held_out, xs=xs)
        # Accumulate on the device and log once per epoch: a self.log call per step and
        # metric costs more than the step itself for small models. Running sums (not the
        # per-cell labels) keep the memory constant in the number of cells.
        logits = outputs["fused_logits"].detach()
        n_classes = getattr(self.module, "n_classes", None) or logits.shape[1]
        sums = self._epoch_sums[stage]
        if sums is None:
            sums = self._epoch_sums[stage] = {
                "n": 0, "loss": loss.new_zeros(()),
                "parts": {k: v.new_zeros(()) for k, v in parts.items()},
                "confusion": torch.zeros(n_classes * n_classes, dtype=torch.int64,
                                         device=logits.device),
            }
        n = labels.shape[0]
        sums["n"] += n
        sums["loss"] += loss.detach() * n
        for k, v in parts.items():
            sums["parts"][k] += v.detach() * n
        cells = labels.detach().long() * n_classes + logits.argmax(dim=1)
        sums["confusion"] += torch.bincount(cells, minlength=n_classes * n_classes)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "validation")

    def _log_epoch_metrics(self, stage: str) -> None:
        sums, self._epoch_sums[stage] = self._epoch_sums[stage], None
        if sums is None:
            return
        distributed = self.trainer.world_size > 1
        if distributed:
            # Every process holds the same number of batches (distributed sampler), so each
            # reaches this collective; afterwards every process holds the same sums.
            sums = sum_across_processes(
                sums, lambda tensor: self.trainer.strategy.reduce(tensor, reduce_op="sum"))
        metrics = epoch_metrics(sums, stage)
        if not metrics:
            return
        # The values are already those of all cells, equal on every process; "max" of equal
        # values keeps them exact under DDP (a mean of N equal floats need not), and with one
        # process it is the value itself.
        self.log_dict(metrics, on_epoch=True, prog_bar=False, sync_dist=distributed,
                      reduce_fx="max")

    def on_train_epoch_start(self) -> None:
        start = getattr(self.module, "start_epoch", None)
        if start is not None:
            start(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("validation")

    def configure_optimizers(self):
        optimizer = adam(self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_step_size is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=self.lr_step_size, gamma=self.lr_gamma
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "epoch"}}


def sum_across_processes(sums: dict, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    """One process's running sums of an epoch, summed over all processes.

    Parameters
    ----------
    sums
        ``{"n": cells, "loss": loss sum, "parts": {term: sum}, "confusion": flat counts}``,
        as the training plan accumulates them.
    reduce
        A collective sum over the processes (e.g. Lightning's
        ``strategy.reduce(tensor, reduce_op="sum")``). It is called twice, in the same order
        on every process: once on the loss sums, once on the counts.

    Returns
    -------
    The same structure, holding the sums of all processes.
    """
    names = list(sums["parts"])
    floats = reduce(torch.stack([sums["loss"], *(sums["parts"][k] for k in names)]))
    confusion = sums["confusion"]
    n = torch.tensor([sums["n"]], dtype=confusion.dtype, device=confusion.device)
    counts = reduce(torch.cat([confusion, n]))
    return {"n": int(counts[-1]), "loss": floats[0],
            "parts": dict(zip(names, floats[1:], strict=True)), "confusion": counts[:-1]}


def epoch_metrics(sums: dict, stage: str) -> dict[str, float]:
    """Per-epoch metrics of ``stage`` (``"train"`` or ``"validation"``) from running sums.

    Parameters
    ----------
    sums
        Running sums as :func:`sum_across_processes` takes and returns them.
    stage
        Prefix of the metric names.

    Returns
    -------
    ``<stage>_loss``, ``<stage>_loss_<term>`` and ``<stage>_accuracy`` (cell-weighted means);
    for ``"validation"`` also ``validation_f1_macro`` and ``validation_balanced_accuracy``.
    Empty without cells.
    """
    n = sums["n"]
    if n == 0:
        return {}
    metrics = {f"{stage}_loss": float(sums["loss"]) / n}
    for name, total in sums["parts"].items():
        metrics[f"{stage}_loss_{name}"] = float(total) / n
    n_classes = math.isqrt(sums["confusion"].numel())
    scores = metrics_from_confusion(
        sums["confusion"].reshape(n_classes, n_classes).cpu().numpy()
    )
    metrics[f"{stage}_accuracy"] = scores["accuracy"]
    if stage == "validation":
        metrics["validation_f1_macro"] = scores["f1_macro"]
        metrics["validation_balanced_accuracy"] = scores["balanced_accuracy"]
    return metrics


def adam(params, **options) -> torch.optim.Adam:
    """:class:`torch.optim.Adam`, fused where torch supports it for the parameters' device.

    The fused implementation (CPU and CUDA in recent torch) is about twice as fast per step.
    torch accepts ``fused=True`` for any parameters and checks their device and dtype only
    at the first step, so torch itself is asked first: one fused step on a one-element
    tensor of each device and dtype of ``params`` (:func:`fused_adam_supported`). Where it
    fails (or with a torch without ``fused``) the default implementation is used.

    Parameters
    ----------
    params
        The parameters to optimise (on their final device).
    **options
        Passed on to :class:`torch.optim.Adam` (``lr``, ``weight_decay``, ...).

    Returns
    -------
    The optimizer.
    """
    params = list(params)
    if params and fused_adam_supported(params):
        try:
            return torch.optim.Adam(params, fused=True, **options)
        except (RuntimeError, ValueError, TypeError):  # options fused does not take
            pass
    return torch.optim.Adam(params, **options)


def fused_adam_supported(params) -> bool:
    """Whether a fused :class:`torch.optim.Adam` steps on every device and dtype of ``params``.

    Decided by torch's public behaviour: a fused step on a one-element tensor of each
    (device, dtype) pair, which raises where the fused kernels do not run.
    """
    for device, dtype in {(p.device, p.dtype) for p in params}:
        if not dtype.is_floating_point:
            return False
        try:
            probe = torch.zeros(1, device=device, dtype=dtype, requires_grad=True)
            probe.grad = torch.zeros_like(probe)
            torch.optim.Adam([probe], fused=True).step()
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            return False
    return True
