"""Lightning training plan for :class:`~mmdyn_sc.module.MMDynamicsModule`."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from .._metrics import classification_metrics
from ._registry_keys import unpack_batch


class MMDynamicsTrainingPlan(pl.LightningModule):
    """Adam (optionally with StepLR) on the MM dynamics loss; logs losses and accuracy metrics.

    Logged per epoch (into the model's ``history``; under DDP, the mean over processes of
    each process's share of the cells): ``train_loss`` and each term
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
        self._epoch_outputs: dict[str, list] = {"train": [], "validation": []}

    def _step(self, batch, stage: str):
        xs, present, labels = unpack_batch(batch, self.n_modalities)
        outputs = self.module(xs, present)
        loss, parts = self.module.loss(outputs, labels, present)
        # Accumulate on the device and log once per epoch: a self.log call per step and
        # metric costs more than the step itself for small models.
        n = labels.shape[0]
        totals = self._epoch_outputs[stage]
        totals.append(
            (n, loss.detach() * n, {k: v.detach() * n for k, v in parts.items()},
             labels.detach(), outputs["fused_logits"].detach().argmax(dim=1))
        )
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "validation")

    def _log_epoch_metrics(self, stage: str) -> None:
        collected = self._epoch_outputs[stage]
        if not collected:
            return
        self._epoch_outputs[stage] = []
        n = sum(c[0] for c in collected)
        metrics = {f"{stage}_loss": float(sum(c[1] for c in collected)) / n}
        for name in collected[0][2]:
            metrics[f"{stage}_loss_{name}"] = float(sum(c[2][name] for c in collected)) / n
        y = torch.cat([c[3] for c in collected]).long()
        p = torch.cat([c[4] for c in collected])
        metrics[f"{stage}_accuracy"] = float((y == p).float().mean())
        if stage == "validation":
            scores = classification_metrics(y.cpu().numpy(), p.cpu().numpy())
            metrics["validation_f1_macro"] = scores["f1_macro"]
            metrics["validation_balanced_accuracy"] = scores["balanced_accuracy"]
        # Under DDP each process sees its share of the cells: average across processes.
        distributed = self.trainer.world_size > 1
        self.log_dict(metrics, on_epoch=True, prog_bar=False, sync_dist=distributed)

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("validation")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(
            self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        if self.lr_step_size is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=self.lr_step_size, gamma=self.lr_gamma
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "epoch"}}
