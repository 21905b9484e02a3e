"""Nm-Adam: Adam with learning rate, betas and epsilon modulated per tensor."""

import keras
from keras import ops

from keras_neuromod import _keras_compat
from keras_neuromod import bases
from keras_neuromod.optimizers.base import NeuromodulatedOptimizer
from keras_neuromod.optimizers.base import to_dense


@keras.saving.register_keras_serializable(package="keras_neuromod")
@bases.register("adam")
class NmAdam(NeuromodulatedOptimizer):
    """Adam whose learning rate, beta_1, beta_2 and epsilon an AGRN sets.

    Each trainable tensor gets its own values at each step. Because the betas
    change from step to step and from tensor to tensor, the bias correction
    uses the running products `p1 = prod(beta_1)`, `p2 = prod(beta_2)` of each
    tensor (kept as optimizer state) instead of Keras's `beta ** t`:

        m <- m + (1 - beta_1) (g - m)
        v <- v + (1 - beta_2) (g^2 - v)
        w <- w - lr sqrt(1 - p2) / (1 - p1) * m / (sqrt(v) + epsilon)

    With constant betas this is exactly Keras's `Adam`, which `NmAdam`
    reproduces when every range is a single value. The agent's AGRN has the
    inputs of its input set (13 for ``"paper"``, 18 for ``"sensing"``) and 8
    outputs.

    The output set (`keras_neuromod.outputs`) gives each hyperparameter its
    default range and scale:

    | hyperparameter | ``"paper"`` | ``"centred"`` (middle) | ``"narrow"`` |
    |---|---|---|---|
    | learning_rate | (1e-5, 0.1) log | (1e-5, 0.1) log (1e-3) | (1e-4, 1e-2) log |
    | beta_1 | (0, 0.999) linear | (0, 0.99) complement_log (0.9) | as centred |
    | beta_2 | (0.5, 0.9999) linear | (0.9, 0.99999) complement_log (0.999) | as centred |
    | epsilon | (1e-8, 1) log | (1e-10, 1e-4) log (1e-7) | as centred |

    A silent ``"centred"`` or ``"narrow"`` agent (output proteins at 0: every
    position 0.5) is Keras's `Adam()`.

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

    >>> import keras
    >>> from keras_neuromod import Genome, NmAdam
    >>> agent = Genome.random(13, 8, n_regulatory=2, rng=0)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=NmAdam(agent=agent), loss="mse")
    """

    HYPERPARAMETERS = ("learning_rate", "beta_1", "beta_2", "epsilon")
    OUTPUT_SETS = {
        "paper": {
            "learning_rate": (1e-5, 1e-1, "log"),
            "beta_1": (0.0, 0.999, "linear"),
            "beta_2": (0.5, 0.9999, "linear"),
            "epsilon": (1e-8, 1.0, "log"),
        },
        # each range's middle is Keras's `Adam()` default
        "centred": {
            "learning_rate": (1e-5, 1e-1, "log"),  # 1e-3
            "beta_1": (0.0, 0.99, "complement_log"),  # 0.9
            "beta_2": (0.9, 0.99999, "complement_log"),  # 0.999
            "epsilon": (1e-10, 1e-4, "log"),  # 1e-7
        },
        # the centred set with the learning rate within a decade of 1e-3
        "narrow": {
            "learning_rate": (1e-4, 1e-2, "log"),  # 1e-3
            "beta_1": (0.0, 0.99, "complement_log"),  # 0.9
            "beta_2": (0.9, 0.99999, "complement_log"),  # 0.999
            "epsilon": (1e-10, 1e-4, "log"),  # 1e-7
        },
    }
    BOUNDS = {
        "learning_rate": (0.0, float("inf")),
        "beta_1": (0.0, 0.99999),
        "beta_2": (0.0, 0.99999),
        "epsilon": (0.0, float("inf")),
    }

    def __init__(self, agent, ranges=None, name=None, **kwargs):
        super().__init__(agent, ranges=ranges, name=name, **kwargs)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )
        self._beta_powers = self.add_variable(
            (len(var_list), 2), initializer="ones", name="beta_powers"
        )

    def _momentum_variables(self):
        return self._momentums

    def _reset_value(self, variable):
        if variable is self._beta_powers:
            return ops.ones(variable.shape, variable.dtype)
        return super()._reset_value(variable)

    def _step_table(self, hparams, learning_rate, rows):
        # Everything scalar of the update is computed here for all tensors
        # at once, in the order the update rule of Keras's Adam computes it.
        powers = ops.convert_to_tensor(self._beta_powers)[rows] * hparams[:, 1:3]
        lr = self._scaled_learning_rate(hparams, learning_rate)
        alpha = lr * ops.sqrt(1 - powers[:, 1]) / (1 - powers[:, 0])
        derived = ops.stack([lr, alpha, 1 - hparams[:, 1], 1 - hparams[:, 2]], axis=1)
        table = ops.concatenate([hparams, powers, derived], axis=1)
        return table, self.HYPERPARAMETERS + (
            "power_1",
            "power_2",
            "scaled_learning_rate",
            "alpha",
            "one_minus_beta_1",
            "one_minus_beta_2",
        )

    def _write_step_state(self, table, names):
        first = names.index("power_1")
        self.assign(self._beta_powers, table[:, first : first + 2])

    def update_step(self, gradient, variable, learning_rate):
        # `learning_rate` (the multiplier) is already in the values' rates
        index = _keras_compat.variable_index(self, variable)
        values = self._modulated(variable)
        # Adam's update is dense whatever the gradient (as in Keras's Adam);
        # densifying first sums repeated rows of a sparse gradient before
        # they are squared.
        gradient = ops.cast(to_dense(gradient), variable.dtype)
        m = self._momentums[index]
        v = self._velocities[index]
        self._decay_weights(variable, values["scaled_learning_rate"])
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), values["one_minus_beta_1"]))
        self.assign_add(
            v, ops.multiply(ops.subtract(ops.square(gradient), v), values["one_minus_beta_2"])
        )
        self.assign_sub(
            variable,
            ops.divide(ops.multiply(m, values["alpha"]), ops.add(ops.sqrt(v), values["epsilon"])),
        )
