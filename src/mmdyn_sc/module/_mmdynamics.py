"""The MM dynamics network (Han et al., CVPR 2022) for any number of tabular modalities."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._branch_heads import BranchHeads
from ._confidence import (
    TCP_PREDICTING_OPTIONS,
    check_confidence_option,
    tcp_regression_error,
    true_class_probability,
)
from ._energy import energy_weights
from ._feature_gate import make_feature_gate
from ._feature_scaler import FeatureScaler
from ._image_branch import ImageBranch
from ._image_branch import image_options as _image_options
from ._init import xavier_linear
from ._modality_dropout import check_modality_dropout, sample_fusion_mask
from ._pdf import pdf_weights

#: Loss terms and their default weights (all 1, as in the original code).
DEFAULT_LOSS_WEIGHTS = {"fused": 1.0, "sparsity": 1.0, "confidence": 1.0, "modality": 1.0}


class ModalityBranch(BranchHeads):
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
        Use the sigmoid feature gate (FI): d x d, or of rank ``gate_rank``.
    modality_informativeness
        Weight the latent by a modality confidence (MI).
    confidence
        The confidence estimator with MI, one of :data:`CONFIDENCE_OPTIONS`; decides the
        head: :class:`TCPConfidenceHead` (``"tcp"``), :class:`BoundedConfidenceHead`
        (``"tcp_calibrated"``, ``"pdf"``) or none (``"energy"``, or MI off).
    gate_rank
        With FI, ``None`` for the full d x d gate, or r (``1 <= r < d``) for the low-rank
        gate ``sigmoid(B (A x))`` (:class:`LowRankFeatureGate`, O(d r)).
    feature_clip
        ``None``, or c > 0: scaled inputs are clipped to ``[-c, c]`` (:class:`FeatureScaler`).

    ``forward`` returns ``h`` (n, H), ``gate`` (n, d) or None, ``logits`` (n, C) and
    ``tcp_hat`` (n,), the head's predicted TCP, or None without a head.
    """

    def __init__(
        self,
        n_features: int,
        n_hidden: int,
        n_classes: int,
        dropout: float,
        feature_informativeness: bool,
        modality_informativeness: bool,
        confidence: str = "tcp",
        gate_rank: int | None = None,
        feature_clip: float | None = None,
    ):
        super().__init__()
        self.scaler = FeatureScaler(n_features, feature_clip)
        self.gate = (
            make_feature_gate(n_features, gate_rank) if feature_informativeness else None
        )
        self.encoder = xavier_linear(n_features, n_hidden)
        self._init_heads(n_hidden, n_classes, dropout, modality_informativeness, confidence)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        x = self.scaler(x)
        gate = self.gate(x) if self.gate is not None else None
        if gate is not None:
            x = x * gate
        return {"gate": gate, **self._heads(self.encoder(x))}


