from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def xavier_conv(n_in: int, n_out: int, kernel_size: int = 3) -> nn.Conv2d:
    """A 'same'-padded conv layer with xavier-normal weights and zero bias."""
    conv = nn.Conv2d(n_in, n_out, kernel_size, padding=kernel_size // 2)
    nn.init.xavier_normal_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _double_conv(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        xavier_conv(n_in, n_out), nn.ReLU(), xavier_conv(n_out, n_out), nn.ReLU()
    )


def check_patch_grid(image_size: int, patch_size: int, n_down: int = 0) -> int:
    """Return the grid side ``image_size // patch_size``; raise if the sizes do not fit."""
    for name, value in (("image_size", image_size), ("patch_size", patch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if image_size % patch_size:
        raise ValueError(
            f"image_size {image_size} is not divisible by patch_size {patch_size}; the "
            "heatmap has one value per patch_size x patch_size patch."
        )
    if image_size % 2**n_down:
        raise ValueError(
            f"image_size {image_size} is not divisible by {2**n_down}: the U-net halves "
            f"the image {n_down} times."
        )
    return image_size // patch_size


def gate_pool_factor(image_size: int, patch_size: int, depth: int, input_size: int) -> int:
    """Factor by which :class:`PatchUNet` average-pools its input (1: full resolution).

    The largest power of two f that divides ``patch_size`` and keeps the pooled image at
    least ``input_size`` pixels a side and divisible by ``2**depth`` (``input_size`` 0: 1).
    """
    factor = 1
    if input_size:
        while (patch_size % (2 * factor) == 0 and image_size // (2 * factor) >= input_size
               and image_size % (2 * factor * 2**depth) == 0):
            factor *= 2
    return factor


class PatchUNet(nn.Module):
    """Image gate of image MM dynamics: a compact U-net scoring each image patch in (0, 1).

    A U-net (two 3x3 conv + ReLU per level, ``depth`` max-pool halvings with channels
    ``base_channels * 2**level``, transposed-conv upsampling with skip connections, no
    normalisation) maps (n, C, H, W) to one logit per pixel; the logits are averaged over
    ``patch_size`` x ``patch_size`` patches into a (n, 1, H/p, W/p) grid and passed through
    a sigmoid. With ``input_size``, the U-net reads the image average-pooled by
    :func:`gate_pool_factor` (f), one logit per f x f pixels, averaged over each patch the
    same way: at 128 px and ``input_size=64`` it reads a 64 px image, at 64 px and below the
    full image. Conv weights are xavier-normal with zero biases, so an untrained gate starts
    near 0.5 everywhere, like :class:`FeatureGate`.

    Parameters
    ----------
    in_channels
        Image channels C.
    image_size
        Side H = W of the (square) images; divisible by ``patch_size`` and by ``2**depth``.
    patch_size
        Side p of a patch: the heatmap is (H/p, W/p), 8 x 8 for 64-pixel images and p = 8.
    base_channels
        Channels of the first level.
    depth
        Number of halvings (encoder levels below the first).
    input_size
        Smallest side the U-net reads the image at when pooling it (0: the full image, as the
        2411.00725 study).

    ``forward`` returns the heatmap grid (n, H/p, W/p) in (0, 1); :meth:`gate` also gates
    the images. Images are float tensors in [0, 1] (convert uint8 storage per minibatch with
    :func:`as_float_images`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 64,
        patch_size: int = 8,
        base_channels: int = 16,
        depth: int = 2,
        input_size: int = 0,
    ):
        super().__init__()
        self.grid_size = check_patch_grid(image_size, patch_size, depth)
        self.pool = gate_pool_factor(image_size, patch_size, depth, input_size)
        self.in_channels, self.image_size, self.patch_size = in_channels, image_size, patch_size
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            _double_conv(n_in, n_out)
            for n_in, n_out in zip([in_channels] + widths[:-1], widths, strict=True)
        )
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
            for level in reversed(range(depth))
        )
        self.up = nn.ModuleList(
            _double_conv(2 * widths[level], widths[level]) for level in reversed(range(depth))
        )
        self.head = xavier_conv(widths[0], 1, kernel_size=1)
        for layer in self.upsample:
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _check_input(self, images: torch.Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"PatchUNet expects images (n, {', '.join(map(str, expected))}), got "
                f"{tuple(images.shape)}."
            )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Patch logits (n, 1, H/p, W/p)."""
        self._check_input(images)
        skips, h = [], images if self.pool == 1 else F.avg_pool2d(images, self.pool)
        for level, block in enumerate(self.down):
            if level:
                h = F.max_pool2d(h, 2)
            h = block(h)
            skips.append(h)
        skips.pop()
        for upsample, block in zip(self.upsample, self.up, strict=True):
            h = block(torch.cat([upsample(h), skips.pop()], dim=1))
        return F.avg_pool2d(self.head(h), self.patch_size // self.pool)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Heatmap grid (n, H/p, W/p), each patch's gate in (0, 1)."""
        return torch.sigmoid(self.logits(images)).squeeze(1)

    def upsample_heatmap(self, heatmap: torch.Tensor) -> torch.Tensor:
        """Grid (n, H/p, W/p) -> (n, 1, H, W) by nearest-neighbour repetition."""
        return F.interpolate(heatmap.unsqueeze(1), scale_factor=self.patch_size, mode="nearest")

    def gate(self, images: torch.Tensor,
             detach: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate the images by their heatmap (``detach``: without gradient to the gate).

        Returns
        -------
        ``(gated, heatmap)``: ``gated`` (n, C, H, W) is ``images`` times the heatmap
        upsampled (nearest) to H x W, the same factor for every channel; ``heatmap`` is the
        grid (n, H/p, W/p) in (0, 1), on which an L1 (sparsity) penalty is taken.
        """
        heatmap = self(images)
        if detach:
            heatmap = heatmap.detach()
        return images * self.upsample_heatmap(heatmap), heatmap
