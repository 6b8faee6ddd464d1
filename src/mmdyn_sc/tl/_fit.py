"""``tl.fit``: train MM dynamics on a MuData and store what it learned."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from mudata import MuData

from .._data._images import IMAGE_KEY
from .._keys import (
    DEFAULT_KEY,
    SPLIT_CALIBRATION,
    SPLIT_PSEUDO_LABELED,
    SPLIT_TRAIN,
    SPLIT_UNLABELED,
    SPLIT_VALIDATION,
    Key,
)
from .._utils import copy_mudata, logger
from ..model import MMDynamics
from ..model._attribution import ATTRIBUTION_CELLS, check_attribution_options, describe
from ..model._attribution_members import (
    auto_n_fits,
    check_n_fits,
    extra_fit_epochs_of,
    member_epochs,
    member_seed,
    member_state,
    n_fits_of,
)
from ..model._recipes import (
    MODEL_OPTIONS,
    TRAIN_OPTIONS,
    ClassWeights,
    Confidence,
    FeatureScaling,
    RecipeName,
    image_options_for,
    recipe_options,
)
from ..model._registration import release_setup
from ..model._seeding import check_seed, kept_random_state, local_seed
from ..model._setup import holds_images
from ._store import history_arrays, write_results
from ._transductive import (
    PSEUDO_LABEL_FRACTION,
    check_transductive_options,
    pseudo_labels,
    training_labels,
    transductive_record,
)


def log_pooled_images(model: MMDynamics) -> None:
    """Say at INFO which image modalities the model reads pooled (``input_size``)."""
    for mod in model.images_:
        branch = model.module.branches[model.modalities_.index(mod)]
        if branch.input_pool > 1:
            logger.info(
                "modality %r: its %d-px images are read average-pooled to %d px (image option "
                "input_size; 0 reads them whole); heatmap patches are %d px of the stored image",
                mod, branch.image_size, branch.image_size // branch.input_pool,
                branch.stored_patch_size)


class _FromRecipe:
    """Default of the options that :func:`fit` takes from its ``recipe`` when not given."""

    __slots__ = ()

    def __repr__(self) -> str:  # what the signature in the docs and help() show
        return "<recipe>"


#: Marks an option not given to :func:`fit`: its value comes from ``RECIPES[recipe]``.
_UNSET = _FromRecipe()


def _check_key(key_added: str) -> None:
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}.")
    if "/" in key_added:
        raise ValueError(f"key_added {key_added!r} contains '/': every key written "
                         f"({key_added}_proba, ...) is a name in .h5mu files, where '/' "
                         "separates groups and the file could not be read back.")


def model_summary(model: MMDynamics, key_added: str) -> dict:
    """What ``uns[key_added]`` records about a model (h5mu-safe once stored)."""
    from .. import __version__

    setup = model.adata_manager.registry["setup_args"]
    return {
        "version": __version__,
        "classes": list(model.classes_),
        "modalities": list(model.modalities_),
        "labels_key": setup["labels_key"] or "none",
        "layers": {m: setup["layers"][m] or "X" for m in model.modalities_},
        "n_features": {m: len(model.features_[m]) for m in model.modalities_
                       if m not in model.images_},
        "model_params": dict(model.init_params_.get("non_kwargs", {})),
        "train_params": dict(getattr(model, "train_params_", {})),
        "history": history_arrays(model),
        "key_added": key_added,
    }


def _train(target: MuData, labels_key: str, setup: dict, model_options: dict,
           train_options: dict, seed: int,
           train_only_cells: np.ndarray | None = None) -> MMDynamics:
    """Register ``target``, build the model (seeded) and train it.

    The registration is private to the fit: once trained, the model holds its aligned copy
    of the data alone (:func:`~mmdyn_sc.model._registration.release_setup`), so that the copy
    goes when the model goes.
    """
    MMDynamics.setup_mudata(target, labels_key=labels_key, **setup)
    with local_seed(seed):  # weight initialisation; train() seeds the rest the same way
        model = MMDynamics(target, **model_options)
    model.train(train_only_cells=train_only_cells, **train_options)
    release_setup(model, target)
    return model


def _train_members(target: MuData, labels_key: str, setup: dict, model_options: dict,
                   train_options: dict, seed: int, n_fits: int, epochs: int,
                   train_only_cells: np.ndarray | None = None) -> list[dict]:
    """Weights of ``n_fits - 1`` extra fits of the same data and options (other seeds).

    Each is trained on ``target`` itself (the model's own fit holds its own aligned copy of
    the data, :func:`_train`), without checkpoints, for ``epochs`` epochs without early
    stopping.
    Their warnings are silenced: the same data and options gave them in the model's own fit.
    """
    states = []
    for member in range(1, n_fits):
        extra_seed = member_seed(seed, member)
        member_options = {**train_options, "seed": extra_seed, "checkpoint_dir": None,
                          "resume": False, "max_epochs": epochs, "early_stopping": False}
        logger.info("extra fit %d of %d for the attribution (seed %d, %d epoch%s; n_fits=1 "
                    "skips it)", member + 1, n_fits, extra_seed, epochs, "s" * (epochs != 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extra = _train(target, labels_key, setup, model_options, member_options,
                           extra_seed, train_only_cells=train_only_cells)
        states.append(member_state(extra.module))
    return states


@kept_random_state()  # MuData updates and data loaders draw from the global generators
def fit(
    mdata: MuData,
    labels_key: str,
    *,
    modalities: Sequence[str] | None = None,
    layers: Mapping[str, str | None] | None = None,
    mask_var: Mapping[str, str] | None = None,
    key_added: str = DEFAULT_KEY,
    copy: bool = False,
    recipe: RecipeName = "default",
    feature_informativeness: bool = True,
    modality_informativeness: bool = True,
    n_hidden: int | Mapping[str, int] = _UNSET,
    dropout: float = _UNSET,
    feature_scaling: FeatureScaling | None = _UNSET,
    feature_clip: float | None = _UNSET,
    class_weights: ClassWeights | None = _UNSET,
    confidence: Confidence = _UNSET,
    modality_dropout: float = _UNSET,
    gate_rank: int | str | Mapping[str, int | None] | None = _UNSET,
    loss_weights: Mapping[str, float] | None = None,
    image_key: str = IMAGE_KEY,
    image_options: Mapping[str, float] | None = None,
    max_epochs: int = _UNSET,
    lr: float = _UNSET,
    weight_decay: float = _UNSET,
    lr_step_size: int | None = _UNSET,
    lr_gamma: float = _UNSET,
    batch_size: int | Literal["auto"] | None = _UNSET,
    train_size: float = _UNSET,
    early_stopping: bool = _UNSET,
    seed: int = 0,
    checkpoint_dir: str | None = None,
    checkpoint_every_n_epochs: int = 10,
    resume: bool = False,
    attribution: bool = True,
    attribution_cells: int = ATTRIBUTION_CELLS,
    n_fits: int | Literal["auto"] = "auto",
    transductive: bool = False,
    pseudo_label_fraction: float = PSEUDO_LABEL_FRACTION,
    **train_kwargs,
) -> MMDynamics | MuData:
    """Train MM dynamics on ``mdata`` and write predictions, confidences and feature weights.

    Parameters
    ----------
    mdata
        MuData with one or more tabular modalities. Modalities need not cover all cells: a
        cell absent from a modality gets nothing from it (NaN confidence).
    labels_key
        Label column in ``mdata.obs``, ``"mod:column"``, or a column of the one modality
        whose ``.obs`` has it. Cells with a missing label are not trained on but predicted.
    modalities
        Modalities to use (default: all).
    layers
        Layer per modality (default: ``"mmdyn_prepared"`` from :func:`mmdyn_sc.pp.prepare`
        where present, else ``.X``).
    mask_var
        Boolean ``.var`` column per modality selecting the features to use.
    key_added
        Prefix of every key written.
    copy
        Work on a copy of ``mdata`` and return the annotated copy instead of the model, as
        scanpy's ``copy=True`` does (``mdata`` is left as it was; the model is not kept).
    recipe
        ``"default"`` (the defaults of :class:`~mmdyn_sc.MMDynamics` too) or ``"paper"``
        (the original MM dynamics recipe exactly); both are listed, option by option, in
        :data:`mmdyn_sc.tl.RECIPES`. The options whose default reads ``<recipe>`` take their
        value from it; each of them below names its value in both recipes. Options given
        explicitly override the recipe.
    feature_informativeness
        Feature informativeness (FI): a learnt gate in (0, 1) per feature of every tabular
        modality (a patch gate for image modalities) and its sparsity term in the loss.
        ``False``: no gate and no sparsity term. ``True`` in both recipes.
    modality_informativeness
        Modality informativeness (MI): each modality's latent is scaled per cell by its
        confidence (see ``confidence``), learnt with a confidence term in the loss.
        ``False``: no scaling and no confidence term. ``True`` in both recipes; with
        ``feature_informativeness=False`` too, the model is MM static.
    n_hidden
        Latent size of each modality's encoder: one int for all modalities or a dict per
        modality (256 in recipe ``"default"``, 1000 in ``"paper"``, the original's). See
        :class:`~mmdyn_sc.MMDynamics`.
    dropout
        Dropout rate after each encoder (0.5 in both recipes).
    feature_scaling
        Per-feature scaling fitted on the training cells, stored in the model and reapplied
        to new data: ``"standard"`` (z-scores, recipe ``"default"``), ``"minmax"`` (the
        original's, recipe ``"paper"``) or ``None`` (none). An image modality is scaled per
        channel. See :class:`~mmdyn_sc.MMDynamics`.
    feature_clip
        Clip the z-scored inputs of tabular modalities to ``[-feature_clip, feature_clip]``
        (5 in recipe ``"default"``, chosen on validation cells:
        ``benchmarks/results/pbmc10k_tune.md``; ``None``: no clipping, recipe ``"paper"``).
        Needs ``feature_scaling="standard"``; a ``feature_scaling`` other than that given
        without ``feature_clip`` turns the recipe's clipping off.
    confidence
        How MI weighs each modality per cell: ``"energy"`` (recipe ``"default"``; chosen
        on validation cells, see :data:`mmdyn_sc.tl.RECIPES`), ``"tcp"`` (the original,
        recipe ``"paper"``), ``"tcp_calibrated"``
        (its heads learn from held-out calibration cells, 10 % of each class's training
        cells by default; ``calibration_size=`` is passed to
        :meth:`~mmdyn_sc.MMDynamics.train`) or ``"pdf"``; see
        :class:`~mmdyn_sc.MMDynamics`.
    modality_dropout
        Probability of hiding each of a cell's modalities from the fusion during training
        (never all of them), for predicting cells or queries that lack a modality (0.3 in
        recipe ``"default"``, 0 in ``"paper"``).
    gate_rank
        Rank of the feature gates (FI): ``"auto"`` (recipe ``"default"``: rank 64 for
        modalities with at least 2000 features, which lost no macro F1 against the full
        gate in ``benchmarks/results/gate_rank.md``, the full gate below), ``None``
        (recipe ``"paper"``: the full d x d gate of the original), one int for every
        modality with more features than that, or a dict per modality (those not named
        keep the full gate). A rank r replaces
        ``sigmoid(A x + a)`` by ``sigmoid(B (A x) + b)`` with ``A`` d -> r and ``B`` r -> d:
        the same per-feature gate in (0, 1) with O(d r) instead of O(d^2) parameters, for
        modalities with thousands of features (e.g. ``gate_rank={"rna": 64}``). A rank
        named in a dict must be below the modality's feature count.
    class_weights
        ``"balanced"`` (recipe ``"default"``: the cross-entropy weighted by the inverse class
        frequency of the training cells) or ``None`` (unweighted, recipe ``"paper"``, as in
        the original).
    loss_weights
        Weights of the loss terms ``"fused"``, ``"sparsity"``, ``"confidence"`` and
        ``"modality"``, e.g. ``{"sparsity": 0.5}`` (terms not named keep 1). ``None``, the
        default in both recipes: 1 each, as in the original. See
        :class:`~mmdyn_sc.MMDynamics`.
    image_key
        A modality whose ``.obsm`` holds this key is an image modality (image MM dynamics):
        an array (n_cells, channels, S, S) of ``uint8`` or float in [0, 1], e.g. from
        :func:`mmdyn_sc.pp.images_from_files`; its ``.X`` may have no features. It may hold
        only some of the cells (e.g. after :func:`mmdyn_sc.pp.pair_images_by_label`).
    image_options
        Patch size, image network sizes and the patch gate's L1 factor (see
        :class:`~mmdyn_sc.MMDynamics`), e.g. ``{"patch_size": 8}`` (the default: an 8 x 8
        heatmap on 64 x 64 images, and on 128 x 128 ones, which the branch reads pooled to
        64 px: ``input_size``). ``recipe="paper"`` trains the patch gate from the first
        step and on the full image as the study did (``gate_warmup=0``,
        ``gate_input_size=0``, ``input_size=0``); names given here override the recipe's.
    max_epochs
        Number of passes over the training cells: at most 200 in recipe ``"default"``
        (early stopping usually ends the fit sooner), exactly 1000 in ``"paper"``. See
        :meth:`~mmdyn_sc.MMDynamics.train`.
    lr
        Adam's learning rate (``1e-3`` in recipe ``"default"``, ``1e-4`` in ``"paper"``).
    weight_decay
        Adam's weight decay (``1e-4`` in both recipes).
    lr_step_size
        Epochs between the steps of a StepLR learning-rate schedule, each multiplying the
        learning rate by ``lr_gamma``; ``None`` keeps the learning rate constant (``None``
        in recipe ``"default"``, 500 in ``"paper"``).
    lr_gamma
        Factor by which the StepLR schedule multiplies the learning rate every
        ``lr_step_size`` epochs (0.2 in both recipes; unused while ``lr_step_size`` is
        ``None``).
    batch_size
        Cells per minibatch; ``None`` trains on every training cell in every step (full
        batch, recipe ``"paper"``); ``"auto"`` (recipe ``"default"``): 128, or 32 when the
        model has an image modality: at 128 a few hundred images give too few steps for the
        image encoder to learn before the patch gate starts training.
    train_size
        Fraction of each class's labelled cells used for training; the others are the
        validation cells of early stopping and of the certainty calibration (0.9 in recipe
        ``"default"``; 1.0 in ``"paper"``: no validation cells, so the certainty is
        uncalibrated).
    early_stopping
        Stop when the validation loss has not improved for ``early_stopping_patience``
        epochs (20; it and ``early_stopping_monitor`` can be passed to
        :meth:`~mmdyn_sc.MMDynamics.train` through ``**train_kwargs``). ``True`` in recipe
        ``"default"``, ``False`` in ``"paper"`` (the fit runs ``max_epochs``).
    seed
        Seeds weight initialisation, the train/validation split, minibatches and dropout,
        locally: the global torch, NumPy and Python random states are the same after the
        fit as before.
        Same seed, data and settings on the same machine and the same number of torch
        threads (:func:`torch.get_num_threads`; float sums depend on it): bit-identical
        weights and predictions on CPU, in one process or across processes.
    checkpoint_dir
        Folder into which a Lightning checkpoint (weights, optimizer, schedule, early
        stopping, random-number states, history) is written every
        ``checkpoint_every_n_epochs`` epochs; ``None`` (the default): no checkpoints. See
        :meth:`~mmdyn_sc.MMDynamics.train`.
    checkpoint_every_n_epochs
        Epochs between two checkpoints into ``checkpoint_dir`` (10 by default).
    resume
        With ``checkpoint_dir``: continue an interrupted fit from its last checkpoint (a
        fresh start when there is none); it ends with the predictions of an uninterrupted
        fit. ``False`` by default.
    attribution
        Compute the per-class feature attribution after training (``varm`` keys below) on
        at most ``attribution_cells`` training cells per predicted class (200 by default;
        a random sample, the same for the same seed), and with an image modality the patch
        attribution of at most ``attribution_cells`` imaged cells per predicted class
        (``obsm`` key below). It costs 16 forward and backward passes per attributed cell;
        ``False`` skips it.
    attribution_cells
        Most cells per predicted class whose attribution is computed when
        ``attribution=True``: training cells for the per-class attribution, imaged cells
        for the patch attribution (200 by default; a random sample, the same for the same
        seed).
    n_fits
        Fits whose per-class attributions are averaged. ``"auto"`` (the default) is 2 with
        ``recipe="default"``, ``attribution=True``, no DDP ``strategy`` and no image
        modality, and 1 otherwise (the paper recipe keeps the study's single training; an
        image modality would retrain its convolutional network in each extra fit); the
        number used is ``uns[key_added]["attribution"]["n_fits"]``. Pass ``n_fits=1`` for
        one fit (about 0.6x the time of the default's two). With ``n_fits > 1``
        the model is trained ``n_fits - 1`` more times on the same data and options, with
        seeds ``seed + 100``, ``seed + 200``, ...; ``varm[f"{key_added}_attribution"]`` and
        ``..._attribution_direct`` are then the mean over all fits of the same cells' and
        classes' attributions, which changes less with ``seed`` (on BMMC protein, two fits
        raised the per-class Spearman correlation between seeds from 0.86 to 0.90:
        ``benchmarks/results/explain.md``, fifth round). Each extra fit trains for half
        the model's own epochs (rounded up) without early stopping (a full-length extra fit
        bought hardly more stability, 0.909 against 0.904:
        ``benchmarks/results/explain_training.md``), stored in
        ``uns[key_added]["attribution"]["extra_fit_epochs"]``. It costs about
        ``1 + (n_fits - 1) / 2`` times the training and ``n_fits`` times the attribution;
        while an extra fit trains, its aligned copy of the data (as every fit makes) sits
        beside the model's own (for data near the memory limit, pass ``n_fits=1``).
        Only the attribution uses the extra fits: predictions, certainty, gates, the image
        attribution and :func:`~mmdyn_sc.tl.explain` come from the model's own fit (its
        seed ``seed``). Their weights are kept in ``model.attribution_members_`` and saved
        with the model, so :func:`~mmdyn_sc.tl.predict` averages the same fits. A given
        ``n_fits > 1`` needs ``attribution=True``, a tabular modality and no DDP
        ``strategy``.
    transductive
        Let the cells without a label (the query, put into ``mdata`` with a missing label)
        shape the model, by pseudo-labels: a first fit on the labelled cells predicts
        them; per predicted class, the ``pseudo_label_fraction`` of its unlabelled cells
        whose call the model is surest of get that class as their label (ranked by the
        certainty of mmdyn_sc 0.2.0, which also asks that the modalities' own classifiers
        agree, as co-training does); a second fit, from scratch
        with the same seed, trains on the labelled and pseudo-labelled cells and gives the
        results. Validation, early stopping and certainty calibration use labelled cells
        only, and no label of an unlabelled cell is ever read. It takes about twice the
        time of an inductive fit. The model predicts new queries with
        :func:`mmdyn_sc.tl.predict` like any other (inductively: only the cells it was
        fitted with shaped it). In ``benchmarks/results/peers.md`` (2026-12-07) it adds
        1.3 and 3.1 macro-F1 points to the inductive fit on BMMC cross-donor (3 seeds;
        chosen on those donors, so optimistic) and 0.5 points on pbmc10k (5 folds x 3
        seeds, interval includes 0), against totalVI, scANVI, CellTypist and a logistic
        regression. Its certainty separates right from wrong query calls less well (AUROC
        0.76 and 0.68 against 0.86 and 0.86 on BMMC,
        ``benchmarks/results/transductive_certainty.md``): the pseudo-labelled cells were
        trained on, and the query cells no longer look novel; inside a donor too (0.72-0.75
        on hidden cells, ``transductive_certainty_notes.md``). Not available with
        ``checkpoint_dir`` or a DDP strategy.
    pseudo_label_fraction
        With ``transductive=True``: the fraction, in (0, 1], of each predicted class's
        unlabelled cells (those the model is surest of) that get the class as their
        pseudo-label (0.5 by default).
    **train_kwargs
        Passed to :meth:`~mmdyn_sc.MMDynamics.train` and on to Lightning (e.g.
        ``enable_progress_bar=False``, ``accelerator="gpu"``, ``devices=4``,
        ``strategy="ddp"``, ``num_nodes=2``).

    Returns
    -------
    :class:`~mmdyn_sc.MMDynamics` or :class:`~mudata.MuData`
        The trained model (with ``copy=True``, the annotated copy instead). It sets:

        ``mdata.obs[f"{key_added}_prediction"]``
            Predicted class (categorical).
        ``mdata.obs[f"{key_added}_certainty"]``
            Probability that the predicted class is right: the highest class probability
            calibrated on the validation cells (Platt scaling shrunk toward the identity),
            lowered where the cell's latent
            is, in any of its modalities, farther from every class than validation cells are
            (cells of a type the model never saw); measured in
            ``benchmarks/results/confidence.md``. Uncalibrated without validation cells.
        ``mdata.obs[f"{key_added}_split"]``
            ``train`` / ``validation`` / ``unlabeled`` (categorical); ``calibration`` for the
            training cells that only the confidence heads of ``"tcp_calibrated"`` learn from
            (see ``calibration_size`` of :meth:`~mmdyn_sc.MMDynamics.train`);
            ``pseudo_labeled`` for the unlabelled cells a transductive fit trained on.
        ``mdata.obs[f"{key_added}_training_label"]``
            With ``transductive=True``: the label each cell was trained on, categorical (the
            user's label, the pseudo-label, or missing); the model is registered with this
            column.
        ``mdata.obsm[f"{key_added}_proba"]``
            Fused class probabilities, DataFrame cells x classes (columns in the order of
            ``uns[key_added]["classes"]``, each ``/`` written as ``_`` so that the h5mu file can
            be written: ``MK/E prog`` becomes ``MK_E prog``).
        ``mdata.obsm[f"{key_added}_confidence"]``
            Confidence given to each modality per cell, DataFrame cells x modalities, NaN where
            the cell lacks the modality: the predicted TCP (``"tcp"``: unbounded;
            ``"tcp_calibrated"``: in (0, 1)), the modality's share of the fusion weight over
            the modalities the cell has (``"energy"``, ``"pdf"``; rows sum to 1), or 1 without
            MI.
        ``mdata.obsm[f"{key_added}_modality_certainty"]``
            Per cell and modality, the probability that the modality's own classifier is right
            (its highest class probability calibrated on the validation cells), DataFrame cells
            x modalities, NaN where the cell lacks the modality. ``obsm[f"{key_added}_confidence"]``
            stays the weight the fusion used.
        ``mdata.obsm[f"{key_added}_tcp_predicted"]``
            Predicted TCP per cell and modality (``"tcp"``, ``"tcp_calibrated"`` and ``"pdf"``,
            whose mono-confidence predicts it); absent for the other options.
        ``mdata.obsm[f"{key_added}_tcp_true"]``
            True class probability of each modality's own classifier, labelled cells only (NaN
            elsewhere), DataFrame cells x modalities.
        ``mdata.obsm[f"{key_added}_latent"]``
            Fused latent (cells x sum of hidden sizes), for ``sc.pp.neighbors(use_rep=...)``.
        ``mdata[mod].varm[f"{key_added}_feature_weights"]``
            Mean gate value per feature over the cells predicted as each class, DataFrame
            features x classes (NaN for features the model does not use; 1 without FI;
            columns named as in ``obsm[f"{key_added}_proba"]``).
        ``mdata[mod].var[f"{key_added}_informativeness"]``
            Mean gate value per feature over all cells that have the modality.
        ``mdata[mod].varm[f"{key_added}_attribution"]``
            The package's explanation: per tabular modality, how much each feature's value
            raises the log probability of each class, DataFrame features x classes (columns as
            in ``obsm[f"{key_added}_proba"]``; NaN for a class no attributed cell was predicted
            as). Integrated gradients of the log probability of a cell's predicted class, from
            the training mean of the input to the cell, averaged over the training cells
            predicted as the class, then credited to the features that rise and fall with each
            feature (Pearson ``r >= 0.2``), so that every one of several co-expressed markers
            shows and the ranking depends less on which of them a fit used. Rank a
            class's column for its markers (:func:`mmdyn_sc.tl.rank_features`,
            :func:`mmdyn_sc.pl.attribution`). Chosen by measurement against Wilcoxon tests,
            regression coefficients and the gate values: ``benchmarks/results/explain.md``.
        ``mdata[mod].varm[f"{key_added}_attribution_direct"]``
            The same mean attribution without the credit to co-expressed features: what the
            network itself responds to (deleting a class's top features costs it more recall).
        ``mdata[image_mod].obsm[f"{key_added}_heatmap"]``
            Image modalities, with FI: the patch gate of every imaged cell, float32 array
            (cells of the image modality, grid, grid) in [0, 1], grid = image side /
            ``uns[key_added]["images"][mod]["patch_size"]`` (``patch_size`` times the factor
            by which the branch pools images above ``input_size``: 2 at 128 px); nearest
            upsampling by it gives the factor each pixel of every channel of the image the
            branch read was multiplied by. :func:`mmdyn_sc.pl.heatmaps` draws it.
        ``mdata[image_mod].obsm[f"{key_added}_attribution"]``
            Image modalities, with ``attribution``: the patch attribution of at most
            ``attribution_cells`` imaged cells per predicted class (NaN for the others;
            :meth:`~mmdyn_sc.MMDynamics.get_image_attribution` computes every cell's),
            float32 (cells of the image modality, grid, grid): integrated gradients of the log
            probability of the cell's predicted class from an image of the training mean
            colour, summed over each patch's pixels and channels (positive: evidence for the
            prediction). ``pl.heatmaps(values="attribution")`` draws it; it localises on the
            nucleus of white blood cells better than the gate (``benchmarks/results/images.md``).
        ``mdata.uns[key_added]``
            dict: ``version``, ``classes``, ``modalities``, ``labels_key``, ``layers``,
            ``n_features``, ``model_params``, ``train_params``, ``history`` (one array per
            logged metric, index = epoch), ``images`` (image modalities only: per modality
            ``obsm_key``, ``channels``, ``image_size``, ``patch_size`` (in pixels of the
            stored image), ``grid_size``, and
            ``heatmap`` and ``attribution``, whether each was written), ``attribution`` (how the
            attribution was computed, the fits it averages, ``n_fits``, with ``n_fits > 1``
            the extra fits' ``extra_fit_epochs``, and ``n_cells`` per modality and class),
            ``certainty``
            (the Platt calibrations ``platt`` and ``modality_platt``, where they were fitted
            (``calibrated_on``), the strength of their prior toward the identity
            (``platt_prior``), the ``novelty`` rule and its reference, and ``diagnostics`` on
            the validation cells: ``ece``, ``aurc``, ``accuracy_at_90_coverage``, ``auroc_correct``,
            ``n_cells``, labelled in-sample or cross-fitted), ``metrics`` (accuracy, F1 and
            balanced accuracy per split of the labelled cells), ``transductive`` (with
            ``transductive=True``: ``method``, ``pseudo_label_fraction``, ``n_unlabeled``,
            ``n_pseudo_labeled``, ``pseudo_labeled_per_class``, ``training_label_key``,
            ``first_fit_epochs``), ``confidence`` (the option and,
            per modality on validation cells only, ``relative_error`` of the predicted TCP,
            ``mean |t^ - t| / mean t``, ``"n/a"`` for options that do not predict TCP,
            ``spearman`` of confidence with the true TCP, and ``n_cells``), ``recipe``,
            ``key_added``. ``None`` values are stored as ``"none"``.

    Notes
    -----
    Several GPUs or nodes: pass ``strategy="ddp"`` (or
    ``"ddp_find_unused_parameters_true"``) with ``devices`` (and ``num_nodes``).
    Lightning then runs the whole script once per process, so the script's code must sit
    under ``if __name__ == "__main__":``. ``batch_size`` is per process (global batch =
    ``batch_size`` x processes), and early stopping is off (scvi-tools), so the fit runs
    ``max_epochs``. Every process trains to the same weights, but only process 0 (global
    rank 0) writes the keys above and keeps the ``history``; the others return the model
    with ``model.is_global_zero == False`` and leave ``mdata`` as it was. Guard anything
    the script writes::

        if __name__ == "__main__":
            mdata = ...
            model = mmdyn_sc.tl.fit(mdata, "cell_type", accelerator="gpu", devices=4,
                                    strategy="ddp", batch_size=256)
            if model.is_global_zero:
                mdata.write("annotated.h5mu")
                model.save("model")

    On several nodes, start the same script on each with ``num_nodes=N``, e.g. with
    ``torchrun --nnodes N --nproc-per-node 4 --node-rank R --master-addr HOST script.py``
    (or a SLURM ``srun``), which Lightning detects. scvi-tools also writes the history to
    ``lightning_logs/`` in the working directory under DDP.
    """
    arguments = dict(locals())
    _check_key(key_added)
    check_seed(seed)
    check_attribution_options(attribution, attribution_cells)
    used = ([m for m in (modalities or list(mdata.mod)) if m in mdata.mod]
            if isinstance(mdata, MuData) else [])
    imaged = [m for m in used if holds_images(mdata.mod[m], image_key)]
    if isinstance(n_fits, str) and n_fits == "auto":
        n_fits = auto_n_fits(attribution=attribution, recipe=recipe,
                             strategy=train_kwargs.get("strategy"), has_images=bool(imaged))
    n_fits = check_n_fits(n_fits, attribution, train_kwargs.get("strategy"))
    if n_fits > 1 and used and len(imaged) == len(used):
        raise ValueError(
            f"n_fits={n_fits} averages the per-class attribution of tabular modalities, "
            f"and the modalities {used} are all images (their explanation is the patch "
            "gate and attribution of the first fit). Use n_fits=1.")
    given = {k: arguments[k] for k in (*MODEL_OPTIONS, *TRAIN_OPTIONS)
             if arguments[k] is not _UNSET}
    options = recipe_options(recipe, given)
    image_options = image_options_for(recipe, image_options)
    if transductive:
        check_transductive_options(pseudo_label_fraction, checkpoint_dir, train_kwargs)
    target = copy_mudata(mdata) if copy else mdata
    setup = {"modalities": modalities, "layers": layers, "mask_var": mask_var,
             "image_key": image_key}
    model_options = {
        "feature_informativeness": feature_informativeness,
        "modality_informativeness": modality_informativeness, "loss_weights": loss_weights,
        "image_options": image_options, **{k: options[k] for k in MODEL_OPTIONS}}
    train_options = {k: v for k, v in options.items() if k not in MODEL_OPTIONS}
    train_options.update(seed=seed, checkpoint_dir=checkpoint_dir,
                         checkpoint_every_n_epochs=checkpoint_every_n_epochs, resume=resume,
                         **train_kwargs)
    model = _train(target, labels_key, setup, model_options, train_options, seed)
    if not model.is_global_zero:
        # Another process of a distributed fit: process 0 writes the results.
        return target if copy else model
    log_pooled_images(model)
    label_codes = model.label_codes  # the user's labels; -1 for cells without one
    chosen = None
    if transductive:
        chosen = pseudo_labels(model, pseudo_label_fraction, labels_key)
        first_epochs = len(model.history.get("train_loss", [])) or None
        training_key = Key.obs.training_label(key_added)
        target.obs[training_key] = training_labels(model, chosen, target.obs_names)
        model = _train(target, training_key, setup, model_options, train_options, seed,
                       train_only_cells=chosen.rows)
    if n_fits > 1:
        model.attribution_member_epochs_ = member_epochs(len(model.history.get("train_loss", [])))
        model.attribution_members_ = _train_members(
            target, labels_key if chosen is None else training_key, setup, model_options,
            train_options, seed, n_fits, model.attribution_member_epochs_,
            None if chosen is None else chosen.rows)

    split = np.full(target.n_obs, SPLIT_UNLABELED, dtype=object)
    split[model.train_indices] = SPLIT_TRAIN
    split[model.validation_indices] = SPLIT_VALIDATION
    split[model.calibration_indices] = SPLIT_CALIBRATION
    if chosen is not None:
        split[chosen.rows] = SPLIT_PSEUDO_LABELED
    # explanations of the cells with the user's labels (pseudo-labelled cells left out)
    attributed = model.train_indices if chosen is None else np.setdiff1d(
        model.train_indices, chosen.rows)
    result = model.infer(attribution_rows=attributed if attribution else None,
                         attribution_cells=attribution_cells, image_attribution=attribution)
    uns = model_summary(model, key_added)
    uns["recipe"] = recipe
    if chosen is not None:
        uns["labels_key"] = labels_key
        uns["transductive"] = transductive_record(chosen, pseudo_label_fraction,
                                                  model.classes_, training_key, first_epochs)
    write_results(target, model, result, key_added, split, label_codes, uns,
                  attribution=describe(attribution_cells, "training", n_fits=n_fits_of(model),
                                       extra_fit_epochs=extra_fit_epochs_of(model))
                  if attribution else None)
    return target if copy else model