def _per_modality(gate_rank, n_modalities: int) -> list[int | None]:
    """``gate_rank`` as one entry per modality (``None`` or an int apply to all)."""
    if gate_rank is None or isinstance(gate_rank, numbers.Integral):
        return [gate_rank] * n_modalities
    ranks = list(gate_rank)
    if len(ranks) != n_modalities:
        raise ValueError(f"gate_rank needs one entry per modality ({n_modalities}), got "
                         f"{len(ranks)}.")
    return ranks


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
        (missing keys take 1, as in the original).
    class_weights
        Optional weight per class for the cross-entropy terms.
    confidence
        How MI weighs each modality's latent (ignored without MI):

        - ``"tcp"`` (the original): scaled by ``tcp^ = D h``, an unbounded regression on the
          modality classifier's true class probability (TCP), target not detached.
        - ``"tcp_calibrated"``: scaled by ``tcp^ = sigmoid(D h)`` in (0, 1), with ``h`` and the
          TCP target detached (the confidence loss trains the head only) and the weight
          detached in the fusion. With ``held_out`` cells in ``loss`` (what
          :meth:`~mmdyn_sc.MMDynamics.train` does, ``calibration_size``), the heads regress
          (absolute error) the evaluation-mode TCP of cells the classifiers do not fit;
          without, the TCP of the training-mode (dropout) logits of the cells being fitted.
        - ``"energy"`` (QMF): scaled by ``softmax_m(-E_m)`` over the cell's available
          modalities, ``E_m = -logsumexp(logits_m)``, detached; no head, no confidence loss.
        - ``"pdf"`` (Predictive Dynamic Fusion): scaled by ``softmax_m(RC_m (mono_m + holo_m))``
          over the cell's available modalities, detached; ``mono_m`` is a sigmoid head
          predicting the detached TCP (L1 loss), relative calibration ``RC`` in eval only.
    modality_dropout
        In training mode, probability of hiding each present modality of a cell from the
        fusion (weight and latent 0, as if absent), never all of a cell's present
        modalities. The modality's own losses still count it. 0 draws no random numbers.
    gate_rank
        Rank of each modality's feature gate: ``None`` (the full d x d gate, as in the
        original), one int for every modality, or one entry (int or ``None``) per modality.
        A rank r (``1 <= r < d``) gives the low-rank gate ``sigmoid(B (A x))``, O(d r).
        Ignored without FI.
    feature_clip
        ``None`` (as in the original), or c > 0: every tabular modality's scaled inputs are
        clipped to ``[-c, c]`` (images are not clipped).
    images
        One entry per modality: ``None`` for a tabular modality, or a mapping with
        ``channels`` and ``image_size`` for an image modality, which gets an
        :class:`~mmdyn_sc.module.ImageBranch` (its ``n_features`` entry is ignored).
    image_options
        Options of every image branch (see :data:`DEFAULT_IMAGE_OPTIONS`), e.g.
        ``{"patch_size": 8, "encoder_depth": 2, "encoder_width": 32}``.
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
        confidence: str = "tcp",
        modality_dropout: float = 0.0,
        gate_rank: int | Sequence[int | None] | None = None,
        images: Sequence[Mapping | None] | None = None,
        image_options: Mapping | None = None,
        feature_clip: float | None = None,
    ):
        super().__init__()
        self.confidence = check_confidence_option(confidence)
        self.modality_dropout = check_modality_dropout(modality_dropout)
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
        ranks = _per_modality(gate_rank, len(n_features))
        images = [None] * len(n_features) if images is None else list(images)
        if len(images) != len(n_features):
            raise ValueError("images needs one entry (None for a tabular modality) per modality.")
        self.image_options = _image_options(image_options)
        self.branches = nn.ModuleList(
            ModalityBranch(d, h, n_classes, dropout, feature_informativeness,
                           modality_informativeness, confidence, gate_rank=r,
                           feature_clip=feature_clip)
            if image is None else
            ImageBranch(int(image["channels"]), int(image["image_size"]), h, n_classes,
                        dropout, feature_informativeness, modality_informativeness, confidence,
                        self.image_options)
            for d, h, r, image in zip(n_features, n_hidden, ranks, images, strict=True)
        )
        self.fused_classifier = xavier_linear(sum(n_hidden), n_classes)
        weights = torch.ones(n_classes) if class_weights is None else torch.as_tensor(
            class_weights, dtype=torch.float32
        )
        self.register_buffer("class_weights", weights)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def predicts_tcp(self) -> bool:
        """Whether ``forward`` returns a predicted TCP per modality (``tcp_hat``)."""
        return self.modality_informativeness and self.confidence in TCP_PREDICTING_OPTIONS

    @property
    def learns_confidence_held_out(self) -> bool:
        """Whether the confidence heads learn from held-out cells (``"tcp_calibrated"``, MI).

        Then ``loss`` takes ``held_out``: cells whose
        labels train the confidence heads only (see
        ``held_out_confidence_error``).
        """
        return self.modality_informativeness and self.confidence == "tcp_calibrated"

    def fusion_mask(self, present: torch.Tensor) -> torch.Tensor:
        """The modalities each cell fuses, (n, M): ``present`` less modality dropout.

        Dropout applies in training mode with ``modality_dropout > 0`` only; otherwise
        ``present`` is returned as is and no random number is drawn.
        """
        if self.training and self.modality_dropout > 0:
            return sample_fusion_mask(present, self.modality_dropout)
        return present

    def modality_weights(
        self,
        tcp_hats: list[torch.Tensor | None],
        modality_logits: list[torch.Tensor],
        present: torch.Tensor,
        kept: torch.Tensor,
    ) -> tuple[list[torch.Tensor] | list[None], torch.Tensor]:
        """Per-modality confidence and fusion weights.

        Parameters
        ----------
        tcp_hats
            Predicted TCP (n,) per modality, or None.
        modality_logits
            Classifier logits (n, C) per modality.
        present
            (n, M) true presence.
        kept
            (n, M) :meth:`fusion_mask`: present and not dropped.

        Returns
        -------
        ``confidence``: per modality (n,), the weight before masking (for ``"energy"`` and
        ``"pdf"``: normalised over the modalities the cell has, ignoring modality dropout),
        or Nones without MI; ``weights`` (n, M): the factor each latent is scaled by, 0 where
        absent or dropped.
        """
        n_modalities = len(modality_logits)
        if not self.modality_informativeness:
            return [None] * n_modalities, kept
        if self.confidence == "tcp":
            return tcp_hats, torch.stack(tcp_hats, dim=1) * kept
        if self.confidence == "tcp_calibrated":
            return tcp_hats, torch.stack(tcp_hats, dim=1).detach() * kept
        normalised = self._normalised_weights(tcp_hats, modality_logits, present)
        if kept is present:  # no modality dropout: the fused set is the present set
            return list(normalised.unbind(dim=1)), normalised
        weights = self._normalised_weights(tcp_hats, modality_logits, kept)
        return list(normalised.unbind(dim=1)), weights

    def _normalised_weights(
        self,
        tcp_hats: list[torch.Tensor | None],
        modality_logits: list[torch.Tensor],
        available: torch.Tensor,
    ) -> torch.Tensor:
        """Energy or PDF weights normalised over the ``available`` modalities, (n, M)."""
        if self.confidence == "energy":
            return energy_weights(modality_logits, available)
        mono = torch.stack(tcp_hats, dim=1)
        return pdf_weights(mono, modality_logits, available, calibrate=not self.training)

    def start_epoch(self, epoch: int) -> None:
        """Tell the branches that training epoch ``epoch`` (0-based) begins.

        The image gate's warm-up is counted in epochs.
        """
        for branch in self.branches:
            if hasattr(branch, "start_epoch"):
                branch.start_epoch(epoch)

    def on_load(self, model, **kwargs) -> None:
        """scvi-tools' hook after a model is rebuilt from a save: nothing to prepare.

        The weights, scalers and class weights all live in the state dict.
        """

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
        modality's latent was scaled by (the confidence with MI, else 1; 0 where absent or,
        in training, dropped by modality dropout); per modality lists ``modality_logits``
        (n, C), ``gates`` (n, d_m) or None, ``confidence`` (n,) or None (the per-cell
        modality confidence: the weight before masking, see :meth:`modality_weights`) and
        ``tcp_hat`` (n,) or None (the predicted TCP, for options that predict it), and
        ``heatmaps``: (n, grid, grid) patch gates of image modalities with FI, else None.
        """
        present = present.to(self.fused_classifier.weight.dtype)
        outputs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        tcp_hats = [o["tcp_hat"] for o in outputs]
        modality_logits = [o["logits"] for o in outputs]
        confidence, weights = self.modality_weights(
            tcp_hats, modality_logits, present, self.fusion_mask(present)
        )
        latent = torch.cat(
            [o["h"] * weights[:, m].unsqueeze(-1) for m, o in enumerate(outputs)], dim=1
        )
        return {
            "fused_logits": self.fused_classifier(latent),
            "latent": latent,
            "weights": weights,
            "modality_logits": modality_logits,
            "gates": [o["gate"] for o in outputs],
            "heatmaps": [o.get("heatmap") for o in outputs],
            "confidence": confidence,
            "tcp_hat": tcp_hats,
        }

    def held_out_confidence_error(
        self, xs: Sequence[torch.Tensor], y: torch.Tensor, present: torch.Tensor,
        held_out: torch.Tensor,
    ) -> torch.Tensor:
        """Confidence loss on held-out cells: how well each head predicts TCP on unfitted cells.

        The held-out cells are run in evaluation mode without gradients (no dropout, as at
        prediction); each modality's confidence head is then applied to their latent with
        gradients for the head only, and regressed on the TCP of the modality's own
        classifier with the absolute error: the error :func:`mmdyn_sc.tl.fit` reports
        (``mean |t^ - t| / mean t``), whose best predictor is the conditional median, robust
        to the long tail of low TCPs (on held-out BMMC and pbmc10k validation cells it gave a
        lower relative error than the squared error in 11 of 12 fits). Averaged per
        modality over the held-out cells that have it and summed over modalities; 0 when
        the batch holds no held-out cell.
        """
        rows = torch.nonzero(held_out.reshape(-1) > 0).squeeze(1)
        heads = [p for branch in self.branches for p in branch.confidence.parameters()]
        # Zero but connected to every head: a distributed (DDP) step needs a gradient for
        # each parameter even when this process's batch holds no held-out cell.
        error = sum((p * 0).sum() for p in heads)
        if rows.numel() == 0:
            return error
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                outputs = [branch(x[rows]) for branch, x in zip(self.branches, xs, strict=True)]
        finally:
            self.train(was_training)
        y = y[rows].long()
        mask = present[rows].to(error.dtype)
        for m, (branch, out) in enumerate(zip(self.branches, outputs, strict=True)):
            tcp = true_class_probability(out["logits"], y)
            tcp_hat = branch.confidence(out["h"])
            absolute = tcp_regression_error(self.confidence, tcp_hat, tcp)
            error = error + (absolute * mask[:, m]).sum() / mask[:, m].sum().clamp_min(1.0)
        return error

    def loss(
        self, outputs: dict, y: torch.Tensor, present: torch.Tensor,
        held_out: torch.Tensor | None = None, xs: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The MM dynamics loss on labelled cells.

        ``fused * CE(fused) + sum_m [sparsity * mean(w_m) + confidence * err(tcp^_m, TCP_m)
        + modality * CE(logits_m)]``, each modality term averaged over the cells that have the
        modality (modality dropout does not change these terms). ``err`` is the squared error
        with a non-detached TCP for ``"tcp"`` (as in the original code), the absolute error with
        a detached TCP for ``"tcp_calibrated"`` and ``"pdf"``, and absent (0) for ``"energy"``
        or without MI.

        Parameters
        ----------
        outputs
            :meth:`forward`'s outputs for the batch.
        y, present
            Class codes (n,) and presence (n, M).
        held_out, xs
            Only with ``learns_confidence_held_out``:
            (n,) nonzero for held-out cells, and the batch's inputs. Held-out cells are
            left out of every term but the confidence term, which then comes from them alone
            (``held_out_confidence_error``): the heads
            learn the TCP of cells the classifiers are not fitting (0 for a batch without
            held-out cells). ``None``: every cell counts in every term, as above.

        Returns
        -------
        The total loss and its terms (summed over modalities).
        """
        if held_out is not None and not self.learns_confidence_held_out:
            raise ValueError(f"held_out cells need MI with confidence 'tcp_calibrated', not "
                             f"{self.confidence!r}.")
        if held_out is not None and xs is None:
            raise ValueError("loss(held_out=...) needs the batch's inputs (xs=...).")
        w = self.loss_weights
        y = y.long()
        present = present.to(outputs["fused_logits"].dtype)
        cw = self.class_weights
        sample_weight = cw[y]

        def class_weighted_ce(logits, cells):  # mean over ``cells`` (0/1), class-weighted
            ce = F.cross_entropy(logits, y, reduction="none")
            return (ce * sample_weight * cells).sum() / (
                (sample_weight * cells).sum().clamp_min(1e-12)
            )

        if held_out is None:
            fused = F.cross_entropy(outputs["fused_logits"], y, weight=cw)
            confidence = fused.new_zeros(())
        else:  # the heads learn from the held-out cells; every other term from the rest
            confidence = self.held_out_confidence_error(xs, y, present, held_out)
            fitted = (held_out.reshape(-1) <= 0).to(present.dtype)
            present = present * fitted.unsqueeze(1)
            fused = class_weighted_ce(outputs["fused_logits"], fitted)
        zero = fused.new_zeros(())
        sparsity, modality = zero, zero
        for m in range(len(self.branches)):
            mask = present[:, m]
            n_present = mask.sum().clamp_min(1.0)
            logits = outputs["modality_logits"][m]
            modality = modality + class_weighted_ce(logits, mask)
            gate = outputs["gates"][m]
            if gate is not None:
                sparsity = sparsity + self.branches[m].sparsity_weight * (
                    (gate.mean(dim=1) * mask).sum() / n_present
                )
            tcp_hat = outputs["tcp_hat"][m]
            if tcp_hat is not None and held_out is None:
                tcp = true_class_probability(logits, y)
                error = tcp_regression_error(self.confidence, tcp_hat, tcp)
                confidence = confidence + (error * mask).sum() / n_present
        total = (
            w["fused"] * fused
            + w["sparsity"] * sparsity
            + w["confidence"] * confidence
            + w["modality"] * modality
        )
        parts = {"fused": fused, "sparsity": sparsity, "confidence": confidence,
                 "modality": modality}
        return total, parts
