"""The MM dynamics network (Han et al., CVPR 2022) for any number of tabular modalities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._confidence import TCPConfidenceHead
from ._feature_gate import FeatureGate
from ._feature_scaler import FeatureScaler
from ._init import xavier_linear

#: Loss terms and their default weights (all 1, as in the original code).
DEFAULT_LOSS_WEIGHTS = {"fused": 1.0, "sparsity": 1.0, "confidence": 1.0, "modality": 1.0}


class ModalityBranch(nn.Module):
    """One modality: scaling, feature gate, encoder, own classifier and confidence head.

    Parameters
    ----------
    n_features
        Input features d.
    n_hidden
        Latent size H.
    n_classes
        Number of classes C.
    dropout
        Dropout rate after the encoder's ReLU.
    feature_informativeness
        Use the d x d sigmoid gate (FI).
    modality_informativeness
        Scale the latent by the predicted TCP (MI).
    """

    def __init__(
        self,
        n_features: int,
        n_hidden: int,
        n_classes: int,
        dropout: float,
        feature_informativeness: bool,
        modality_informativeness: bool,
    ):
        super().__init__()
        self.scaler = FeatureScaler(n_features)
        self.gate = FeatureGate(n_features) if feature_informativeness else None
        self.encoder = xavier_linear(n_features, n_hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = xavier_linear(n_hidden, n_classes)
        self.confidence = TCPConfidenceHead(n_hidden) if modality_informativeness else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        x = self.scaler(x)
        gate = self.gate(x) if self.gate is not None else None
        if gate is not None:
            x = x * gate
        h = self.dropout(F.relu(self.encoder(x)))
        logits = self.classifier(h)
        confidence = self.confidence(h) if self.confidence is not None else None
        return {"h": h, "gate": gate, "logits": logits, "confidence": confidence}


class MMDynamicsModule(nn.Module):
    """MM dynamics: per-modality gated encoders, TCP-scaled latents, late fusion by concatenation.

    Parameters
    ----------
    n_features
        Input features per modality.
    n_hidden
        Latent size per modality.
    n_classes
        Number of classes.
    dropout
        Dropout rate of every encoder.
    feature_informativeness
        Feature gates on (FI). Off: no gate and no sparsity term.
    modality_informativeness
        Confidence scaling on (MI). Off: no scaling and no confidence term. FI and MI both off
        is MM static (late fusion by concatenation).
    loss_weights
        Weights of the loss terms ``fused``, ``sparsity``, ``confidence``, ``modality``
        (missing keys take :data:`DEFAULT_LOSS_WEIGHTS`).
    class_weights
        Optional weight per class for the cross-entropy terms.
    """

    def __init__(
        self,
        n_features: Sequence[int],
        n_hidden: Sequence[int],
        n_classes: int,
        dropout: float = 0.5,
        feature_informativeness: bool = True,
        modality_informativeness: bool = True,
        loss_weights: Mapping[str, float] | None = None,
        class_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        if len(n_features) != len(n_hidden):
            raise ValueError("n_features and n_hidden need one entry per modality.")
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(
                f"Unknown loss weight(s) {sorted(unknown)}; use {sorted(DEFAULT_LOSS_WEIGHTS)}."
            )
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.n_classes = n_classes
        self.feature_informativeness = feature_informativeness
        self.modality_informativeness = modality_informativeness
        self.branches = nn.ModuleList(
            ModalityBranch(d, h, n_classes, dropout, feature_informativeness,
                           modality_informativeness)
            for d, h in zip(n_features, n_hidden, strict=True)
        )
        self.fused_classifier = xavier_linear(sum(n_hidden), n_classes)
        weights = torch.ones(n_classes) if class_weights is None else torch.as_tensor(
            class_weights, dtype=torch.float32
        )
        self.register_buffer("class_weights", weights)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(
        self, xs: Sequence[torch.Tensor], present: torch.Tensor
    ) -> dict[str, torch.Tensor | list]:
        """Run every modality branch and the fused classifier.

        Parameters
        ----------
        xs
            One (n, d_m) tensor per modality (zeros where a cell lacks the modality).
        present
            (n, M) with 1 where the cell has the modality; absent modalities contribute a
            zero latent.

        Returns
        -------
        ``fused_logits`` (n, C); ``latent`` (n, sum H); ``weights`` (n, M), the factor each
        modality's latent was scaled by (predicted TCP with MI, else 1; 0 where absent); per
        modality lists ``modality_logits`` (n, C), ``gates`` (n, d_m) or None, and
        ``confidence`` (n,) or None.
        """
        present = present.to(xs[0].dtype)
        latents, weights, outputs = [], [], []
        for m, (branch, x) in enumerate(zip(self.branches, xs, strict=True)):
            out = branch(x)
            mask = present[:, m]
            weight = out["confidence"] if out["confidence"] is not None else torch.ones_like(mask)
            weight = weight * mask
            latents.append(out["h"] * weight.unsqueeze(-1))
            weights.append(weight)
            outputs.append(out)
        latent = torch.cat(latents, dim=1)
        return {
            "fused_logits": self.fused_classifier(latent),
            "latent": latent,
            "weights": torch.stack(weights, dim=1),
            "modality_logits": [o["logits"] for o in outputs],
            "gates": [o["gate"] for o in outputs],
            "confidence": [o["confidence"] for o in outputs],
        }

    def loss(
        self, outputs: dict, y: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The MM dynamics loss on labelled cells.

        ``fused * CE(fused) + sum_m [sparsity * mean(w_m) + confidence * MSE(tcp^_m, TCP_m)
        + modality * CE(logits_m)]``, each modality term averaged over the cells that have the
        modality. As in the original code, the TCP target is not detached.

        Returns
        -------
        The total loss and its terms (summed over modalities).
        """
        w = self.loss_weights
        y = y.long()
        present = present.to(outputs["fused_logits"].dtype)
        cw = self.class_weights
        fused = F.cross_entropy(outputs["fused_logits"], y, weight=cw)
        zero = fused.new_zeros(())
        sparsity, confidence, modality = zero, zero, zero
        sample_weight = cw[y]
        for m in range(len(self.branches)):
            mask = present[:, m]
            n_present = mask.sum().clamp_min(1.0)
            logits = outputs["modality_logits"][m]
            ce = F.cross_entropy(logits, y, reduction="none")
            modality = modality + (ce * sample_weight * mask).sum() / (
                (sample_weight * mask).sum().clamp_min(1e-12)
            )
            gate = outputs["gates"][m]
            if gate is not None:
                sparsity = sparsity + (gate.mean(dim=1) * mask).sum() / n_present
            tcp_hat = outputs["confidence"][m]
            if tcp_hat is not None:
                tcp = torch.gather(F.softmax(logits, dim=1), 1, y.unsqueeze(1)).squeeze(1)
                confidence = confidence + (((tcp_hat - tcp) ** 2) * mask).sum() / n_present
        total = (
            w["fused"] * fused
            + w["sparsity"] * sparsity
            + w["confidence"] * confidence
            + w["modality"] * modality
        )
        parts = {"fused": fused, "sparsity": sparsity, "confidence": confidence,
                 "modality": modality}
        return total, parts
