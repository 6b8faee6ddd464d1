from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._init import xavier_linear
from ._patch_unet import xavier_conv


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """A minibatch of stored images as float32 in [0, 1]: uint8 divided by 255."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255.0
    return images.to(torch.float32)


def random_flips(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image horizontally and, independently, vertically, each with probability 1/2.

    Training-time augmentation: apply it only when the module is in training mode
    (``if self.training: images = random_flips(images)``), never when predicting.

    Parameters
    ----------
    images
        (n, C, H, W) tensor.
    generator
        CPU generator for reproducible flips (default: torch's global one).

    Returns
    -------
    A new (n, C, H, W) tensor; ``images`` is not modified.
    """
    if images.dim() != 4:
        raise ValueError(f"random_flips expects (n, C, H, W) images, got {tuple(images.shape)}.")
    flips = torch.rand(2, images.shape[0], generator=generator).lt(0.5).to(images.device)
    horizontal, vertical = (f.view(-1, 1, 1, 1) for f in flips)
    images = torch.where(horizontal, images.flip(-1), images)
    return torch.where(vertical, images.flip(-2), images)


class ImageEncoder(nn.Module):
    """Small CNN of image MM dynamics: conv blocks, then two linear layers to the latent.

    ``depth`` blocks of 3x3 conv (``width * 2**block`` channels) + ReLU + 2x2 max-pool,
    flattened, a linear layer to ``fc`` units + ReLU, and a linear layer to ``n_hidden``.
    Layers are xavier-normal with zero biases, as in :func:`xavier_linear`. The output is
    the pre-activation latent, the counterpart of a tabular branch's linear encoder (the
    branch applies ReLU and dropout).

    Parameters
    ----------
    in_channels
        Image channels C.
    image_size
        Side H = W of the (square) images; divisible by ``2**depth``.
    n_hidden
        Latent size (the study used 500 for images).
    depth
        Number of conv + pool blocks (two in the study).
    width
        Channels of the first conv block.
    fc
        Units of the hidden linear layer (128 in the study).

    ``forward`` maps float images (n, C, H, W) in [0, 1] to (n, n_hidden).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 64,
        n_hidden: int = 500,
        depth: int = 2,
        width: int = 32,
        fc: int = 128,
    ):
        super().__init__()
        if depth < 1 or image_size % 2**depth:
            raise ValueError(
                f"image_size {image_size} must be divisible by 2**depth = {2**depth} (depth "
                f"{depth} >= 1 halvings)."
            )
        self.in_channels, self.image_size = in_channels, image_size
        widths = [width * 2**block for block in range(depth)]
        self.convs = nn.ModuleList(
            xavier_conv(n_in, n_out)
            for n_in, n_out in zip([in_channels] + widths[:-1], widths, strict=True)
        )
        side = image_size // 2**depth
        self.fc = xavier_linear(widths[-1] * side * side, fc)
        self.out = xavier_linear(fc, n_hidden)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"ImageEncoder expects images (n, {', '.join(map(str, expected))}), got "
                f"{tuple(images.shape)}."
            )
        h = images
        for conv in self.convs:
            h = F.max_pool2d(F.relu(conv(h)), 2)
        return self.out(F.relu(self.fc(h.flatten(1))))
