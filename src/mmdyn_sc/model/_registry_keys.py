"""Names under which the model registers its tensors with scvi-tools."""

LABELS = "labels"

#: Held-out calibration cells (1) of a ``"tcp_calibrated"`` fit; absent from the registry of
#: models saved before it existed.
CALIBRATION = "calibration"


def modality_x(index: int) -> str:
    """Registry key of the input matrix of modality ``index``."""
    return f"x_{index}"


def modality_present(index: int) -> str:
    """Registry key of the presence mask of modality ``index``."""
    return f"present_{index}"


def unpack_batch(batch: dict, n_modalities: int):
    """Split a scvi-tools minibatch into (inputs per modality, presence (n, M), labels (n,))."""
    import torch

    xs = [batch[modality_x(i)] for i in range(n_modalities)]
    present = torch.cat([batch[modality_present(i)] for i in range(n_modalities)], dim=1)
    labels = batch[LABELS].reshape(-1)
    return xs, present, labels


def held_out_cells(batch: dict):
    """The batch's held-out calibration flags (n,), or None if the registry has none."""
    flags = batch.get(CALIBRATION)
    return None if flags is None else flags.reshape(-1)
