"""The image modality's branch of image MM dynamics (2411.00725): patch gate, CNN, heads."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ._confidence import check_confidence_option, make_confidence_head
from ._image_encoder import ImageEncoder, as_float_images, random_flips
from ._init import xavier_linear
from ._patch_unet import PatchUNet, check_patch_grid

#: Image options and their defaults (the 2411.00725 study: 8-pixel patches, two conv blocks
#: of 32 and 64 channels, a 128-unit hidden layer; a U-net of two halvings from 16 channels).
DEFAULT_IMAGE_OPTIONS = {
    "patch_size": 8,
    "encoder_depth": 2,
    "encoder_width": 32,
    "encoder_fc": 128,
    "unet_channels": 16,
    "unet_depth": 2,
}


def image_options(options: Mapping | None) -> dict:
    """``options`` completed with :data:`DEFAULT_IMAGE_OPTIONS`; unknown names raise."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULT_IMAGE_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown image option(s) {unknown}; use {sorted(DEFAULT_IMAGE_OPTIONS)}.")
    merged = {**DEFAULT_IMAGE_OPTIONS, **options}
    for name, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"image option {name!r} must be a positive integer, got {value!r}.")
    return merged


class ImageBranch(nn.Module):
    """One image modality: patch gate (FI), small CNN, own classifier and confidence head.

    The counterpart of ``ModalityBranch`` for images (n, C, S, S) stored as ``uint8`` or
    float in [0, 1] (converted to float per minibatch). In training mode each image is
    flipped at random (horizontally and vertically, each with probability 1/2); never when
    predicting. With FI, a ``PatchUNet`` scores every ``patch_size`` x ``patch_size`` patch
    in (0, 1) and the image is multiplied by that heatmap (nearest-upsampled, every
    channel); the L1 term of the loss applies to the grid.

    ``forward`` returns ``h`` (n, H); ``gate``, the heatmap flattened to (n, grid * grid)
    for the sparsity term, or None; ``heatmap`` (n, grid, grid) or None; ``logits``
    (n, C); and ``tcp_hat`` (n,) or None.

    Parameters
    ----------
    channels
        Image channels C.
    image_size
        Image side S.
    n_hidden
        Latent size H.
    n_classes
        Number of classes C.
    dropout
        Dropout rate after the encoder's ReLU.
    feature_informativeness
        Use the patch gate (FI).
    modality_informativeness
        Weight the latent by a modality confidence (MI).
    confidence
        The confidence estimator with MI (as for the tabular branches).
    options
        Image options (see ``DEFAULT_IMAGE_OPTIONS``): ``patch_size``, the encoder's
        ``encoder_depth`` (conv + pool blocks), ``encoder_width`` (channels of the first),
        ``encoder_fc`` (hidden units), the U-net's ``unet_channels`` and ``unet_depth``.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        n_hidden: int,
        n_classes: int,
        dropout: float,
        feature_informativeness: bool,
        modality_informativeness: bool,
        confidence: str = "tcp",
        options: Mapping | None = None,
    ):
        super().__init__()
        check_confidence_option(confidence)
        options = image_options(options)
        self.options = options
        if feature_informativeness:
            check_patch_grid(image_size, options["patch_size"], options["unet_depth"])
            self.gate = PatchUNet(channels, image_size, options["patch_size"],
                                  options["unet_channels"], options["unet_depth"])
        else:
            self.gate = None
        self.encoder = ImageEncoder(channels, image_size, n_hidden, options["encoder_depth"],
                                    options["encoder_width"], options["encoder_fc"])
        self.dropout = nn.Dropout(dropout)
        self.classifier = xavier_linear(n_hidden, n_classes)
        self.confidence = (
            make_confidence_head(confidence, n_hidden) if modality_informativeness else None
        )

    @property
    def patch_size(self) -> int:
        return self.options["patch_size"]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        images = as_float_images(x)
        if self.training:
            images = random_flips(images)
        heatmap = None
        if self.gate is not None:
            images, heatmap = self.gate.gate(images)
        h = self.dropout(F.relu(self.encoder(images)))
        logits = self.classifier(h)
        tcp_hat = self.confidence(h) if self.confidence is not None else None
        return {
            "h": h,
            "gate": None if heatmap is None else heatmap.flatten(1),
            "heatmap": heatmap,
            "logits": logits,
            "tcp_hat": tcp_hat,
        }
