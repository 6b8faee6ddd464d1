"""The image modality's branch of image MM dynamics (2411.00725): patch gate, CNN, heads."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ._branch_heads import BranchHeads
from ._feature_scaler import ChannelScaler
from ._image_encoder import ImageEncoder, as_float_images, random_flips
from ._patch_unet import PatchUNet, check_patch_grid

#: Image options and their defaults (the 2411.00725 study: 8-pixel patches, two conv blocks
#: of 32 and 64 channels, a 128-unit hidden layer; a U-net of two halvings from 16 channels).
#: ``gate_sparsity`` weighs the patch gate's L1 term (1, as the study). Not the study's: the
#: gate is held for the first ``gate_warmup`` training epochs, gating the image but neither
#: learning nor paying its L1 term, until the encoder has learnt what the images show.
#: Trained from the first step, as in the study (``recipe="paper"``: ``gate_warmup=0``),
#: the gate shut every patch of every BCCD image before the encoder learnt anything, and a
#: shut sigmoid gate gets almost no gradient back. Counted in epochs (0.2.0; 100 steps
#: before): at the default batch of 128, 100 steps were 50 of the 60 epochs a 64 px BCCD
#: fit runs, and the gate hardly left its start (benchmarks/results/images.md).
#: ``gate_input_size``: the U-net reads images larger than twice this side average-pooled
#: (by a power of two, at least this many pixels a side; 0: always the full image, as the
#: study): at 128 px it costs what it costs at 64 px, where it localises the nucleus, and
#: gives the same 8-px patch grid (benchmarks/results/image_heatmaps.md).
#: ``input_size`` (0.2.0): the whole branch, gate and CNN, reads images of at least twice
#: this side average-pooled by a power of two (see ``input_pool_factor``), and
#: ``patch_size`` counts pixels of the image it reads: a 128-px fit is the 64-px fit on the
#: pooled image, with an 8 x 8 grid of 16-px patches of the stored image. At 128 px the
#: full-resolution branch lost its gate's nucleus on one seed of five and classified worse
#: than 0.1.0's settings; at 64 px every image target is met (0: the full image, as the
#: study; benchmarks/results/image_heatmaps.md, "the whole branch at 64 px?").
DEFAULT_IMAGE_OPTIONS = {
    "patch_size": 8,
    "encoder_depth": 2,
    "encoder_width": 32,
    "encoder_fc": 128,
    "unet_channels": 16,
    "unet_depth": 2,
    "gate_sparsity": 1.0,
    "gate_warmup": 5,
    "gate_input_size": 64,
    "input_size": 64,
}
#: Integer options and their smallest allowed value; the others are numbers >= 0.
_INTEGER_OPTIONS = {"patch_size": 1, "encoder_depth": 1, "encoder_width": 1, "encoder_fc": 1,
                    "unet_channels": 1, "unet_depth": 1, "gate_warmup": 0,
                    "gate_input_size": 0, "input_size": 0}


def image_options(options: Mapping | None) -> dict:
    """``options`` completed with :data:`DEFAULT_IMAGE_OPTIONS`; unknown names raise."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULT_IMAGE_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown image option(s) {unknown}; use {sorted(DEFAULT_IMAGE_OPTIONS)}.")
    merged = {**DEFAULT_IMAGE_OPTIONS, **options}
    for name, value in merged.items():
        if name in _INTEGER_OPTIONS:
            low = _INTEGER_OPTIONS[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(
                    f"image option {name!r} must be an integer >= {low}, got {value!r}.")
            merged[name] = int(value)
        elif (isinstance(value, bool) or not isinstance(value, numbers.Real)
              or not 0 <= value < float("inf")):
            raise ValueError(f"image option {name!r} must be a finite number >= 0, got {value!r}.")
        else:
            merged[name] = float(value)
    return merged


def input_pool_factor(image_size: int, options: Mapping) -> int:
    """Factor by which an image branch average-pools its input (1: the full image).

    The largest power of two f such that the pooled side ``image_size / f`` is a whole
    number, at least ``options["input_size"]`` and divisible by ``patch_size``,
    ``2**unet_depth`` and ``2**encoder_depth`` (what the branch needs of the image it
    reads); 1 when ``input_size`` is 0 or no such f > 1 exists.
    """
    target = options["input_size"]
    multiple = math.lcm(options["patch_size"], 2 ** options["unet_depth"],
                        2 ** options["encoder_depth"])
    factor, best = 1, 1
    while target and image_size % (2 * factor) == 0 and image_size // (2 * factor) >= target:
        factor *= 2
        if (image_size // factor) % multiple == 0:
            best = factor
    return best


class ImageBranch(BranchHeads):
    """One image modality: patch gate (FI), small CNN, own classifier and confidence head.

    The counterpart of ``ModalityBranch`` for images (n, C, S, S) stored as ``uint8`` or
    float in [0, 1] (converted to float per minibatch), then scaled per channel by
    ``scaler`` (a ``ChannelScaler``, the identity until the model fits it on the
    training images: z-scored channels with ``feature_scaling="standard"``, so that a
    shut patch reads as the mean colour). In training mode each image is flipped at
    random (horizontally and vertically, each with probability 1/2); never when
    predicting. Images of at least twice ``input_size`` a side are first average-pooled by
    ``input_pool_factor`` (``input_pool``); the gate, the CNN and ``patch_size`` work
    on the pooled image, and a heatmap patch covers ``stored_patch_size`` pixels of the
    stored one. With FI, a ``PatchUNet`` scores every ``patch_size`` x ``patch_size`` patch
    in (0, 1) and the image is multiplied by that heatmap (nearest-upsampled, every
    channel); the L1 term of the loss applies to the grid, weighted by ``gate_sparsity``.
    For the first ``gate_warmup`` training epochs (the epoch is set by the training plan
    through ``start_epoch`` and kept in ``training_epochs``, a buffer saved with the
    model) the gate is held: its heatmap gates the image without gradient, and its L1
    weight is 0.

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
        ``encoder_fc`` (hidden units), the U-net's ``unet_channels`` and ``unet_depth``,
        ``gate_sparsity``, the factor of the gate's L1 term, ``gate_warmup``, the
        training epochs during which the gate is held, ``gate_input_size``, the
        smallest side the U-net reads a pooled image at (0: the full image), and
        ``input_size``, the same for the whole branch.
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
        options = image_options(options)
        self.options = options
        self.register_buffer("training_epochs", torch.zeros((), dtype=torch.long))
        # Host copy of training_epochs (reading a GPU buffer every step would wait for the
        # device).
        self._epoch: int | None = None
        self.scaler = ChannelScaler(channels)
        self.image_size = int(image_size)
        self.input_pool = input_pool_factor(self.image_size, options)
        image_size = self.image_size // self.input_pool  # the side the branch reads
        if feature_informativeness:
            check_patch_grid(image_size, options["patch_size"], options["unet_depth"])
            self.gate = PatchUNet(channels, image_size, options["patch_size"],
                                  options["unet_channels"], options["unet_depth"],
                                  options["gate_input_size"])
        else:
            self.gate = None
        self.encoder = ImageEncoder(channels, image_size, n_hidden, options["encoder_depth"],
                                    options["encoder_width"], options["encoder_fc"])
        self._init_heads(n_hidden, n_classes, dropout, modality_informativeness, confidence)

    @property
    def stored_patch_size(self) -> int:
        """Pixels of the stored image per side of a heatmap patch (``patch_size`` x pool)."""
        return self.options["patch_size"] * self.input_pool

    @property
    def grid_size(self) -> int:
        """Side of the patch grid (heatmap and patch attribution)."""
        return self.image_size // self.stored_patch_size

    def read(self, x: torch.Tensor) -> torch.Tensor:
        """Stored images (n, C, S, S) as float in [0, 1], pooled to the side the branch reads."""
        images = as_float_images(x)
        return images if self.input_pool == 1 else F.avg_pool2d(images, self.input_pool)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        steps = state_dict.pop(prefix + "training_steps", None)
        if steps is not None and prefix + "training_epochs" not in state_dict:
            # Saved by 0.1.0, which counted the warm-up in steps: its training is over.
            state_dict[prefix + "training_epochs"] = torch.tensor(
                self.options["gate_warmup"], dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._epoch = None  # a loaded (e.g. resumed) epoch: read it again

    def start_epoch(self, epoch: int) -> None:
        """Record that training epoch ``epoch`` (0-based) begins."""
        self.training_epochs.fill_(int(epoch))
        self._epoch = int(epoch)

    @property
    def warming_up(self) -> bool:
        """Whether the gate is held (the epoch is one of the first ``gate_warmup``)."""
        if self._epoch is None:
            self._epoch = int(self.training_epochs)
        return self._epoch < self.options["gate_warmup"]

    @property
    def sparsity_weight(self) -> float:
        """``gate_sparsity``, or 0 while the gate is held."""
        return 0.0 if self.warming_up else self.options["gate_sparsity"]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        images = self.scaler(self.read(x))
        held = False
        if self.training:
            held = self.warming_up
            images = random_flips(images)
        heatmap = None
        if self.gate is not None:
            # While held, the untrained gate (about 0.5 everywhere) gates but does not learn.
            images, heatmap = self.gate.gate(images, detach=held)
        return {
            "gate": None if heatmap is None else heatmap.flatten(1),
            "heatmap": heatmap,
            **self._heads(self.encoder(images)),
        }
