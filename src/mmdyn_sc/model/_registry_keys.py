"""Names under which the model registers its tensors with scvi-tools."""

LABELS = "labels"


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
