"""Torch modules of MM dynamics; they know tensors only, no AnnData."""

from ._confidence import CONFIDENCE_OPTIONS, BoundedConfidenceHead, TCPConfidenceHead
from ._feature_gate import FeatureGate
from ._feature_scaler import FeatureScaler
from ._image_branch import DEFAULT_IMAGE_OPTIONS, ImageBranch
from ._image_encoder import ImageEncoder, as_float_images, random_flips
from ._init import xavier_linear
from ._low_rank_gate import LowRankFeatureGate
from ._mmdynamics import MMDynamicsModule, ModalityBranch
from ._patch_unet import PatchUNet

__all__ = [
    "CONFIDENCE_OPTIONS",
    "DEFAULT_IMAGE_OPTIONS",
    "BoundedConfidenceHead",
    "FeatureGate",
    "FeatureScaler",
    "ImageBranch",
    "ImageEncoder",
    "LowRankFeatureGate",
    "MMDynamicsModule",
    "ModalityBranch",
    "PatchUNet",
    "TCPConfidenceHead",
    "as_float_images",
    "random_flips",
    "xavier_linear",
]
