"""MMDynamics: the scvi-tools model class for MM dynamics on MuData."""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from mudata import MuData
from scvi.data import AnnDataManager, fields
from scvi.data._constants import _SCVI_UUID_KEY
from scvi.dataloaders import DataSplitter
from scvi.model.base import BaseModelClass
from scvi.model.base._save_load import _load_saved_files

from .._data import (
    CALIBRATION_COLUMN,
    LABELS_COLUMN,
    AlignedData,
    align_mudata,
    presence_column,
)
from .._data._images import ALIGNED_IMAGE_KEY, IMAGE_KEY
from .._utils import logger
from ..module import MMDynamicsModule
from ..module._low_rank_gate import check_gate_rank
from . import _registry_keys as rk
from ._checkpoint import MMDynamicsTrainRunner, checkpoint_callbacks, last_checkpoint
from ._feature_scaling import check_feature_clip, fit_channel_scaling, fit_scaling
from ._fingerprint import run_fingerprint
from ._inference import InferenceResult, run_inference
from ._load_check import compare_with_saved_setup, mismatch_error, state_dict_error
from ._setup import resolve_setup
from ._split import calibration_split, stratified_split
from ._training_plan import MMDynamicsTrainingPlan

#: ``gate_rank="auto"``: this rank for tabular modalities with at least
#: ``AUTO_GATE_MIN_FEATURES`` features, the full gate for the others. Measured in
#: ``benchmarks/gate_rank.py``: rank 64 vs full, paired macro F1 +1.0 ± 1.6 points at 2000
#: genes (pbmc10k, 5 folds; 4.4x faster fits) and +0.1 ± 8.0 at 1000 genes (BMMC, 20 runs;
#: no faster), so the switch starts where it pays.
AUTO_GATE_RANK = 64
AUTO_GATE_MIN_FEATURES = 2000
CLASS_WEIGHTS = (None, "balanced")


def is_ddp_strategy(strategy) -> bool:
    """Whether ``strategy`` (a Lightning strategy name or object) is DDP-like."""
    if strategy is None:
        return False
    if isinstance(strategy, str):
        return "ddp" in strategy.lower()
    from lightning.pytorch.strategies import DDPStrategy

    return isinstance(strategy, DDPStrategy)


