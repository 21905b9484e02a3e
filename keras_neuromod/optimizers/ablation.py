"""Ablations of the modulation: do location and time dependence matter?

An agent sets different hyperparameters for every tensor (location) at every
step (time). Two ablations take one of the two away and keep the rest of the
agent as it is (the AGRN still runs on the same inputs):

* ``"network_mean"``: at every step, every tensor gets the mean over the
  network's tensors of what the AGRN chose for them at that step (location
  removed, time kept);
* ``"frozen"``: every tensor keeps fixed hyperparameters through training,
  typically its own time average over a training with the agent
  (`time_average` of a `ModulationTracer`'s record; time removed, location
  kept).

Means are taken in the space where the agent's output set maps each
hyperparameter onto its range (`keras_neuromod.outputs.to_space`): `log x` on
a log scale (a geometric mean of learning rates, which span orders of
magnitude), `log(1 - x)` on a complement_log scale (betas and momentum of the
``"centred"`` set), `x` on a linear one. An ablated optimizer is a subclass
of the agent's own (`NmAdam`, `NmSGD`, ...), so the update rule is unchanged
and `modulation()` (and so the tracer) shows the hyperparameters actually
used.

    optimizer = NmAdam(agent="nm_adam_general")
    tracer = ModulationTracer(update_freq=1)
    model.fit(x, y, callbacks=[tracer])                 # the agent as it is
    frozen = ablate(optimizer, "frozen", hyperparameters=time_average(tracer, optimizer))
    pooled = ablate(optimizer, "network_mean")          # fresh optimizers, same settings

The ablated classes of the built-in optimizers (`NetworkMeanNmAdam`,
`FrozenNmAdam`, `NetworkMeanNmSGD`, `FrozenNmSGD`) are registered Keras
objects, and a frozen optimizer's `get_config` holds its table, so that
`model.save`, `clone_model` and `from_config` round-trip them. Those of an
optimizer registered later are made (and registered) by `ablate`.
"""

import keras
import numpy as np
from keras import ops

from keras_neuromod import bases
from keras_neuromod import outputs as output_sets
from keras_neuromod.optimizers.base import NeuromodulatedOptimizer

__all__ = ["ABLATIONS", "ablate", "time_average"]

ABLATIONS = ("network_mean", "frozen")


def _scales(optimizer, outputs=None):
    """The scales of `optimizer`'s hyperparameters, in order (a class: its output set `outputs`)."""
    if isinstance(optimizer, NeuromodulatedOptimizer):
        scales = optimizer.scales
    else:
        scales = bases.Base.of(optimizer).scales(outputs)
    return tuple(scales[name] for name in optimizer.HYPERPARAMETERS)


class _Ablated:
    """Mixin: replaces the hyperparameters the AGRN chose before the update uses them."""

    ablation = None

    def _modulation_blocks(self, layer_of):
        # the ablations read every tensor's values at once
        return [(0, len(layer_of))] if len(layer_of) else []

    def _modulate(self, block, gradient_stats, shared):
        chosen, state, inputs = super()._modulate(block, gradient_stats, shared)
        return ops.cast(self._ablate(chosen), chosen.dtype), state, inputs

    def _bounded(self, values):
        lo, hi, _ = self._range_columns()
        return ops.clip(values, lo.astype(np.float32), hi.astype(np.float32))


class _NetworkMean(_Ablated):
    ablation = "network_mean"

    def _ablate(self, chosen):
        _, _, scales = self._range_columns()
        mean = ops.mean(output_sets.to_space(chosen, scales), axis=0, keepdims=True)
        mean = output_sets.from_space(mean, scales)
        return ops.broadcast_to(self._bounded(mean), ops.shape(chosen))


class _Frozen(_Ablated):
    ablation = "frozen"
    frozen_hyperparameters = None

    def build(self, variables):
        if self.built:
            return
        expected = (len(variables), len(self.HYPERPARAMETERS))
        table = self.frozen_hyperparameters
        if table is None or table.shape != expected:
            raise ValueError(
                f"A frozen {self._ablated_from.__name__} needs hyperparameters of shape "
                f"{expected} (tensors, {list(self.HYPERPARAMETERS)}), got "
                f"{None if table is None else table.shape}."
            )
        super().build(variables)
        # a variable, so that `set_hyperparameters` changes them without a retrace
        self._frozen = self.add_variable(
            expected,
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(table, dtype),
            name="frozen_hyperparameters",
        )

    @property
    def frozen_variable(self):
        """The optimizer variable holding the fixed table (None before the optimizer is built).

        float32 `[tensors, len(HYPERPARAMETERS)]`, rows in the order of
        `tensor_paths`; a vectorized evaluation writes candidate tables into
        its copy of the optimizer state there.
        """
        return self._frozen if self.built else None

    def set_hyperparameters(self, hyperparameters):
        """Replace the fixed values (same shape), also after the optimizer is built."""
        table = _table(hyperparameters)
        kept = self.frozen_hyperparameters
        if kept is not None and table.shape != kept.shape:
            raise ValueError(
                f"hyperparameters must keep the shape {kept.shape}, got {table.shape}."
            )
        self.frozen_hyperparameters = table
        if self.built:
            self._frozen.assign(table)

    def _reset_value(self, variable):
        if self.built and variable is self._frozen:
            return ops.convert_to_tensor(self.frozen_hyperparameters, variable.dtype)
        return super()._reset_value(variable)

    def _ablate(self, chosen):
        return self._bounded(ops.convert_to_tensor(self._frozen))

    def _warn_if_untold(self):
        pass  # its values are fixed: what the AGRN reads, the horizon included, changes nothing

    def get_config(self):
        config = super().get_config()
        config["hyperparameters"] = self.frozen_hyperparameters.tolist()
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        table = config.pop("hyperparameters", None)
        optimizer = super().from_config(config, custom_objects=custom_objects)
        optimizer.frozen_hyperparameters = _table(table)
        return optimizer


