"""Nm-SGD: stochastic gradient descent with momentum, modulated per tensor."""

import keras
from keras import ops

from keras_neuromod import _keras_compat
from keras_neuromod import bases
from keras_neuromod.optimizers.base import NeuromodulatedOptimizer


@keras.saving.register_keras_serializable(package="keras_neuromod")
@bases.register("sgd")
class NmSGD(NeuromodulatedOptimizer):
    """SGD whose learning rate and momentum an AGRN sets per tensor and step.

    The update is Keras's `SGD` with momentum, with the values of this tensor
    at this step: `m <- momentum * m - lr * g`, then `w <- w + m`. With the
    momentum range fixed at `(0, 0)` there is no momentum state and the update
    is `w <- w - lr * g`, sparse for sparse gradients (an `Embedding`'s), as in
    Keras's `SGD` without momentum. The agent's AGRN has the inputs of its
    input set (13 for ``"paper"``, 18 for ``"sensing"``) and 4 outputs (two
    output proteins per hyperparameter). With every range a single value,
    `NmSGD` is exactly `keras.optimizers.SGD(learning_rate, momentum)`.

    The output set (`keras_neuromod.outputs`) gives each hyperparameter its
    default range and scale:

    | hyperparameter | ``"paper"`` | ``"centred"`` (middle) | ``"narrow"`` |
    |---|---|---|---|
    | learning_rate | (1e-4, 1) log | (1e-4, 1) log (0.01) | (1e-3, 0.1) log |
    | momentum | (0, 0.99) linear | (0, 0.99) complement_log (0.9) | as centred |

    Keras's `SGD` has no momentum by default, and no bounded map of
    (0, 0.99) centres on 0: a silent ``"centred"`` or ``"narrow"`` agent
    (output proteins at 0: every position 0.5) is the common heavy-ball
    `SGD(0.01, momentum=0.9)`.

    Args:
        agent: the AGRN genome: a `Genome`, a genome or agent dict, the path of a
            genome or agent JSON file, or the name of a zoo agent.
        ranges: dict of `(lo, hi)` per hyperparameter, mapped on the output
            set's scales; the ones left out keep the output set's defaults.
        warmup_steps: AGRN steps with inputs at 0 before the first update.
        grn_steps_per_update: AGRN steps at every update.
        max_regulatory: capacity for regulatory proteins (see `set_genome`).
        learning_rate: a multiplier (float or schedule) on the modulated
            learning rate; 1.0 by default.
        inputs: the agent's input set (see `NeuromodulatedOptimizer`). An agent
            of the ``"sensing"`` set reads its progress when told how long the
            training runs: pass `callbacks.TrainingHorizon()` to `fit`.
        outputs: the agent's output set, ``"paper"``, ``"centred"`` or
            ``"narrow"`` (see `NeuromodulatedOptimizer`).
        horizon: the updates the training will make, where known when the
            optimizer is made (as a decay schedule's `decay_steps`); None:
            unknown until `set_horizon` or `callbacks.TrainingHorizon`.
        **kwargs: Keras's base optimizer options (`clipnorm`, `weight_decay`,
            `gradient_accumulation_steps`, `use_ema`, `name`, ...).

    Example:

    >>> import keras, numpy as np
    >>> from keras_neuromod import Genome, NmSGD
    >>> agent = Genome.random(13, 4, n_regulatory=2, rng=0)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=NmSGD(agent=agent), loss="mse")
    """

    HYPERPARAMETERS = ("learning_rate", "momentum")
    OUTPUT_SETS = {
        "paper": {
            "learning_rate": (1e-4, 1.0, "log"),
            "momentum": (0.0, 0.99, "linear"),
        },
        # each range's middle is the heavy-ball `SGD(0.01, momentum=0.9)`
        "centred": {
            "learning_rate": (1e-4, 1.0, "log"),  # 0.01
            "momentum": (0.0, 0.99, "complement_log"),  # 0.9
        },
        # the centred set with the learning rate within a decade of 0.01
        "narrow": {
            "learning_rate": (1e-3, 0.1, "log"),  # 0.01
            "momentum": (0.0, 0.99, "complement_log"),  # 0.9
        },
    }
    BOUNDS = {"learning_rate": (0.0, float("inf")), "momentum": (0.0, 1.0)}
    MOMENTUM_SIGN = -1.0  # the buffer is the velocity -lr g + momentum m

    def __init__(self, agent, ranges=None, name=None, **kwargs):
        super().__init__(agent, ranges=ranges, name=name, **kwargs)

    @property
    def _uses_momentum(self):
        return self.ranges["momentum"] != (0.0, 0.0)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # Without momentum (its range fixed at 0) there is no momentum state,
        # and a sparse gradient updates only its rows, as in Keras's SGD.
        self.momentums = (
            self.add_optimizer_variables(var_list, "momentum") if self._uses_momentum else []
        )

    def _momentum_variables(self):
        return self.momentums or None

    def _step_table(self, hparams, learning_rate, rows):
        lr = self._scaled_learning_rate(hparams, learning_rate)
        table = ops.concatenate([hparams, lr[:, None]], axis=1)
        return table, self.HYPERPARAMETERS + ("scaled_learning_rate",)

    def update_step(self, gradient, variable, learning_rate):
        # `learning_rate` (the multiplier) is already in the values' rates
        values = self._modulated(variable)
        lr = values["scaled_learning_rate"]
        gradient = ops.cast(gradient, variable.dtype)
        self._decay_weights(variable, lr)
        if not self._uses_momentum:
            self.assign_sub(variable, ops.multiply(gradient, lr))
            return
        m = self.momentums[_keras_compat.variable_index(self, variable)]
        self.assign(
            m,
            ops.subtract(ops.multiply(m, values["momentum"]), ops.multiply(gradient, lr)),
        )
        self.assign_add(variable, m)
