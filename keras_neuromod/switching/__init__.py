"""Weight-space task switching through a fixed random transform.

After "Neuromodulator-inspired task switching using a fixed weight-space
transformation" (preprint, 2024 or later).

A network f and its twin f' share their parameters through a fixed affine
transform of the weights, ``W' = M W`` and ``b' = b + v``. M and v are drawn
once from a seed and never learned; a task state selects f (state 0) or f'
(state 1), so that applying the transform switches the task.

* `transforms`: drawing (M, v) (`draw_modulation`, `MODULATIONS`) and
  applying it to numpy weights (`transform`, `inverse_transform`).
* `layers`: the per-layer form (`SwitchableDense`, `SwitchableConv2D`), the
  flat form (`FlatSwitchableMLP`), the extra-input baseline (`TaskInput`),
  the task state they share (`TaskStateMixin`) and the two modes (`MODES`).
* `training`: `set_task`, `get_task`, `task_layers` for a whole model and
  `fit_alternating` (Algorithm 1) with its `AlternatingHistory`.

Every public name is importable from here, e.g.
``from keras_neuromod.switching import SwitchableDense, fit_alternating``.
"""

from keras_neuromod.switching.layers import DEFAULT_MAX_FLAT_WEIGHTS
from keras_neuromod.switching.layers import MODES
from keras_neuromod.switching.layers import FlatSwitchableMLP
from keras_neuromod.switching.layers import SwitchableConv2D
from keras_neuromod.switching.layers import SwitchableDense
from keras_neuromod.switching.layers import TaskInput
from keras_neuromod.switching.layers import TaskStateMixin
from keras_neuromod.switching.training import AlternatingHistory
from keras_neuromod.switching.training import fit_alternating
from keras_neuromod.switching.training import get_task
from keras_neuromod.switching.training import set_task
from keras_neuromod.switching.training import task_layers
from keras_neuromod.switching.transforms import MODULATIONS
from keras_neuromod.switching.transforms import draw_modulation
from keras_neuromod.switching.transforms import inverse_transform
from keras_neuromod.switching.transforms import transform

__all__ = [
    "DEFAULT_MAX_FLAT_WEIGHTS",
    "MODES",
    "MODULATIONS",
    "AlternatingHistory",
    "FlatSwitchableMLP",
    "SwitchableConv2D",
    "SwitchableDense",
    "TaskInput",
    "TaskStateMixin",
    "draw_modulation",
    "fit_alternating",
    "get_task",
    "inverse_transform",
    "set_task",
    "task_layers",
    "transform",
]
