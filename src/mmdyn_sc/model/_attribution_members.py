"""Extra fits of a model, kept for its per-class attribution only (``tl.fit(n_fits=)``).

Two fits that differ only in seed rely on partly different features among redundant ones,
so a one-fit attribution changes with the seed; the mean over several fits changes less
(``benchmarks/results/explain.md``). The extra fits are kept as the weights of their
networks in ``model.attribution_members_`` (saved with the model, as every model attribute
ending in ``_``); predictions, certainty and per-cell explanations come from the model's
own network only.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ._training import is_ddp_strategy

#: Extra fit ``i`` (1, 2, ...) of a fit with seed ``s`` is trained with seed
#: ``s + i * MEMBER_SEED_STEP``, so that fits with neighbouring seeds share no extra fit.
MEMBER_SEED_STEP = 100
#: An extra fit trains for this share of the first fit's epochs (rounded up, at least 1),
#: without early stopping: half keeps the stability that a full-length extra fit buys on BMMC
#: protein (Spearman between seeds 0.904 against 0.909) at about half its cost
#: (``benchmarks/results/explain_training.md``, last sections).
MEMBER_EPOCH_SHARE = 0.5


#: ``tl.fit(n_fits="auto")``: the fits averaged when the per-class attribution is computed
#: on tabular modalities with the default recipe. Two meet issue 18's stability targets on
#: BMMC protein (Spearman between seeds 0.904-0.909, Jaccard@20 0.85-0.86; one fit: 0.86 /
#: 0.83) at a median 1.72x the time of a fit without attribution, within its 2x bound for a
#: default (``benchmarks/results/explain.md``, fifth round; ``attribution_cost.md``).
AUTO_N_FITS = 2


def auto_n_fits(*, attribution: bool, recipe: str, strategy=None,
                has_images: bool = False) -> int:
    """What ``n_fits="auto"`` means for a fit with these options.

    :data:`AUTO_N_FITS` with ``recipe="default"``, ``attribution=True``, no DDP ``strategy``
    and no image modality; otherwise 1: the paper recipe keeps the study's single training,
    without the attribution the extra fits would serve nothing, DDP cannot train them, and
    an extra fit of an image modality would retrain its convolutional network (several
    times the cost of a tabular fit) for an average of the tabular attribution only.
    """
    if attribution and recipe == "default" and not is_ddp_strategy(strategy) and not has_images:
        return AUTO_N_FITS
    return 1


def check_n_fits(n_fits, attribution: bool, strategy=None) -> int:
    """``n_fits`` as an int, or a named error.

    Errors for a bad value, extra fits without the attribution, or extra fits under a DDP
    ``strategy``. ``"auto"`` is resolved by :func:`auto_n_fits` before this check.
    """
    if isinstance(n_fits, bool) or not isinstance(n_fits, int | np.integer) or n_fits < 1:
        raise ValueError(f"n_fits must be a positive integer or 'auto', got {n_fits!r}.")
    if n_fits > 1 and not attribution:
        raise ValueError(
            f"n_fits={n_fits} trains extra fits for the attribution only; with "
            "attribution=False they would be trained for nothing. Use n_fits=1.")
    if n_fits > 1 and is_ddp_strategy(strategy):
        raise ValueError(
            f"n_fits={n_fits} is not supported with a DDP strategy: only process 0 would "
            "train the extra fits. Fit with n_fits=1, or without DDP.")
    return int(n_fits)


def member_seed(seed: int, member: int) -> int:
    """The seed of extra fit ``member`` (1, 2, ...) of a fit with seed ``seed``."""
    return int(seed) + member * MEMBER_SEED_STEP


def member_epochs(first_fit_epochs: int) -> int:
    """Epochs of an extra fit of a model whose own fit trained ``first_fit_epochs``."""
    return max(1, int(np.ceil(MEMBER_EPOCH_SHARE * first_fit_epochs)))


def member_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of a trained network, on the CPU, to keep as an extra fit."""
    return {name: value.detach().cpu().clone() for name, value in module.state_dict().items()}


def n_fits_of(model) -> int:
    """How many fits the model's per-class attribution averages (1 without extra fits)."""
    return 1 + len(getattr(model, "attribution_members_", None) or [])


def extra_fit_epochs_of(model) -> int | str | None:
    """Epochs of the model's extra fits (``tl.fit(n_fits=)``).

    An int; ``"as the first fit"`` for a model saved before extra fits were shortened;
    ``None`` without extra fits.
    """
    if n_fits_of(model) == 1:
        return None
    epochs = getattr(model, "attribution_member_epochs_", None)
    return "as the first fit" if epochs is None else int(epochs)


def member_modules(model) -> list[torch.nn.Module]:
    """The extra fits' networks: copies of ``model.module`` with their weights, in eval mode."""
    modules = []
    for state in getattr(model, "attribution_members_", None) or []:
        module = copy.deepcopy(model.module)
        module.load_state_dict(state)
        modules.append(module.eval())
    return modules
