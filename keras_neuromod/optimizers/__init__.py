"""Neuromodulated optimizers: Nm-SGD and Nm-Adam."""

from keras_neuromod.optimizers import ablation
from keras_neuromod.optimizers.adam import NmAdam
from keras_neuromod.optimizers.base import INPUT_NAMES
from keras_neuromod.optimizers.base import N_INPUTS
from keras_neuromod.optimizers.base import NeuromodulatedOptimizer
from keras_neuromod.optimizers.sgd import NmSGD

__all__ = ["NmAdam", "NmSGD", "NeuromodulatedOptimizer", "INPUT_NAMES", "N_INPUTS", "ablation"]
