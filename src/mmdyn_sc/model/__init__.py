"""The scvi-tools model class: the only bridge between MuData and tensors."""

from ._mmdynamics import MMDynamics
from ._training_plan import MMDynamicsTrainingPlan

__all__ = ["MMDynamics", "MMDynamicsTrainingPlan"]
