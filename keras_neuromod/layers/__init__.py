"""Neuromodulation mechanisms as Keras layers.

* Neuromodulated Hebbian plasticity, Backpropamine (`plastic`):
  `PlasticRNNCell`, `PlasticLSTMCell`.
* The evolvable neural unit, ENU (`enu`): `ENUCell`, `ENUNetwork`.
"""

from keras_neuromod.layers.enu import ENUCell
from keras_neuromod.layers.enu import ENUNetwork
from keras_neuromod.layers.plastic import PLASTICITY_RULES
from keras_neuromod.layers.plastic import PlasticLSTMCell
from keras_neuromod.layers.plastic import PlasticRNNCell

__all__ = ["ENUCell", "ENUNetwork", "PLASTICITY_RULES", "PlasticLSTMCell", "PlasticRNNCell"]
