"""Tools: train MM dynamics and label cells, writing results into the MuData."""

from ._fit import fit
from ._predict import predict
from ._recipes import RECIPES

__all__ = ["RECIPES", "fit", "predict"]
