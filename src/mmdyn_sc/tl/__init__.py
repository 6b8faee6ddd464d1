"""Tools: train MM dynamics and label cells, writing results into the MuData."""

from ._explain import explain
from ._fit import fit
from ._predict import predict
from ._rank_features import rank_features
from ._recipes import RECIPES

__all__ = ["RECIPES", "explain", "fit", "predict", "rank_features"]
