"""Lightning training plan for :class:`~mmdyn_sc.module.MMDynamicsModule`."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from ._registry_keys import unpack_batch


class MMDynamicsTrainingPlan(pl.LightningModule):
    """Adam (optionally with StepLR) on the MM dynamics loss; logs losses and accuracy metrics.

    Logged per epoch (into the model's ``history``): ``train_loss`` and each term
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
        n = labels.shape[0]
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=n,
                 prog_bar=stage == "validation")
        for name, value in parts.items():
            self.log(f"{stage}_loss_{name}", value, on_step=False, on_epoch=True, batch_size=n)
        predicted = outputs["fused_logits"].argmax(dim=1)
        self._epoch_outputs[stage].append(
            (labels.detach().cpu().numpy(), predicted.detach().cpu().numpy())
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
        y = np.concatenate([c[0] for c in collected]).astype(int)
        p = np.concatenate([c[1] for c in collected]).astype(int)
        self._epoch_outputs[stage] = []
        self.log(f"{stage}_accuracy", float((y == p).mean()), on_epoch=True)
        if stage == "validation":
            with warnings.catch_warnings():  # classes absent from a small validation set
                warnings.simplefilter("ignore", UserWarning)
                balanced = float(balanced_accuracy_score(y, p))
            self.log("validation_f1_macro", float(f1_score(y, p, average="macro",
                                                           zero_division=0)), on_epoch=True)
            self.log("validation_balanced_accuracy", balanced, on_epoch=True)

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
