"""MMDynamics: the scvi-tools model class for MM dynamics on MuData.

This file holds the class and its public methods; the work is done next to it:
registration on a private aligned copy (``_registration``), option checks (``_options``),
training (``_training``), inference tables (``_results``) and loading (``_load``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import pandas as pd
from lightning.pytorch import LightningDataModule
from mudata import MuData
from scvi.dataloaders import DataSplitter
from scvi.model.base import BaseModelClass

from .._data import LABELS_COLUMN, align_mudata
from .._data._images import IMAGE_KEY
from .._utils import warn
from ..module import MMDynamicsModule
from . import _attribution, _certainty, _image_attribution, _results
from ._checkpoint import MMDynamicsTrainRunner
from ._feature_scaling import check_feature_clip
from ._inference import InferenceResult, run_inference
from ._load import load_model
from ._options import check_model_options, gate_ranks, hidden_sizes
from ._recipes import DEFAULTS, ClassWeights, Confidence, FeatureScaling
from ._registration import (
    ALIGNED_COPIES,
    drop_instance_store,
    forget_query,
    loader_dtypes,
    register_aligned,
)
from ._scvi_logging import quiet_scvi
from ._seeding import kept_random_state
from ._setup import resolve_setup
from ._training import run_training
from ._training_plan import MMDynamicsTrainingPlan


def _package_version() -> str:
    from .. import __version__

    return __version__


class MMDynamics(BaseModelClass):
    """MM dynamics (Han et al., CVPR 2022) for cell classification on a MuData.

    Each modality gets a feature-informativeness gate (a d x d linear map with sigmoid), a
    ReLU encoder with dropout, its own classifier and a confidence (TCP) head that scales its
    latent; the scaled latents are concatenated and classified.

    Set up the data with :meth:`setup_mudata` first. Modalities need not cover all cells:
    a cell absent from a modality contributes nothing from it.

    The defaults, here and in :meth:`train`, are the recipe ``"default"`` of
    :data:`mmdyn_sc.tl.RECIPES`, which :func:`mmdyn_sc.tl.fit` uses too; the study's own
    settings are the recipe ``"paper"`` (``tl.fit(..., recipe="paper")``).

    Parameters
    ----------
    mdata
        MuData set up with :meth:`setup_mudata`.
    n_hidden
        Latent size of each modality's encoder, one int for all modalities or a dict per
        modality (256; recipe ``"paper"``: 1000, the original's).
    dropout
        Dropout rate after each encoder (0.5, as in the original and recipe ``"paper"``).
    feature_informativeness
        Feature gates (FI) on (``True``). Off: no gate and no sparsity term.
    modality_informativeness
        Confidence scaling (MI) on (``True``). Off: no scaling and no confidence term. Both
        off is MM static.
    feature_scaling
        ``"standard"`` (default), ``"minmax"`` (the study's, recipe ``"paper"``) or
        ``None``: per-feature scaling fitted on the training cells when :meth:`train` runs,
        stored in the model and reapplied to new data. An image modality is scaled per
        channel (every pixel a value of its channel).
    feature_clip
        5 (default), ``None`` (no clipping, as in the original), or c > 0 with
        ``feature_scaling="standard"``: z-scores of tabular modalities are clipped to
        ``[-c, c]`` (as ``scanpy.pp.scale(max_value=c)``, on both sides), so that a gene
        expressed in a few cells does not feed the encoder values of 10 or more. Images are
        not clipped. Recipe ``"paper"``: ``None``. 5 was chosen on validation cells
        (``benchmarks/results/pbmc10k_tune.md``).
    class_weights
        ``"balanced"`` (default: cross-entropy weighted by inverse class frequency of the
        training cells) or ``None`` (unweighted, as in the original and recipe
        ``"paper"``).
    loss_weights
        Weights of the loss terms ``fused``, ``sparsity``, ``confidence``, ``modality``
        (``None``, the default: 1 each, as in the original; a dict sets the terms it names,
        e.g. ``{"sparsity": 0.5}``).
    confidence
        How MI weighs each modality per cell (see :class:`~mmdyn_sc.module.MMDynamicsModule`):
        ``"tcp"`` (the original unbounded TCP regression, recipe ``"paper"``),
        ``"tcp_calibrated"`` (bounded, detached target and input, learnt on held-out
        calibration cells: see ``calibration_size`` in :meth:`train`), ``"energy"``
        (default: QMF energy score) or ``"pdf"`` (Predictive Dynamic Fusion).
    modality_dropout
        Probability of hiding each of a cell's modalities from the fusion during training
        (never all), so that the model predicts well when a modality is absent (default 0.3;
        the original and recipe ``"paper"``: 0).
    gate_rank
        Rank of the feature gates: ``None`` (the full d x d gate of the original, recipe
        ``"paper"``), one int for every modality with more features than that (the others
        keep the full gate), a dict per modality (modalities not named keep the full gate;
        a named rank must be below the modality's feature count), or ``"auto"`` (the
        default): rank 64 for modalities with at least 2000 features, the full gate below
        (no loss of macro F1 at 2000 genes, 4x faster fits:
        ``benchmarks/results/gate_rank.md``). A rank r gives the low-rank gate
        ``sigmoid(B (A x))`` with ``A`` d -> r and ``B`` r -> d: O(d r) parameters instead
        of O(d^2), for modalities with thousands of features. Ignored without FI.
    image_options
        ``None`` (the default) or options of the image branches (image MM dynamics, see
        :class:`~mmdyn_sc.module.ImageBranch`), defaults in
        :data:`~mmdyn_sc.module.DEFAULT_IMAGE_OPTIONS`: ``patch_size`` (8: an 8 x 8 heatmap
        grid on 64 x 64 images), ``encoder_depth`` and ``encoder_width`` (the study's CNN: 2
        conv + pool blocks from 32 channels), ``encoder_fc`` (128), ``unet_channels`` (16),
        ``unet_depth`` (2), ``gate_sparsity`` (1: the factor of the patch gate's L1
        term) and ``gate_warmup`` (5: training epochs during which the gate is held,
        neither learning nor penalised; the study trained it from the first step, which
        shut it on every BCCD image), ``input_size`` (64: the whole branch, gate and CNN,
        reads an image of 128 px or more a side average-pooled by the largest power of two
        that keeps it at least 64 px a side and divisible by ``patch_size``,
        ``2**unet_depth`` and ``2**encoder_depth``, and ``patch_size`` counts pixels of the
        pooled image: at 128 px an 8 x 8 grid of 16-px patches; 0: the full image, as the
        study) and ``gate_input_size`` (64: the same for the U-net alone, on the image the
        branch reads, with the patch grid unchanged; 0: the full image). The side the branch
        reads must be divisible by ``patch_size``, by ``2**unet_depth`` and by
        ``2**encoder_depth``.

    Notes
    -----
    An image modality (``.obsm[image_key]`` with (n_cells, C, H, W) images, see
    :meth:`setup_mudata`) gets a branch of its own: with FI a compact U-net scores each
    patch and gates the image, a small CNN encodes it, and its latent joins the others in
    the same fusion, MI and losses. Images are flipped at random in training only.

    Examples
    --------
    >>> MMDynamics.setup_mudata(mdata, labels_key="cell_type", modalities=["rna", "prot"])
    >>> model = MMDynamics(mdata)
    >>> model.train(max_epochs=100)
    >>> model.predict()
    """

    _module_cls = MMDynamicsModule
    _data_splitter_cls = DataSplitter
    _training_plan_cls = MMDynamicsTrainingPlan
    _train_runner_cls = MMDynamicsTrainRunner

    def __init__(
        self,
        mdata: MuData,
        n_hidden: int | Mapping[str, int] = DEFAULTS["n_hidden"],
        dropout: float = DEFAULTS["dropout"],
        feature_informativeness: bool = True,
        modality_informativeness: bool = True,
        feature_scaling: FeatureScaling | None = DEFAULTS["feature_scaling"],
        class_weights: ClassWeights | None = DEFAULTS["class_weights"],
        loss_weights: Mapping[str, float] | None = None,
        confidence: Confidence = DEFAULTS["confidence"],
        modality_dropout: float = DEFAULTS["modality_dropout"],
        gate_rank: int | str | Mapping[str, int | None] | None = DEFAULTS["gate_rank"],
        image_options: Mapping[str, float] | None = None,
        feature_clip: float | None = DEFAULTS["feature_clip"],
    ):
        feature_clip = check_feature_clip(feature_clip, feature_scaling)
        aligned = ALIGNED_COPIES.get(mdata)
        if aligned is None:
            raise ValueError(
                f"Please set up your MuData with {type(self).__name__}.setup_mudata first."
            )
        super().__init__(aligned.mdata)
        check_model_options(class_weights, dropout)
        setup = self.adata_manager.registry["setup_args"]
        self.modalities_ = list(setup["modalities"])
        self.classes_ = list(setup["classes"])
        self.features_ = {m: list(f) for m, f in setup["features"].items()}
        self.images_ = {m: dict(spec) for m, spec in (setup.get("images") or {}).items()}
        self.mmdyn_sc_version_ = _package_version()
        hidden = hidden_sizes(n_hidden, self.modalities_)
        ranks = gate_ranks(gate_rank, self.modalities_,
                           {m: len(self.features_[m]) for m in self.modalities_}, self.images_)
        self.feature_scaling = feature_scaling
        self.feature_clip = feature_clip
        self.class_weights = class_weights
        self.module = self._module_cls(
            n_features=[len(self.features_[m]) for m in self.modalities_],
            n_hidden=[hidden[m] for m in self.modalities_],
            n_classes=len(self.classes_),
            dropout=dropout,
            feature_informativeness=feature_informativeness,
            modality_informativeness=modality_informativeness,
            loss_weights=loss_weights,
            confidence=confidence,
            modality_dropout=modality_dropout,
            gate_rank=[ranks[m] for m in self.modalities_],
            images=[self.images_.get(m) for m in self.modalities_],
            image_options=image_options,
            feature_clip=feature_clip,
        )
        self._present = aligned.present
        self._model_summary_string = (
            f"MMDynamics: modalities {self.modalities_}, {len(self.classes_)} classes, "
            f"hidden {[hidden[m] for m in self.modalities_]}, FI={feature_informativeness}, "
            f"MI={modality_informativeness}, confidence={confidence!r}, "
            f"modality_dropout={modality_dropout}, "
            f"gate_rank={[ranks[m] for m in self.modalities_]}, "
            f"feature_scaling={feature_scaling!r}, feature_clip={feature_clip}"
            + (f", images {self.images_}" if self.images_ else "")
        )
        self.init_params_ = self._get_init_params(locals())
        # scvi-tools keeps a store of managers per model instance for the whole session
        weakref.finalize(self, drop_instance_store, type(self), self.id)

    # ------------------------------------------------------------------ setup
    @classmethod
    @kept_random_state()  # MuData.update draws column names from Python's generator
    def setup_mudata(
        cls,
        mdata: MuData,
        labels_key: str | None = None,
        modalities: Sequence[str] | None = None,
        layers: Mapping[str, str | None] | None = None,
        mask_var: Mapping[str, str] | None = None,
        features: Mapping[str, Sequence[str]] | None = None,
        classes: Sequence[str] | None = None,
        image_key: str = IMAGE_KEY,
        images: Mapping[str, Mapping] | None = None,
        **kwargs,
    ) -> None:
        """Register a MuData for :class:`MMDynamics`.

        Nothing is written into ``mdata``: the model works on a private copy in which every
        modality is aligned to ``mdata.obs_names`` by cell name, with a presence mask.

        Parameters
        ----------
        mdata
            The data.
        labels_key
            Label column: in ``mdata.obs``, else ``"mod:column"``, else the one modality whose
            ``.obs`` has it. Cells with a missing label are unlabeled (not trained on).
        modalities
            Modalities to use, in order (default: all of ``mdata.mod``).
        layers
            Layer per modality; a modality not named uses ``layers["mmdyn_prepared"]`` when
            :func:`mmdyn_sc.pp.prepare` wrote it, else ``.X``.
        mask_var
            Boolean ``.var`` column per modality restricting its features (e.g.
            ``{"rna": "highly_variable"}``).
        features
            Explicit feature names per modality (overrides ``mask_var``; used when a trained
            model is loaded onto new data).
        classes
            Explicit class list (used when a trained model is loaded onto new data).
        image_key
            A modality whose ``.obsm`` holds this key is an image modality: its images, an
            array (n_cells, channels, H, W) of ``uint8`` (0..255) or float in [0, 1] with
            square H = W, are what the model reads (its ``.X`` may have no features). See
            :func:`mmdyn_sc.pp.images_from_files`.
        images
            Explicit image modalities, ``{mod: {"obsm_key", "channels", "image_size"}}`` (used
            when a trained model is loaded onto new data).
        """
        source_registry = kwargs.pop("source_registry", None)
        resolved = resolve_setup(
            mdata, labels_key, modalities, layers, mask_var, features, classes,
            labels_required=source_registry is None, image_key=image_key, images=images,
        )
        aligned = align_mudata(
            mdata, resolved["modalities"], resolved["layers"], resolved["features"],
            resolved["label_codes"], absent=resolved["absent"], images=resolved["images"],
        )
        # Record the resolved values, so the setup replays identically on new data.
        setup_method_args = cls._get_setup_method_args(
            cls=cls, mdata=mdata, labels_key=labels_key, modalities=resolved["modalities"],
            layers=resolved["layers"], mask_var=dict(mask_var or {}),
            features=resolved["features"], classes=resolved["classes"], image_key=image_key,
            images=resolved["images"],
        )
        register_aligned(cls, aligned, setup_method_args, source_registry, **kwargs)
        ALIGNED_COPIES.add(mdata, aligned)

    @classmethod
    def setup_anndata(cls, *args, **kwargs):
        """Not supported: MM dynamics needs a MuData.

        Use :meth:`~mmdyn_sc.MMDynamics.setup_mudata`.
        """
        raise NotImplementedError("MMDynamics works on MuData; use MMDynamics.setup_mudata.")

    # ------------------------------------------------------------------ data
    @property
    def label_codes(self) -> np.ndarray:
        """Integer label of each training-data cell; -1 for unlabeled cells."""
        return self.adata.obs[LABELS_COLUMN].to_numpy().astype(np.int64)

    def _align_query(self, mdata: MuData | None) -> MuData:
        """The model's aligned copy of ``mdata`` (the training data when ``None``)."""
        if mdata is None or mdata is self.adata:
            return self.adata
        setup = self.adata_manager.registry["setup_args"]
        resolved = resolve_setup(
            mdata, setup["labels_key"], self.modalities_, setup["layers"], None,
            self.features_, self.classes_, labels_required=False, images=self.images_,
        )
        if resolved["absent"]:
            used = [m for m in self.modalities_ if m not in resolved["absent"]]
            warn(f"modalities {resolved['absent']} absent from the data: predicting from "
                 f"{used} only")
        aligned = align_mudata(
            mdata, self.modalities_, resolved["layers"], self.features_, resolved["label_codes"],
            absent=resolved["absent"], images=self.images_,
        )
        with quiet_scvi():  # "attempting to transfer setup" on every query
            return self._validate_anndata(aligned.mdata)

    def _loader_kwargs(self, aligned: MuData) -> dict:
        """Data loader options (image modalities keep their stored dtype per minibatch)."""
        if not self.images_:
            return {}
        manager = self.get_anndata_manager(aligned, required=True)
        return {"data_and_attributes": loader_dtypes(manager, aligned, self.modalities_,
                                                     self.images_)}

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int = DEFAULTS["max_epochs"],
        lr: float = DEFAULTS["lr"],
        weight_decay: float = DEFAULTS["weight_decay"],
        lr_step_size: int | None = DEFAULTS["lr_step_size"],
        lr_gamma: float = DEFAULTS["lr_gamma"],
        batch_size: int | Literal["auto"] | None = DEFAULTS["batch_size"],
        train_size: float = DEFAULTS["train_size"],
        calibration_size: float = 0.1,
        early_stopping: bool = DEFAULTS["early_stopping"],
        early_stopping_patience: int = 20,
        early_stopping_monitor: str = "validation_loss",
        seed: int | None = 0,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        checkpoint_dir: str | None = None,
        checkpoint_every_n_epochs: int = 10,
        resume: bool = False,
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        train_only_cells: np.ndarray | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train on the labelled cells with scvi-tools' data splitter and Lightning runner.

        The labelled cells are split per class (seeded) into training and validation cells;
        feature scaling and class weights are fitted on the training cells. The indices are
        kept in ``train_indices`` and ``validation_indices``, the per-epoch metrics in
        ``history``.

        Parameters
        ----------
        max_epochs
            Most passes over the training cells (200; recipe ``"paper"``: 1000, all of them
            run as it has no early stopping).
        lr
            Adam's learning rate (``1e-3``; recipe ``"paper"``: ``1e-4``).
        weight_decay
            Adam's weight decay (``1e-4``, as in recipe ``"paper"``).
        lr_step_size
            Epochs between the steps of a StepLR learning-rate schedule, each multiplying
            the learning rate by ``lr_gamma``; ``None`` (the default) keeps the learning
            rate constant (recipe ``"paper"``: 500).
        lr_gamma
            Factor by which StepLR multiplies the learning rate every ``lr_step_size``
            epochs (0.2, as in recipe ``"paper"``); unused while ``lr_step_size`` is
            ``None``.
        batch_size
            Cells per minibatch; ``"auto"`` (the default): 128, or 32 when the model has an
            image modality (too few steps at 128 let the patch gate shut); ``None``
            trains on every training cell in every step (full batch, recipe ``"paper"``).
        train_size
            Fraction of each class's labelled cells used for training (0.9); 1.0 (recipe
            ``"paper"``) leaves no validation cells (then early stopping watches the
            training loss and the certainty is not calibrated).
        calibration_size
            ``confidence="tcp_calibrated"`` with MI only: fraction of each class's training
            cells held out as calibration cells (seeded, at least one cell of a class stays
            in training). Their labels train only the confidence heads, which learn the TCP
            of cells the classifiers do not fit (run without dropout, as at prediction); no
            other term sees them. Kept in ``calibration_indices`` (a subset of
            ``train_indices``). 0 trains the heads on the training cells' own TCP instead.
            Ignored by the other options.
        early_stopping
            Stop training when ``early_stopping_monitor`` has not improved for
            ``early_stopping_patience`` epochs (``True``; recipe ``"paper"``: ``False``,
            every one of ``max_epochs`` runs). Off under DDP (scvi-tools).
        early_stopping_patience
            Epochs without improvement of the monitored metric after which training stops
            (20).
        early_stopping_monitor
            Logged metric that early stopping watches (``"validation_loss"``, lower is
            better; a metric named with ``f1`` or ``accuracy`` is maximised instead); the
            metrics are listed in :class:`~mmdyn_sc.model.MMDynamicsTrainingPlan`. Without
            validation cells, its ``train`` counterpart is watched.
        seed
            Seeds the split, minibatch order and dropout (0; ``None``: leave the global
            state).
        accelerator
            Lightning's accelerator: ``"auto"`` (the default: a GPU when there is one),
            ``"cpu"``, ``"gpu"``, ...
        devices
            Lightning's devices for the accelerator: ``"auto"`` (the default), a number of
            devices (e.g. ``4``, with ``strategy="ddp"``) or a list of device indices.
        checkpoint_dir
            Directory for Lightning checkpoints (``last.ckpt`` and the latest
            ``epochNNNN.ckpt``), written every ``checkpoint_every_n_epochs`` epochs. A
            checkpoint holds the weights, optimizer, learning-rate schedule, early-stopping
            state, random-number states and the history so far.
        checkpoint_every_n_epochs
            Epochs between checkpoints.
        resume
            Continue from ``checkpoint_dir/last.ckpt`` when it exists (else start afresh): the
            fit ends exactly as an uninterrupted one with the same data and settings would. A
            checkpoint written with other settings or data raises ``ValueError``.
        datasplitter_kwargs
            Extra arguments for scvi-tools' :class:`~scvi.dataloaders.DataSplitter`, which
            makes the training and validation loaders (e.g. ``{"pin_memory": True}``).
        plan_kwargs
            Extra arguments for the training plan,
            :class:`~mmdyn_sc.model.MMDynamicsTrainingPlan`.
        train_only_cells
            Integer indices of labelled cells that are always trained on and never validated
            on, e.g. the pseudo-labelled cells of a transductive :func:`mmdyn_sc.tl.fit`:
            the validation split, early stopping and the certainty calibration then use
            cells with the user's labels only.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (e.g. ``enable_progress_bar=False``,
            ``strategy="ddp"``, ``num_nodes``).

        Notes
        -----
        With a DDP strategy (``strategy="ddp"``, ``"ddp_find_unused_parameters_true"``, a
        ``DDPStrategy``, ...), scvi-tools' distributed sampler is switched on
        (``datasplitter_kwargs={"distributed_sampler": True}``, unless given): each process
        trains on its own share of the training cells, so ``batch_size`` is per process
        and the global batch is ``batch_size`` times the number of processes. Lightning runs
        the script once per process; every process ends with the same weights. Validation
        cells are shared out too: the ``history`` (kept by process 0 only, empty elsewhere)
        holds process 0's share. scvi-tools turns early stopping off under DDP, so the fit
        runs ``max_epochs``. :attr:`is_global_zero` tells the processes apart.
        """
        run_training(
            self, max_epochs=max_epochs, lr=lr, weight_decay=weight_decay,
            lr_step_size=lr_step_size, lr_gamma=lr_gamma, batch_size=batch_size,
            train_size=train_size, calibration_size=calibration_size,
            early_stopping=early_stopping, early_stopping_patience=early_stopping_patience,
            early_stopping_monitor=early_stopping_monitor, seed=seed, accelerator=accelerator,
            devices=devices, checkpoint_dir=checkpoint_dir,
            checkpoint_every_n_epochs=checkpoint_every_n_epochs, resume=resume,
            datasplitter_kwargs=datasplitter_kwargs, plan_kwargs=plan_kwargs,
            trainer_kwargs=trainer_kwargs, train_only_cells=train_only_cells,
        )
        self.certainty_ = self._fit_certainty()

    def _fit_certainty(self) -> dict:
        """Calibrate the certainty on the validation cells (:mod:`._certainty`).

        The latent prototypes come from at most 1000 training cells per class; the novelty
        reference is the validation cells (the training cells when there are none).
        """
        val = np.asarray(self.validation_indices, dtype=np.int64)
        train = np.asarray(self.train_indices, dtype=np.int64)
        codes = self.label_codes
        train = train[_attribution.sample_per_class(codes[train], len(self.classes_),
                                                    _certainty.PROTOTYPE_CELLS)]
        rows = np.concatenate([train, val])
        # Batches no larger than training's: the same peak memory.
        batch_size = min(1024, int(getattr(self, "train_params_", {}).get("batch_size", 1024)))
        loader = self._make_data_loader(adata=self.adata, indices=rows, batch_size=batch_size,
                                        shuffle=False, **self._loader_kwargs(self.adata))
        with kept_random_state():
            result = run_inference(self.module, loader, len(self.modalities_),
                                   len(self.classes_))
        n_train = len(train)
        sizes = [branch.classifier.in_features for branch in self.module.branches]
        ends = np.cumsum(sizes)
        blocks = [(int(end - size), int(end)) for end, size in zip(ends, sizes, strict=True)]
        reference = np.arange(len(rows)) >= n_train
        novelty = _certainty.fit_novelty(result.latent, result.weights, result.present,
                                         codes[rows], len(self.classes_), blocks, reference)
        on_validation = _results.subset(result, np.flatnonzero(reference))
        return _certainty.fit_certainty(on_validation, codes[val], self.modalities_, novelty)

    @property
    def is_global_zero(self) -> bool:
        """Whether this process holds the results (global rank 0).

        ``False`` only on the other processes of a distributed (DDP) fit: they end with the
        same weights but an empty ``history``, and :func:`mmdyn_sc.tl.fit` writes nothing
        there.
        """
        return getattr(self, "_global_rank", 0) == 0

    # ------------------------------------------------------------------ inference
    @contextmanager
    def _aligned(self, mdata: MuData | None) -> Iterator[MuData]:
        """The aligned copy of ``mdata`` for one computation; a query's is forgotten after."""
        self._check_if_trained(warn=False)
        aligned = self._align_query(mdata)
        try:
            yield aligned
        finally:
            if aligned is not self.adata:
                # Repeated predictions must not pile up registered copies.
                forget_query(self, aligned)

    def infer(self, mdata: MuData | None = None, batch_size: int = 1024, *,
              attribution_rows: np.ndarray | None = None,
              attribution_cells: int = _attribution.ATTRIBUTION_CELLS,
              image_attribution: bool = False) -> InferenceResult:
        """Run the trained model over every cell of ``mdata`` (default: the training data).

        With ``attribution_rows`` (positions of cells in ``mdata``), also the per-class
        attribution over at most ``attribution_cells`` of them per predicted class
        (``result.attribution``, see :meth:`get_attribution`). With ``image_attribution``
        and an image modality, also the patch attribution of at most ``attribution_cells``
        imaged cells per predicted class, NaN for the others (``result.image_attribution``;
        :meth:`get_image_attribution` computes it for every cell).
        """
        with self._aligned(mdata) as aligned:
            loader = self._make_data_loader(adata=aligned, batch_size=batch_size,
                                            shuffle=False, **self._loader_kwargs(aligned))
            with kept_random_state():  # a DataLoader pass draws a seed from torch's generator
                result = run_inference(self.module, loader, len(self.modalities_),
                                       len(self.classes_))
                if attribution_rows is not None:
                    result.attribution = _attribution.class_attribution(
                        self, aligned, attribution_rows, result.proba.argmax(1),
                        max_cells=attribution_cells)
                if image_attribution and self.images_:
                    result.image_attribution = _image_attribution.image_attribution(
                        self, aligned, _image_attribution.capped_rows(self, result,
                                                                       attribution_cells))
        return result

    def get_image_attribution(self, mdata: MuData | None = None,
                              modality: str | None = None) -> np.ndarray:
        """Patch attribution of every cell of an image modality, (cells, grid, grid).

        Integrated gradients of the log probability of each cell's predicted class, from an
        image of the training mean colour to the cell's image (16 steps), summed over the
        channels and pixels of each ``patch_size`` x ``patch_size`` patch. Positive: the patch
        is evidence for the predicted class. Rows follow ``mdata``'s cells (default: the
        training data); NaN for cells without the image. ``modality``: the image modality
        (default: the only one).
        """
        if not self.images_:
            raise ValueError("The model has no image modality.")
        if modality is None:
            if len(self.images_) > 1:
                raise ValueError(f"The model has several image modalities "
                                 f"({list(self.images_)}); pass modality=.")
            modality = next(iter(self.images_))
        if modality not in self.images_:
            raise KeyError(f"{modality!r} is not an image modality of the model "
                           f"({list(self.images_)}).")
        with self._aligned(mdata) as aligned, kept_random_state():
            values = _image_attribution.image_attribution(self, aligned)
        return values[self.modalities_.index(modality)]

    def get_attribution(
        self, mdata: MuData | None = None, *, grouped: bool = True,
        max_cells_per_class: int = _attribution.ATTRIBUTION_CELLS, batch_size: int = 1024,
    ) -> dict[str, pd.DataFrame]:
        """Per-class feature attribution of each tabular modality (features x classes).

        Integrated gradients of the log probability of each cell's predicted class, from the
        training mean of the input to the cell (16 steps), averaged over at most
        ``max_cells_per_class`` cells per predicted class of ``mdata`` (default: the training
        data's cells, all of them). Higher: more evidence for the class, in units of log
        probability relative to an average training cell. With ``grouped`` (the package's
        default explanation, what :func:`mmdyn_sc.tl.fit` stores), each feature is also
        credited with the attribution of the features that rise and fall with it (Pearson
        ``r >= 0.2`` on the attributed cells), so that all of several co-expressed markers show;
        ``grouped=False`` gives the mean attribution itself. NaN for a class no cell was
        predicted as. A model fitted with ``n_fits > 1`` averages its extra fits'
        attributions of the same cells (``attribution_members_``).
        """
        n_obs = (self.adata if mdata is None else mdata).n_obs
        result = self.infer(mdata, batch_size, attribution_rows=np.arange(n_obs),
                            attribution_cells=max_cells_per_class)
        return self.attribution_frames(result, grouped=grouped)

    def attribution_frames(self, result: InferenceResult, grouped: bool = True
                           ) -> dict[str, pd.DataFrame]:
        """``result.attribution`` per tabular modality as DataFrames features x classes."""
        values = result.attribution.grouped if grouped else result.attribution.direct
        return {mod: pd.DataFrame(v, index=self.features_[mod], columns=list(self.classes_))
                for mod, v in values.items()}

    def attribution_blocks(self, mdata: MuData | None, rows: np.ndarray,
                           modality: str, batch_size: int = _attribution.IG_BATCH):
        """Per-cell attributions of ``rows`` of ``mdata`` for their predicted class, by block.

        Yields ``(positions in rows, attributions (b, d) of ``modality``'s features, NaN rows
        where a cell lacks the modality, fused class probabilities (b, C))``. See
        :func:`mmdyn_sc.tl.explain`.
        """
        m = self.modalities_.index(modality)
        with self._aligned(mdata) as aligned, kept_random_state():
            for where, values, present, _, proba in _attribution.attribution_blocks(
                    self, aligned, rows, None, batch_size=batch_size):
                yield where, np.where(present[:, m:m + 1], values[m], np.nan), proba

    def _obs_names(self, mdata: MuData | None) -> pd.Index:
        return self.adata.obs_names if mdata is None else mdata.obs_names

    def predict(
        self, mdata: MuData | None = None, soft: bool = False, batch_size: int = 1024
    ) -> pd.Series | pd.DataFrame:
        """Predicted class per cell (``soft=True``: class probabilities, cells x classes)."""
        result = self.infer(mdata, batch_size)
        index = self._obs_names(mdata)
        if soft:
            return pd.DataFrame(result.proba, index=index, columns=self.classes_)
        return pd.Series(
            pd.Categorical.from_codes(result.proba.argmax(1), categories=self.classes_),
            index=index, name="prediction",
        )

    def get_latent_representation(
        self, mdata: MuData | None = None, batch_size: int = 1024
    ) -> np.ndarray:
        """Fused latent (cells x sum of hidden sizes): the scaled modality latents, concatenated."""
        return self.infer(mdata, batch_size).latent

    def get_modality_confidence(
        self, mdata: MuData | None = None, batch_size: int = 1024
    ) -> pd.DataFrame:
        """Confidence the model gave each modality per cell; NaN where the cell lacks it.

        Its meaning depends on ``confidence``: the predicted TCP for ``"tcp"`` and
        ``"tcp_calibrated"``, the normalised fusion weight for ``"energy"`` and ``"pdf"``;
        1 without MI.
        """
        result = self.infer(mdata, batch_size)
        return self.confidence_frame(result, self._obs_names(mdata))

    def confidence_frame(self, result: InferenceResult, index: pd.Index) -> pd.DataFrame:
        """Per-cell modality confidence of ``result`` as a DataFrame (NaN where absent)."""
        return _results.modality_frame(result.confidence, result, index, self.modalities_)

    def predicted_tcp_frame(self, result: InferenceResult, index: pd.Index) -> pd.DataFrame | None:
        """Predicted TCP per cell and modality (NaN where absent); ``None`` if not predicted."""
        if result.tcp_hat is None:
            return None
        return _results.modality_frame(result.tcp_hat, result, index, self.modalities_)

    def get_feature_weights(
        self, mdata: MuData | None = None, batch_size: int = 1024
    ) -> dict[str, pd.DataFrame]:
        """Mean gate value per feature and predicted class, per modality (features x classes).

        A model without feature gates uses every feature with weight 1, and says so.
        """
        return self.feature_weight_frames(self.infer(mdata, batch_size))

    def feature_weight_frames(self, result: InferenceResult) -> dict[str, pd.DataFrame]:
        """Per tabular modality, the mean gate per predicted class from ``result``.

        NaN where no cell was predicted as the class; image modalities have per-cell
        heatmaps (``result.heatmaps``) instead.
        """
        return _results.feature_weight_frames(result, self.modalities_, self.features_,
                                              self.classes_, self.images_)

    @staticmethod
    def informativeness(result: InferenceResult, m: int) -> np.ndarray | None:
        """Mean gate value per feature of modality ``m`` over all cells that have it."""
        return _results.informativeness(result, m)

    # ------------------------------------------------------------------ save / load
    def save(
        self,
        dir_path: str,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        save_kwargs: dict | None = None,
        legacy_mudata_format: bool = False,
        datamodule: LightningDataModule | None = None,
        **anndata_write_kwargs,
    ) -> None:
        """Save the trained model into ``dir_path``, for :meth:`~mmdyn_sc.MMDynamics.load`.

        scvi-tools' save writes one file, ``dir_path/model.pt``: the network's weights
        (with the fitted feature scaling), the options the model was built with, the
        registration of :meth:`setup_mudata` (modalities, layers, features, classes, image
        modalities) and the model's other attributes ending in ``_`` (e.g. the training
        options, the certainty calibration and the version of mmdyn_sc). The data are not
        saved (``save_anndata=False``, the default). ``MMDynamics.load(dir_path, mdata)``
        reads it back onto a MuData with the model's modalities and features.

        Parameters
        ----------
        dir_path
            Folder to write into. It must not exist yet, unless ``overwrite=True``.
        prefix
            Prepended to the file names (``f"{prefix}model.pt"``). :meth:`load` reads
            ``model.pt`` only: keep the default ``None`` for a model it should load.
        overwrite
            ``True``: write into an existing ``dir_path``, replacing its ``model.pt`` (other
            files are left there). ``False`` (the default): an existing ``dir_path`` raises
            ``ValueError``.
        save_anndata
            ``True``: also write the model's own aligned copy of the training data (every
            modality aligned to the cells, as :meth:`setup_mudata` built it) into the folder
            as ``mdata.h5mu``; :meth:`load` does not read it. ``False`` by default.
        save_kwargs
            Keyword arguments for :func:`torch.save`.
        legacy_mudata_format
            ``True``: store the feature names as one flat array over all modalities
            (scvi-tools' legacy layout) instead of one array per modality (``False``).
        datamodule
            For models set up on a Lightning data module in scvi-tools; unused by
            :class:`MMDynamics`, which is set up on a MuData (``None``).
        **anndata_write_kwargs
            With ``save_anndata=True``: passed to the MuData's ``write``.

        Examples
        --------
        >>> model.save("model", overwrite=True)
        >>> model = MMDynamics.load("model", mdata)
        """
        super().save(
            dir_path, prefix=prefix, overwrite=overwrite, save_anndata=save_anndata,
            save_kwargs=save_kwargs, legacy_mudata_format=legacy_mudata_format,
            datamodule=datamodule, **anndata_write_kwargs,
        )

    @classmethod
    def load(
        cls,
        dir_path: str,
        mdata: MuData | None = None,
        *,
        adata: MuData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
    ) -> MMDynamics:
        """Load a model saved with :meth:`~mmdyn_sc.MMDynamics.save` onto ``mdata``.

        ``mdata`` needs the model's modalities, layers and features (features are matched
        by name, in any order; extra features are ignored); labels are optional. If anything
        is missing, one ``ValueError`` lists every difference; a model whose weights this
        version cannot read raises ``ValueError`` naming the version that saved it. Nothing
        is written into ``mdata``. A model saved before 0.2.0 is rebuilt with the options
        it was trained with, whatever today's defaults are.

        Parameters
        ----------
        dir_path
            The folder :meth:`~mmdyn_sc.MMDynamics.save` wrote.
        mdata
            The data to predict on.
        adata
            Same as ``mdata``, under scvi-tools' name for it (give one of the two).
        accelerator, device
            Where the model goes: ``"auto"`` picks the first GPU when there is one, else the
            CPU; ``device`` may name one (``"cpu"``, ``"cuda:1"``, ``1``).

        Returns
        -------
        MMDynamics
            The trained model, in evaluation mode.
        """
        if mdata is not None and adata is not None:
            raise ValueError("Give the data once: mdata=... or adata=..., not both.")
        mdata = adata if mdata is None else mdata
        if mdata is None:
            raise ValueError("MMDynamics.load needs the MuData to predict on (mdata=...).")
        if not isinstance(mdata, MuData):
            raise TypeError(f"MMDynamics.load needs a MuData, got {type(mdata).__name__}.")
        return load_model(cls, dir_path, mdata, accelerator=accelerator, device=device)