@contextmanager
def quiet_scvi():
    """scvi-tools' INFO messages off for the duration (its logger at WARNING)."""
    scvi_logger = logging.getLogger("scvi")
    level = scvi_logger.level
    scvi_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        scvi_logger.setLevel(level)


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

    Parameters
    ----------
    mdata
        MuData set up with :meth:`setup_mudata`.
    n_hidden
        Latent size, one int for all modalities or a dict per modality (original: 1000).
    dropout
        Dropout rate after each encoder (original: 0.5).
    feature_informativeness
        Feature gates (FI) on. Off: no gate and no sparsity term.
    modality_informativeness
        Confidence scaling (MI) on. Off: no scaling and no confidence term. Both off is
        MM static.
    feature_scaling
        ``None``, ``"minmax"`` or ``"standard"``: per-feature scaling fitted on the training
        cells when :meth:`train` runs, stored in the model and reapplied to new data. An
        image modality is scaled per channel (every pixel a value of its channel).
    feature_clip
        ``None`` (no clipping, as in the original), or c > 0 with
        ``feature_scaling="standard"``: z-scores of tabular modalities are clipped to
        ``[-c, c]`` (as ``scanpy.pp.scale(max_value=c)``, on both sides), so that a gene
        expressed in a few cells does not feed the encoder values of 10 or more. Images are
        not clipped. ``tl.fit``'s recipe ``"default"`` uses 5 (chosen on validation cells:
        ``benchmarks/results/pbmc10k_tune.md``).
    class_weights
        ``None`` or ``"balanced"`` (cross-entropy weighted by inverse class frequency of the
        training cells).
    loss_weights
        Weights of the loss terms ``fused``, ``sparsity``, ``confidence``, ``modality``
        (default 1 each, as in the original).
    confidence
        How MI weighs each modality per cell (see :class:`~mmdyn_sc.module.MMDynamicsModule`):
        ``"tcp"`` (the original unbounded TCP regression), ``"tcp_calibrated"`` (bounded,
        detached target and input, learnt on held-out calibration cells: see
        ``calibration_size`` in :meth:`train`), ``"energy"`` (QMF energy score) or ``"pdf"``
        (Predictive Dynamic Fusion).
    modality_dropout
        Probability of hiding each of a cell's modalities from the fusion during training
        (never all), so that the model predicts well when a modality is absent.
    gate_rank
        Rank of the feature gates: ``None`` (the full d x d gate of the original), one int
        for every modality with more features than that (the others keep the full gate),
        a dict per modality (modalities not named keep the full gate; a named rank must
        be below the modality's feature count), or ``"auto"`` (``tl.fit``'s default): rank
        64 for modalities with at least 2000 features, the full gate below (no loss of
        macro F1 at 2000 genes, 4x faster fits: ``benchmarks/results/gate_rank.md``). A
        rank r gives the low-rank gate
        ``sigmoid(B (A x))`` with ``A`` d -> r and ``B`` r -> d: O(d r) parameters instead
        of O(d^2), for modalities with thousands of features. Ignored without FI.
    image_options
        Options of the image branches (image MM dynamics, see
        :class:`~mmdyn_sc.module.ImageBranch`), defaults in
        :data:`~mmdyn_sc.module.DEFAULT_IMAGE_OPTIONS`: ``patch_size`` (8: an 8 x 8 heatmap
        grid on 64 x 64 images), ``encoder_depth`` and ``encoder_width`` (the study's CNN: 2
        conv + pool blocks from 32 channels), ``encoder_fc`` (128), ``unet_channels`` (16),
        ``unet_depth`` (2), ``gate_sparsity`` (1: the factor of the patch gate's L1
        term) and ``gate_warmup`` (100: training steps during which the gate is held,
        neither learning nor penalised; the study trained it from the first step, which
        shuts it on every image). The image side must be
        divisible by ``patch_size``, by ``2**unet_depth`` and by ``2**encoder_depth``.

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

    #: Private aligned copies made by :meth:`setup_mudata`, keyed by ``id(mdata)``.
    _aligned_store: dict[int, tuple[weakref.ref, AlignedData]] = {}

    def __init__(
        self,
        mdata: MuData,
        n_hidden: int | Mapping[str, int] = 256,
        dropout: float = 0.5,
        feature_informativeness: bool = True,
        modality_informativeness: bool = True,
        feature_scaling: str | None = None,
        class_weights: str | None = None,
        loss_weights: Mapping[str, float] | None = None,
        confidence: str = "tcp",
        modality_dropout: float = 0.0,
        gate_rank: int | str | Mapping[str, int | None] | None = None,
        image_options: Mapping[str, float] | None = None,
        feature_clip: float | None = None,
    ):
        feature_clip = check_feature_clip(feature_clip, feature_scaling)
        aligned = self._aligned_for(mdata)
        super().__init__(aligned.mdata)
        if class_weights not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weights must be one of {CLASS_WEIGHTS}, got {class_weights!r}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        setup = self.adata_manager.registry["setup_args"]
        self.modalities_ = list(setup["modalities"])
        self.classes_ = list(setup["classes"])
        self.features_ = {m: list(f) for m, f in setup["features"].items()}
        self.images_ = {m: dict(spec) for m, spec in (setup.get("images") or {}).items()}
        self.mmdyn_sc_version_ = _package_version()
        hidden = self._hidden_sizes(n_hidden)
        ranks = self._gate_ranks(gate_rank)
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
        self.module.on_load = lambda model, **kwargs: None  # scvi-tools' load hook
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

    # ------------------------------------------------------------------ setup
    @classmethod
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
        modalities = resolved["modalities"]
        layers = resolved["layers"]
        features = resolved["features"]
        classes = resolved["classes"]
        images = resolved["images"]
        setup_method_args = cls._get_setup_method_args(
            cls=cls, mdata=mdata, labels_key=labels_key, modalities=modalities, layers=layers,
            mask_var=dict(mask_var or {}), features=features, classes=classes,
            image_key=image_key, images=images,
        )
        # Models saved before held-out calibration cells existed have no such field.
        calibration = (source_registry is None
                       or rk.CALIBRATION in source_registry.get("field_registries", {}))
        manager = AnnDataManager(
            fields=cls._fields(modalities, images, calibration),
            setup_method_args=setup_method_args,
        )
        with quiet_scvi():  # "Generating sequential column names" for every image field
            if source_registry is not None:
                manager.register_fields(aligned.mdata, source_registry=source_registry,
                                        **kwargs)
            else:
                manager.register_fields(aligned.mdata, **kwargs)
        cls.register_manager(manager)
        key = id(mdata)
        cls._aligned_store[key] = (weakref.ref(mdata), aligned)
        # Drop the private copy with the user's object (a model keeps its own reference).
        weakref.finalize(mdata, cls._aligned_store.pop, key, None)

    @classmethod
    def setup_anndata(cls, *args, **kwargs):
        """Not supported: MM dynamics needs a MuData.

        Use :meth:`~mmdyn_sc.MMDynamics.setup_mudata`.
        """
        raise NotImplementedError("MMDynamics works on MuData; use MMDynamics.setup_mudata.")

    @staticmethod
    def _fields(modalities: Sequence[str], images: Mapping[str, Mapping],
                calibration: bool = True) -> list:
        mod_fields = []
        for i, mod in enumerate(modalities):
            if mod in images:
                field = fields.MuDataObsmField(rk.modality_x(i), ALIGNED_IMAGE_KEY, mod_key=mod,
                                               is_count_data=False, mod_required=True)
            else:
                field = fields.MuDataLayerField(rk.modality_x(i), None, mod_key=mod,
                                                is_count_data=False, mod_required=True)
            mod_fields.append(field)
            mod_fields.append(fields.MuDataNumericalObsField(rk.modality_present(i),
                                                             presence_column(i)))
        mod_fields.append(fields.MuDataNumericalObsField(rk.LABELS, LABELS_COLUMN))
        if calibration:
            mod_fields.append(fields.MuDataNumericalObsField(rk.CALIBRATION,
                                                             CALIBRATION_COLUMN))
        return mod_fields

    @classmethod
    def _aligned_for(cls, mdata: MuData) -> AlignedData:
        entry = cls._aligned_store.get(id(mdata))
        if entry is None or entry[0]() is not mdata:
            raise ValueError(
                f"Please set up your MuData with {cls.__name__}.setup_mudata first."
            )
        return entry[1]

    def _validate_anndata(self, adata=None, copy_if_view: bool = True):
        """scvi-tools' validation, applied to the private aligned copy of a set-up MuData."""
        entry = None if adata is None else self._aligned_store.get(id(adata))
        if entry is not None and entry[0]() is adata:
            adata = entry[1].mdata
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def _hidden_sizes(self, n_hidden) -> dict[str, int]:
        if isinstance(n_hidden, Mapping):
            missing = [m for m in self.modalities_ if m not in n_hidden]
            if missing:
                raise KeyError(f"n_hidden lacks modalities {missing}.")
            sizes = {m: int(n_hidden[m]) for m in self.modalities_}
        else:
            sizes = {m: int(n_hidden) for m in self.modalities_}
        bad = {m: s for m, s in sizes.items() if s < 1}
        if bad:
            raise ValueError(f"n_hidden must be positive: {bad}.")
        return sizes

    def _gate_ranks(self, gate_rank) -> dict[str, int | None]:
        """Gate rank per modality (``None``: full gate).

        A dict names ranks per modality and raises for a rank >= its feature count; one int
        applies to the modalities with more features than that; ``"auto"`` gives rank
        :data:`AUTO_GATE_RANK` to tabular modalities with at least
        :data:`AUTO_GATE_MIN_FEATURES` features.
        """
        if isinstance(gate_rank, str) and gate_rank == "auto":
            gate_rank = {m: AUTO_GATE_RANK for m in self.modalities_
                         if m not in self.images_
                         and len(self.features_[m]) >= AUTO_GATE_MIN_FEATURES}
        if isinstance(gate_rank, Mapping):
            unknown = sorted(set(gate_rank) - set(self.modalities_))
            if unknown:
                raise KeyError(f"gate_rank names unknown modalities {unknown}; the model's "
                               f"modalities are {self.modalities_}.")
            ranks = {m: gate_rank.get(m) for m in self.modalities_}
        else:
            # One rank for all: a modality with no more features than that keeps its full
            # gate, which is then no larger (e.g. 14 proteins next to 4000 genes).
            ranks = {
                m: None if isinstance(gate_rank, int) and not isinstance(gate_rank, bool)
                and gate_rank >= len(self.features_[m]) else gate_rank
                for m in self.modalities_
            }
        with_rank = [m for m in self.images_ if ranks[m] is not None]
        if with_rank:
            raise ValueError(f"gate_rank names image modalities {with_rank}: their gate is the "
                             "patch gate (see image_options), which has no rank.")
        for mod, rank in ranks.items():
            if mod in self.images_:
                continue
            ranks[mod] = check_gate_rank(rank, len(self.features_[mod]), f" of modality {mod!r}")
        return ranks

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
            logger.warning("modalities %s absent from the data: predicting from %s only",
                           resolved["absent"], used)
        aligned = align_mudata(
            mdata, self.modalities_, resolved["layers"], self.features_, resolved["label_codes"],
            absent=resolved["absent"], images=self.images_,
        )
        with quiet_scvi():  # "attempting to transfer setup" on every query
            return self._validate_anndata(aligned.mdata)

    def _loader_kwargs(self, aligned: MuData) -> dict:
        """Data loader options: image modalities keep their stored dtype per minibatch.

        ``uint8`` or ``float32`` instead of scvi-tools' float32, so that the branch knows to
        divide 8-bit images by 255.
        """
        if not self.images_:
            return {}
        try:
            from scvi.data._utils import registry_key_to_default_dtype
        except ImportError:  # pragma: no cover - scvi-tools moved it
            def registry_key_to_default_dtype(key):
                return np.int64 if key == rk.LABELS else np.float32
        manager = self.get_anndata_manager(aligned, required=True)
        dtypes = {key: registry_key_to_default_dtype(key) for key in manager.data_registry}
        for i, mod in enumerate(self.modalities_):
            if mod in self.images_:
                dtypes[rk.modality_x(i)] = aligned.mod[mod].obsm[ALIGNED_IMAGE_KEY].dtype.type
        return {"data_and_attributes": dtypes}

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_step_size: int | None = None,
        lr_gamma: float = 0.2,
        batch_size: int | None = 128,
        train_size: float = 0.9,
        calibration_size: float = 0.1,
        early_stopping: bool = True,
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
            Number of passes over the training cells.
        lr, weight_decay
            Adam's learning rate and weight decay.
        lr_step_size, lr_gamma
            StepLR schedule in epochs; ``None`` keeps the learning rate constant.
        batch_size
            Cells per minibatch; ``None`` trains on every training cell in every step.
        train_size
            Fraction of each class's labelled cells used for training; 1.0 leaves no
            validation cells (then early stopping watches the training loss).
        calibration_size
            ``confidence="tcp_calibrated"`` with MI only: fraction of each class's training
            cells held out as calibration cells (seeded, at least one cell of a class stays
            in training). Their labels train only the confidence heads, which learn the TCP
            of cells the classifiers do not fit (run without dropout, as at prediction); no
            other term sees them. Kept in ``calibration_indices`` (a subset of
            ``train_indices``). 0 trains the heads on the training cells' own TCP instead.
            Ignored by the other options.
        early_stopping, early_stopping_patience, early_stopping_monitor
            Stop when the monitored metric has not improved for that many epochs.
        seed
            Seeds the split, minibatch order and dropout (``None``: leave the global state).
        accelerator, devices
            Passed to Lightning.
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
        datasplitter_kwargs, plan_kwargs
            Extra arguments for :class:`~scvi.dataloaders.DataSplitter` and
            :class:`~mmdyn_sc.model.MMDynamicsTrainingPlan`.
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
        if max_epochs is None or int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be a positive integer, got {max_epochs}.")
        labels = self.label_codes
        if (labels >= 0).sum() == 0:
            raise ValueError("No labelled cells to train on.")
        split_seed = 0 if seed is None else int(seed)
        train_idx, val_idx = stratified_split(labels, train_size, split_seed,
                                              classes=self.classes_)
        calibration_idx = self._mark_calibration_cells(labels, train_idx, calibration_size,
                                                       split_seed)
        has_none = ~self._present[train_idx].any(axis=1)
        if has_none.any():
            raise ValueError(
                f"{int(has_none.sum())} training cell(s) have none of the modalities "
                f"{self.modalities_}."
            )
        self._fit_preprocessing(train_idx)
        if batch_size is None:
            batch_size = len(train_idx)
        if seed is not None:
            torch.manual_seed(int(seed))
            np.random.seed(int(seed))
        monitor = early_stopping_monitor
        if early_stopping and len(val_idx) == 0 and monitor.startswith("validation"):
            monitor = monitor.replace("validation", "train", 1)
        trainer_kwargs.setdefault("early_stopping", early_stopping)
        trainer_kwargs.setdefault("early_stopping_monitor", monitor)
        trainer_kwargs.setdefault("early_stopping_patience", early_stopping_patience)
        trainer_kwargs.setdefault("early_stopping_mode",
                                  "max" if "f1" in monitor or "accuracy" in monitor else "min")
        if len(val_idx):
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        else:
            trainer_kwargs.setdefault("limit_val_batches", 0)
        train_params = {
            "max_epochs": int(max_epochs), "lr": lr, "weight_decay": weight_decay,
            "lr_step_size": lr_step_size, "lr_gamma": lr_gamma, "batch_size": int(batch_size),
            "train_size": train_size, "calibration_size": calibration_size,
            "early_stopping": early_stopping,
            "early_stopping_patience": early_stopping_patience, "seed": seed,
        }
        self._add_checkpointing(trainer_kwargs, checkpoint_dir, checkpoint_every_n_epochs,
                                resume, train_idx, val_idx, train_params)
        datasplitter_kwargs = {**self._loader_kwargs(self.adata), **(datasplitter_kwargs or {})}
        if is_ddp_strategy(trainer_kwargs.get("strategy")):
            # Without it, Lightning would replace scvi-tools' batch sampler by one of single
            # cells; with it, each process draws whole minibatches of its own share.
            datasplitter_kwargs.setdefault("distributed_sampler", True)
        data_splitter = self._data_splitter_cls(
            self.adata_manager,
            # scvi-tools wants every cell in one of the sets: unlabeled cells form the
            # "test" set, which training never reads.
            external_indexing=[train_idx, val_idx, np.flatnonzero(labels < 0)],
            batch_size=batch_size,
            **datasplitter_kwargs,
        )
        plan = self._training_plan_cls(
            self.module, n_modalities=len(self.modalities_), lr=lr, weight_decay=weight_decay,
            lr_step_size=lr_step_size, lr_gamma=lr_gamma, **(plan_kwargs or {}),
        )
        runner = self._train_runner_cls(
            self, training_plan=plan, data_splitter=data_splitter, max_epochs=int(max_epochs),
            accelerator=accelerator, devices=devices, **trainer_kwargs,
        )
        with warnings.catch_warnings():
            if resume:  # the directory holds the checkpoints being resumed
                warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*Last batch will have a small size.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            runner()
        self._global_rank = int(runner.trainer.global_rank)
        self.train_indices = np.asarray(train_idx)
        self.validation_indices = np.asarray(val_idx)
        self.calibration_indices = calibration_idx
        self.train_params_ = train_params

    def _mark_calibration_cells(self, labels: np.ndarray, train_idx: np.ndarray,
                                size: float, seed: int) -> np.ndarray:
        """Choose the held-out calibration cells and flag them in the aligned copy's obs."""
        if not 0.0 <= size < 1.0:
            raise ValueError(f"calibration_size must be in [0, 1), got {size}.")
        calibration_idx = np.array([], dtype=int)
        if (size > 0 and self.module.learns_confidence_held_out
                and rk.CALIBRATION in self.adata_manager.data_registry):
            calibration_idx = calibration_split(labels, train_idx, size, seed)
        flags = np.zeros(self.adata.n_obs, dtype=np.float32)  # align_mudata made the column
        flags[calibration_idx] = 1.0
        self.adata.obs[CALIBRATION_COLUMN] = flags
        return calibration_idx

    @property
    def is_global_zero(self) -> bool:
        """Whether this process holds the results (global rank 0).

        ``False`` only on the other processes of a distributed (DDP) fit: they end with the
        same weights but an empty ``history``, and :func:`mmdyn_sc.tl.fit` writes nothing
        there.
        """
        return getattr(self, "_global_rank", 0) == 0

    def _add_checkpointing(self, trainer_kwargs, checkpoint_dir, every_n_epochs, resume,
                           train_idx, val_idx, train_params) -> None:
        """Add checkpoint callbacks (and the checkpoint to resume from) to ``trainer_kwargs``."""
        if checkpoint_dir is None:
            if resume:
                raise ValueError("resume=True needs the checkpoint_dir to resume from.")
            return
        fingerprint = run_fingerprint(self, train_idx, val_idx, train_params)
        trainer_kwargs["extra_callbacks"] = checkpoint_callbacks(checkpoint_dir, every_n_epochs,
                                                                 fingerprint)
        last = last_checkpoint(checkpoint_dir) if resume else None
        if last is not None:
            logger.info("resuming from %s", last)
            trainer_kwargs["ckpt_path"] = str(last)
        elif resume:
            logger.info("no checkpoint in %s yet: training from the start", checkpoint_dir)

    def _fit_preprocessing(self, train_idx: np.ndarray) -> None:
        """Fit feature (image: channel) scaling and class weights on the training cells."""
        for m, mod in enumerate(self.modalities_):
            rows = train_idx[self._present[train_idx, m]]
            if mod in self.images_:
                data, fit = self.adata.mod[mod].obsm[ALIGNED_IMAGE_KEY], fit_channel_scaling
            else:
                data, fit = self.adata.mod[mod].X, fit_scaling
            shift, scale = fit(data, rows, self.feature_scaling)
            self.module.branches[m].scaler.set(shift, scale)
        weights = np.ones(len(self.classes_))
        if self.class_weights == "balanced":
            counts = np.bincount(self.label_codes[train_idx], minlength=len(self.classes_))
            nonzero = counts > 0
            weights[nonzero] = len(train_idx) / (nonzero.sum() * counts[nonzero])
        self.module.class_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))

    # ------------------------------------------------------------------ inference
    def infer(self, mdata: MuData | None = None, batch_size: int = 1024) -> InferenceResult:
        """Run the trained model over every cell of ``mdata`` (default: the training data)."""
        self._check_if_trained(warn=False)
        aligned = self._align_query(mdata)
        loader = self._make_data_loader(adata=aligned, batch_size=batch_size, shuffle=False,
                                        **self._loader_kwargs(aligned))
        result = run_inference(self.module, loader, len(self.modalities_), len(self.classes_))
        if aligned is not self.adata:
            # Forget the query's manager: repeated predictions must not pile up copies.
            self._per_instance_manager_store[self.id].pop(aligned.uns[_SCVI_UUID_KEY], None)
        return result

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
        values = np.where(result.present, result.confidence, np.nan)
        return pd.DataFrame(values, index=index, columns=self.modalities_)

    def predicted_tcp_frame(self, result: InferenceResult, index: pd.Index) -> pd.DataFrame | None:
        """Predicted TCP per cell and modality (NaN where absent); ``None`` if not predicted."""
        if result.tcp_hat is None:
            return None
        values = np.where(result.present, result.tcp_hat, np.nan)
        return pd.DataFrame(values, index=index, columns=self.modalities_)

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
        frames = {}
        for m, mod in enumerate(self.modalities_):
            if mod in self.images_:  # patch heatmaps per cell instead: result.heatmaps
                continue
            counts = result.gate_counts[m]
            if result.gate_sums[m] is None:
                values = np.where(counts[:, None] > 0, 1.0, np.nan) * np.ones(
                    (len(self.classes_), len(self.features_[mod]))
                )
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    values = result.gate_sums[m] / counts[:, None]
                values[counts == 0] = np.nan
            frames[mod] = pd.DataFrame(values.T, index=self.features_[mod], columns=self.classes_)
        return frames

    @staticmethod
    def informativeness(result: InferenceResult, m: int) -> np.ndarray | None:
        """Mean gate value per feature of modality ``m`` over all cells that have it."""
        if result.gate_sums[m] is None:
            return None
        total = result.gate_counts[m].sum()
        return result.gate_sums[m].sum(0) / max(total, 1.0)

    # ------------------------------------------------------------------ save / load
    @classmethod
    def load(cls, dir_path: str, mdata: MuData | None = None, **kwargs) -> MMDynamics:
        """Load a model saved with :meth:`~mmdyn_sc.MMDynamics.save` onto ``mdata``.

        ``mdata`` needs the model's modalities, layers and features (features are matched
        by name, in any order; extra features are ignored); labels are optional. If anything
        is missing, one ``ValueError`` lists every difference; a model whose weights this
        version cannot read raises ``ValueError`` naming the version that saved it.
        """
        if mdata is None:
            raise ValueError("MMDynamics.load needs the MuData to predict on (mdata=...).")
        attr_dict, _, _, _ = _load_saved_files(str(dir_path), load_adata=False,
                                               map_location="cpu")
        saved = attr_dict.get("mmdyn_sc_version_")
        problems, notes = compare_with_saved_setup(attr_dict["registry_"]["setup_args"], mdata)
        if problems:
            raise mismatch_error(dir_path, problems)
        for note in notes:
            logger.info(note)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*var_names.*does not match.*")
            warnings.filterwarnings("ignore", message=".*mod_names is deprecated.*")
            try:
                model = super().load(dir_path, adata=mdata, **kwargs)
            except RuntimeError as err:
                if "state_dict" not in str(err):
                    raise
                raise state_dict_error(dir_path, saved, _package_version(), err) from None
        if saved != _package_version():
            logger.warning("model saved with mmdyn_sc %s, loaded with %s", saved,
                           _package_version())
        return model
