"""Neuromodulation mechanisms as Keras layers.

* Weight-space task switching through a fixed transform
  (`keras_neuromod.switching`): `SwitchableDense`, `SwitchableConv2D`.
* Neuromodulated Hebbian plasticity, Backpropamine (`plastic`):
  `PlasticRNNCell`, `PlasticLSTMCell`.
* The evolvable neural unit, ENU (`enu`): `ENUCell`, `ENUNetwork`.
"""

from keras_neuromod.layers.enu import ENUCell
from keras_neuromod.layers.enu import ENUNetwork
from keras_neuromod.layers.plastic import PLASTICITY_RULES
from keras_neuromod.layers.plastic import PlasticLSTMCell
from keras_neuromod.layers.plastic import PlasticRNNCell
from keras_neuromod.switching import SwitchableConv2D
from keras_neuromod.switching import SwitchableDense

__all__ = [
    "ENUCell",
    "ENUNetwork",
    "PLASTICITY_RULES",
    "PlasticLSTMCell",
    "PlasticRNNCell",
    "SwitchableConv2D",
    "SwitchableDense",
]
