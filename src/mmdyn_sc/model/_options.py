"""Checking and resolving :class:`~mmdyn_sc.MMDynamics`'s options per modality."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..module._low_rank_gate import check_gate_rank

#: ``gate_rank="auto"``: this rank for tabular modalities with at least
#: ``AUTO_GATE_MIN_FEATURES`` features, the full gate for the others. Measured in
#: ``benchmarks/gate_rank.py``: rank 64 vs full, paired macro F1 +1.0 ± 1.6 points at 2000
#: genes (pbmc10k, 5 folds; 4.4x faster fits) and +0.1 ± 8.0 at 1000 genes (BMMC, 20 runs;
#: no faster), so the switch starts where it pays.
AUTO_GATE_RANK = 64
AUTO_GATE_MIN_FEATURES = 2000
CLASS_WEIGHTS = (None, "balanced")


def check_model_options(class_weights, dropout) -> None:
    """Raise ``ValueError`` for a ``class_weights`` or ``dropout`` the model cannot use."""
    if class_weights not in CLASS_WEIGHTS:
        raise ValueError(f"class_weights must be one of {CLASS_WEIGHTS}, got {class_weights!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")


def hidden_sizes(n_hidden, modalities: Sequence[str]) -> dict[str, int]:
    """Latent size per modality from one int or a dict per modality."""
    if isinstance(n_hidden, Mapping):
        missing = [m for m in modalities if m not in n_hidden]
        if missing:
            raise KeyError(f"n_hidden lacks modalities {missing}.")
        sizes = {m: int(n_hidden[m]) for m in modalities}
    else:
        sizes = {m: int(n_hidden) for m in modalities}
    bad = {m: s for m, s in sizes.items() if s < 1}
    if bad:
        raise ValueError(f"n_hidden must be positive: {bad}.")
    return sizes


def gate_ranks(gate_rank, modalities: Sequence[str], n_features: Mapping[str, int],
               images: Mapping) -> dict[str, int | None]:
    """Gate rank per modality (``None``: full gate).

    A dict names ranks per modality and raises for a rank >= its feature count; one int
    applies to the modalities with more features than that; ``"auto"`` gives rank
    :data:`AUTO_GATE_RANK` to tabular modalities with at least
    :data:`AUTO_GATE_MIN_FEATURES` features.
    """
    if isinstance(gate_rank, str) and gate_rank == "auto":
        gate_rank = {m: AUTO_GATE_RANK for m in modalities
                     if m not in images and n_features[m] >= AUTO_GATE_MIN_FEATURES}
    if isinstance(gate_rank, Mapping):
        unknown = sorted(set(gate_rank) - set(modalities))
        if unknown:
            raise KeyError(f"gate_rank names unknown modalities {unknown}; the model's "
                           f"modalities are {list(modalities)}.")
        ranks = {m: gate_rank.get(m) for m in modalities}
    else:
        # One rank for all: a modality with no more features than that keeps its full
        # gate, which is then no larger (e.g. 14 proteins next to 4000 genes).
        ranks = {
            m: None if isinstance(gate_rank, int) and not isinstance(gate_rank, bool)
            and gate_rank >= n_features[m] else gate_rank
            for m in modalities
        }
    with_rank = [m for m in images if ranks[m] is not None]
    if with_rank:
        raise ValueError(f"gate_rank names image modalities {with_rank}: their gate is the "
                         "patch gate (see image_options), which has no rank.")
    for mod, rank in ranks.items():
        if mod in images:
            continue
        ranks[mod] = check_gate_rank(rank, n_features[mod], f" of modality {mod!r}")
    return ranks