_MIXINS = {"network_mean": _NetworkMean, "frozen": _Frozen}
_CLASSES = {}


def _ablated_class(cls, ablation):
    key = (cls, ablation)
    if key not in _CLASSES:
        mixin = _MIXINS[ablation]
        name = "".join(part.title() for part in ablation.split("_")) + cls.__name__
        made = type(
            name,
            (mixin, cls),
            {
                "__module__": __name__,
                "_ablated_from": cls,
                "__doc__": f"{cls.__name__} with the {ablation!r} ablation (see `ablate`).",
            },
        )
        _CLASSES[key] = keras.saving.register_keras_serializable(package="keras_neuromod")(made)
    return _CLASSES[key]


def _table(hyperparameters):
    table = np.asarray(hyperparameters, np.float32)
    if table.ndim != 2 or not np.all(np.isfinite(table)):
        raise ValueError(
            "hyperparameters must be a finite [tensors, hyperparameters] array, "
            f"got shape {table.shape}."
        )
    return table


def ablate(optimizer, ablation, hyperparameters=None):
    """A fresh optimizer like `optimizer` (same agent and settings), ablated.

    Args:
        optimizer: a neuromodulated optimizer (`NmAdam`, `NmSGD`, ...); only
            its configuration is read.
        ablation: ``"network_mean"`` or ``"frozen"`` (see the module).
        hyperparameters: with ``"frozen"``: the fixed values, array-like of
            shape `[tensors, len(HYPERPARAMETERS)]` in the order of
            `optimizer.tensor_paths` (a `time_average`); clipped to the
            optimizer's ranges.

    Returns:
        An unbuilt optimizer of a subclass of `type(optimizer)`.
    """
    if not isinstance(optimizer, NeuromodulatedOptimizer):
        raise TypeError(f"ablate needs a neuromodulated optimizer, got {type(optimizer).__name__}.")
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}.")
    if (hyperparameters is None) != (ablation != "frozen"):
        raise ValueError("hyperparameters go with the 'frozen' ablation, and it needs them.")
    cls = optimizer._ablated_from if isinstance(optimizer, _Ablated) else type(optimizer)
    config = optimizer.get_config()
    config.pop("hyperparameters", None)
    if hyperparameters is not None:
        config["hyperparameters"] = _table(hyperparameters)
    return _ablated_class(cls, ablation).from_config(config)


def time_average(hyperparameters, optimizer, outputs=None):
    """Each tensor's mean over steps of the hyperparameters, in the agent's mapping space.

    Args:
        hyperparameters: `[steps, tensors, hyperparameters]` values (a
            `ModulationTracer`'s `hyperparameters`), or the tracer itself.
        optimizer: the optimizer (or its class) that chose them: its
            `HYPERPARAMETERS` and the scales of its output set say where each
            column averages (`keras_neuromod.outputs.to_space`).
        outputs: with a class, the name of its output set (None: the one
            `keras_neuromod.bases.Base.resolve_outputs` gives without an
            agent, ``"centred"`` for the shipped bases); an optimizer's own
            set is used otherwise.

    Returns:
        numpy float32 `[tensors, hyperparameters]`.
    """
    values = getattr(hyperparameters, "hyperparameters", hyperparameters)
    values = np.asarray(values, np.float64)
    count = len(optimizer.HYPERPARAMETERS)
    if values.ndim != 3 or values.shape[0] == 0 or values.shape[2] != count:
        raise ValueError(
            f"time_average needs [steps >= 1, tensors, {count}] values, got shape {values.shape}."
        )
    scales = _scales(optimizer, outputs)
    mean = output_sets.to_space(values, scales, xp=np).mean(axis=0)
    return output_sets.from_space(mean, scales, xp=np).astype(np.float32)


def _register_builtins():
    from keras_neuromod.optimizers.adam import NmAdam
    from keras_neuromod.optimizers.sgd import NmSGD

    for cls in (NmAdam, NmSGD):
        for ablation in ABLATIONS:
            _ablated_class(cls, ablation)


_register_builtins()
