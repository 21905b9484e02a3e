"""The switchable layers and transforms under their earlier import path.

Everything here lives in `keras_neuromod.switching`; this module only names
it again so that ``from keras_neuromod.layers.switching import ...`` keeps
working.
"""

from keras_neuromod.switching import MODES
from keras_neuromod.switching import MODULATIONS
from keras_neuromod.switching import SwitchableConv2D
from keras_neuromod.switching import SwitchableDense
from keras_neuromod.switching import TaskStateMixin
from keras_neuromod.switching import draw_modulation
from keras_neuromod.switching import inverse_transform
from keras_neuromod.switching import transform

__all__ = [
    "MODULATIONS",
    "MODES",
    "draw_modulation",
    "transform",
    "inverse_transform",
    "TaskStateMixin",
    "SwitchableDense",
    "SwitchableConv2D",
]
