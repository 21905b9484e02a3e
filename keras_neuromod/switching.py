"""Training and model-level tools for weight-space task switching (seeds/002).

* `set_task`, `get_task`, `task_layers`: select the task of every switchable
  layer of a model at once (an eager assignment of non-trainable variables: a
  compiled model is not retraced and not recompiled).
* `fit_alternating`: the paper's Algorithm 1 with Keras's own `fit` underneath:
  `period` epochs of each task in turn, in that task's state, for `cycles`
  cycles, logging per-task loss and metrics.
* `FlatSwitchableMLP`: the flat form, one M over all the weights of a small
  dense network flattened into one vector (the paper's exact transform), refused
  above a size limit.
* `TaskInput`: the baseline, the task given as an extra (one-hot) input, driven
  by the same `set_task` and `fit_alternating`.

The per-layer switchable layers live in `keras_neuromod.layers.switching`.
"""

import math

import numpy as np
import keras
from keras import ops

from keras_neuromod.layers.switching import MODES
from keras_neuromod.layers.switching import MODULATIONS
from keras_neuromod.layers.switching import TaskStateMixin
from keras_neuromod.layers.switching import _add_modulation_weights
from keras_neuromod.layers.switching import _check_choice
from keras_neuromod.layers.switching import _check_nonnegative
from keras_neuromod.layers.switching import _check_seed

__all__ = [
    "DEFAULT_MAX_FLAT_WEIGHTS",
    "AlternatingHistory",
    "FlatSwitchableMLP",
    "TaskInput",
    "fit_alternating",
    "get_task",
    "set_task",
    "task_layers",
]

# 4,096 weights need a 4,096 x 4,096 float32 M: 64 MiB, and a matrix-vector
# product per step that is still cheap next to the network itself.
DEFAULT_MAX_FLAT_WEIGHTS = 4096


def task_layers(model):
    """Every layer of `model` (nested ones included) that holds a task state."""
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"model must be a Keras model or layer, got {type(model).__name__}.")
    return [
        layer for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, TaskStateMixin)
    ]


def set_task(model, task):
    """Set the task state of every switchable layer (and `TaskInput`) of `model`.

    An eager assignment of non-trainable variables: call it between `fit`,
    `evaluate` and `predict` calls; the compiled functions are reused as they are.

    Args:
        model: a built Keras model or layer.
        task: the task index (0 or 1 for the switchable layers).

    Returns:
        The number of layers switched.
    """
    layers = task_layers(model)
    if not layers:
        raise ValueError(
            f"{model.name!r} has no switchable layer (SwitchableDense, "
            "SwitchableConv2D, FlatSwitchableMLP or TaskInput): nothing to switch."
        )
    for layer in layers:
        layer.set_task(task)
    return len(layers)


def get_task(model):
    """The common task state of `model`'s switchable layers (ValueError if mixed)."""
    layers = task_layers(model)
    if not layers:
        raise ValueError(f"{model.name!r} has no switchable layer.")
    states = {layer.name: layer.task for layer in layers}
    if len(set(states.values())) != 1:
        raise ValueError(f"The switchable layers of {model.name!r} are in mixed states: {states}.")
    return next(iter(states.values()))


@keras.saving.register_keras_serializable(package="keras_neuromod")
class TaskInput(TaskStateMixin, keras.layers.Layer):
    """The extra-input baseline: appends a one-hot code of the task to the input.

    The code is added on the last axis (features of a vector, channels of an
    image, constant over space), so ``TaskInput() -> Dense/Conv2D ...`` is the
    usual "task as an extra input" network. The task is a non-trainable state
    variable like that of the switchable layers, so the same `set_task` and
    `fit_alternating` drive both methods and the data need no extra column.

    Args:
        num_tasks: number of tasks (the length of the one-hot code), at least 2.
    """

    def __init__(self, num_tasks=2, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks < 2:
            raise ValueError(f"num_tasks must be an int >= 2, got {num_tasks!r}.")
        self.num_tasks = int(num_tasks)

    def build(self, input_shape):
        self._add_task_variable()

    def call(self, inputs):
        code = ops.one_hot(
            ops.cast(self.task_state, "int32"), self.num_tasks, dtype=inputs.dtype
        )
        # (..., 1) + (k,) broadcasts to (..., k) for any batch and spatial shape.
        code = ops.add(ops.zeros_like(inputs[..., :1]), code)
        return ops.concatenate([inputs, code], axis=-1)

    def compute_output_shape(self, input_shape):
        last = input_shape[-1]
        return tuple(input_shape[:-1]) + (None if last is None else last + self.num_tasks,)

    def get_config(self):
        config = super().get_config()
        config["num_tasks"] = self.num_tasks
        return config


@keras.saving.register_keras_serializable(package="keras_neuromod")
class FlatSwitchableMLP(TaskStateMixin, keras.layers.Layer):
    """A small dense network switched by one transform over all its weights.

    The paper's exact transform: every kernel entry of every layer goes into
    one vector w (length N) and every bias into one vector b; state 1 uses
    ``w' = M w`` with M (N x N) and ``b' = b + v``. Because M is N x N, the
    form is refused above `max_flat_weights` (a 784-100-10 MLP would need a
    79,510 x 79,510 matrix, 25 GB); use the per-layer layers for bigger models.
    The entries are flattened layer by layer in Keras's (in, out) order; the
    order does not matter for M's distribution.

    Args:
        units: the sizes of the layers, e.g. ``[8, 1]`` for a 2-8-1 network.
        activation: activation of the hidden layers (default ``"relu"``, as in
            the paper's gate networks).
        output_activation: activation of the last layer (default none).
        use_bias: whether the layers have biases (and b, v exist).
        kernel_initializer, bias_initializer: initializers, applied per layer.
        modulation, modulation_scale, bias_modulation_scale, modulation_seed,
        mode: as in `keras_neuromod.layers.switching.SwitchableDense`.
        max_flat_weights: the largest N accepted (default 4,096: M is 64 MiB).
    """

    def __init__(self, units, activation="relu", output_activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", modulation="identity_gaussian",
                 modulation_scale=1.0, bias_modulation_scale=1.0,
                 modulation_seed=None, mode="reparametrize",
                 max_flat_weights=DEFAULT_MAX_FLAT_WEIGHTS, **kwargs):
        super().__init__(**kwargs)
        try:
            units = [int(u) for u in units]
        except (TypeError, ValueError):
            raise ValueError(f"units must be a list of positive ints, got {units!r}.") from None
        if not units or min(units) < 1:
            raise ValueError(f"units must be a non-empty list of positive ints, got {units!r}.")
        self.units = units
        self.activation = keras.activations.get(activation)
        self.output_activation = keras.activations.get(output_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.modulation = _check_choice("modulation", modulation, MODULATIONS)
        self.modulation_scale = _check_nonnegative("modulation_scale", modulation_scale)
        self.bias_modulation_scale = _check_nonnegative(
            "bias_modulation_scale", bias_modulation_scale
        )
        self.modulation_seed = _check_seed(modulation_seed)
        self.mode = _check_choice("mode", mode, MODES)
        if isinstance(max_flat_weights, bool) or not isinstance(
            max_flat_weights, (int, np.integer)
        ) or max_flat_weights < 1:
            raise ValueError(f"max_flat_weights must be a positive int, got {max_flat_weights!r}.")
        self.max_flat_weights = int(max_flat_weights)

    @staticmethod
    def flat_size(input_dim, units):
        """The number of kernel entries N that the flat M must cover."""
        sizes = [int(input_dim)] + [int(u) for u in units]
        return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError("FlatSwitchableMLP needs a known last input dimension.")
        size = self.flat_size(input_dim, self.units)
        if size > self.max_flat_weights:
            mib = size * size * 4 / 2**20
            raise ValueError(
                f"The flat transform of this network needs one {size} x {size} matrix "
                f"over its {size} weights ({mib:,.0f} MiB in float32), above "
                f"max_flat_weights={self.max_flat_weights}. Use the per-layer form "
                "(SwitchableDense, SwitchableConv2D) for a network this size, or "
                "raise max_flat_weights if the memory is really there."
            )
        sizes = [int(input_dim)] + self.units
        self._shapes = list(zip(sizes[:-1], sizes[1:]))
        # A seeded initializer gives the same stream at every call: give each
        # layer's block its own seed (seed + index) so the blocks are independent.
        inits = []
        for index in range(len(self._shapes)):
            config = self.kernel_initializer.get_config()
            if isinstance(config.get("seed"), int):
                config["seed"] += index
            inits.append(type(self.kernel_initializer).from_config(config))

        def kernel_init(shape, dtype=None):
            blocks = [ops.reshape(init(s, dtype=dtype), (-1,))
                      for init, s in zip(inits, self._shapes)]
            return ops.concatenate(blocks, axis=0)

        self.kernel = self.add_weight(name="kernel", shape=(size,), initializer=kernel_init)
        bias_size = sum(self.units) if self.use_bias else 0
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(bias_size,), initializer=self.bias_initializer
            )
        _add_modulation_weights(self, size, bias_size)
        self._add_task_variable()

    def effective_weights(self):
        """The flat (w, b) the network computes with in its current state."""
        if self.mode == "in_place":
            return self.kernel, self.bias
        t = ops.cast(self.task_state, self.compute_dtype)
        w = ops.cast(self.kernel, self.compute_dtype)
        moved = ops.matmul(ops.cast(self.modulation_matrix, self.compute_dtype), w)
        w = ops.add(w, ops.multiply(t, ops.subtract(moved, w)))
        b = self.bias
        if b is not None:
            b = ops.add(
                ops.cast(b, self.compute_dtype),
                ops.multiply(t, ops.cast(self.modulation_bias, self.compute_dtype)),
            )
        return w, b

    def unflatten(self, w, b):
        """Split flat (w, b) into per-layer ``[(kernel, bias), ...]`` (Keras layout)."""
        out, i, j = [], 0, 0
        for fan_in, fan_out in self._shapes:
            kernel = ops.reshape(w[i:i + fan_in * fan_out], (fan_in, fan_out))
            bias = None if b is None else b[j:j + fan_out]
            out.append((kernel, bias))
            i += fan_in * fan_out
            j += fan_out
        return out

    def call(self, inputs):
        w, b = self.effective_weights()
        x = inputs
        blocks = self.unflatten(w, b)
        for index, (kernel, bias) in enumerate(blocks):
            x = ops.matmul(x, kernel)
            if bias is not None:
                x = ops.add(x, bias)
            activation = self.output_activation if index == len(blocks) - 1 else self.activation
            if activation is not None:
                x = activation(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units[-1],)

    def _numpy(self):
        w = ops.convert_to_numpy(self.kernel).astype("float64")
        b = None if self.bias is None else ops.convert_to_numpy(self.bias).astype("float64")
        m = ops.convert_to_numpy(self.modulation_matrix).astype("float64")
        v = None if self.bias is None else ops.convert_to_numpy(self.modulation_bias)
        return w, b, m, v

    def base_weights(self):
        """The state-0 flat (w, b) as numpy, whatever the mode and state."""
        self._require_built("base_weights")
        w, b, m, v = self._numpy()
        if self.mode == "in_place" and self.task == 1:
            return np.linalg.solve(m, w), None if b is None else b - v
        return w, b

    def transformed_weights(self):
        """The state-1 flat weights ``(M w, b + v)`` as numpy."""
        w, b = self.base_weights()
        _, _, m, v = self._numpy()
        return m @ w, None if b is None else b + v

    def _switch_weights(self, old, new):
        if self.mode != "in_place" or old == new:
            return
        w, b, m, v = self._numpy()
        if new == 1:
            w, b = m @ w, None if b is None else b + v
        else:
            try:
                w = np.linalg.solve(m, w)
            except np.linalg.LinAlgError:
                raise ValueError("The modulation matrix M is singular; it has no inverse.") from None
            b = None if b is None else b - v
        self.kernel.assign(w.astype(self.kernel.dtype))
        if b is not None:
            self.bias.assign(b.astype(self.bias.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": list(self.units),
            "activation": keras.activations.serialize(self.activation),
            "output_activation": keras.activations.serialize(self.output_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "modulation": self.modulation,
            "modulation_scale": self.modulation_scale,
            "bias_modulation_scale": self.bias_modulation_scale,
            "modulation_seed": self.modulation_seed,
            "mode": self.mode,
            "max_flat_weights": self.max_flat_weights,
            "form": "flat",
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("form", None)
        return cls(**config)


class AlternatingHistory:
    """What `fit_alternating` logged.

    Attributes:
        epochs: one dict per epoch: ``cycle``, ``task`` (name), ``state``,
            ``epoch`` (counted across all fits) and Keras's logs of that epoch.
        cycles: one dict per cycle: ``cycle`` and, per task, its last-epoch
            training logs prefixed by the task name (``"A_loss"``), plus the
            evaluation logs (``"A_eval_accuracy"``) when the task has
            evaluation data and the cycle was evaluated.
    """

    def __init__(self):
        self.epochs = []
        self.cycles = []

    def task_series(self, task, key):
        """One logged quantity of one task, epoch by epoch."""
        return [row[key] for row in self.epochs if row["task"] == task and key in row]

    def as_dict(self):
        return {"epochs": list(self.epochs), "cycles": list(self.cycles)}


def _normalise_tasks(tasks):
    if isinstance(tasks, dict) or not hasattr(tasks, "__len__") or len(tasks) < 2:
        raise ValueError("tasks must be a list of at least two tasks ((x, y) pairs or dicts).")
    out = []
    for index, task in enumerate(tasks):
        if isinstance(task, dict):
            unknown = set(task) - {"x", "y", "name", "state", "eval_data", "sample_weight"}
            if unknown or "x" not in task:
                raise ValueError(
                    f"tasks[{index}] must have the keys x, y and optionally name, state, "
                    f"eval_data, sample_weight; got {sorted(task)}."
                )
            spec = dict(task)
        elif isinstance(task, (tuple, list)) and len(task) == 2:
            spec = {"x": task[0], "y": task[1]}
        else:
            raise ValueError(f"tasks[{index}] must be an (x, y) pair or a dict, got {type(task).__name__}.")
        spec.setdefault("name", f"task{index}")
        spec.setdefault("state", index)
        spec.setdefault("y", None)
        out.append(spec)
    names = [spec["name"] for spec in out]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must differ, got {names}.")
    return out


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def fit_alternating(model, tasks, period, cycles, *, batch_size=None, shuffle=True,
                    callbacks=None, evaluate_every=1, on_cycle_end=None,
                    log_every=0, log=print, final_task=0):
    """Train `model` on tasks in turn, each in its own task state (Algorithm 1).

    Each cycle runs, for every task in order: `set_task(model, state)`, then
    ``model.fit(x, y, epochs=period)``. The model must be compiled once
    beforehand; the task state is a variable, so the same compiled train
    function (and the same optimizer state) serves every task and no switch
    retraces or recompiles anything. Epochs are counted across fits
    (`initial_epoch`), so epoch-based callbacks see one continuous run.

    Args:
        model: a compiled Keras model with switchable layers (or `TaskInput`).
        tasks: a list of tasks, each an ``(x, y)`` pair (state = its index,
            name ``"task<i>"``) or a dict with ``x``, ``y`` and optionally
            ``name``, ``state``, ``sample_weight`` and ``eval_data`` (an
            ``(x, y)`` pair evaluated in the task's state at cycle ends).
        period: epochs of each task before switching (the paper's m).
        cycles: number of cycles (the paper's n).
        batch_size: passed to `fit` (default Keras's 32).
        shuffle: passed to `fit`.
        callbacks: Keras callbacks passed to every `fit` call.
        evaluate_every: evaluate tasks that have ``eval_data`` every this many
            cycles (0: never).
        on_cycle_end: optional ``f(cycle, row)`` called after each cycle with the
            cycle's log row; a true return value stops training.
        log_every: print a one-line summary every this many cycles (0: never).
        log: the print function used for the summary.
        final_task: the state the model is left in (None: the last task's).

    Returns:
        An `AlternatingHistory`.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got {type(model).__name__}.")
    if not getattr(model, "compiled", False):
        raise ValueError("Compile the model before fit_alternating (model.compile(...)).")
    specs = _normalise_tasks(tasks)
    period = _positive_int("period", period)
    cycles = _positive_int("cycles", cycles)
    for name, value in (("evaluate_every", evaluate_every), ("log_every", log_every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}.")
    if not task_layers(model):
        raise ValueError(
            f"{model.name!r} has no switchable layer or TaskInput: there is nothing "
            "for fit_alternating to switch."
        )
    history = AlternatingHistory()
    epoch = 0
    for cycle in range(cycles):
        row = {"cycle": cycle}
        for spec in specs:
            set_task(model, spec["state"])
            fitted = model.fit(
                spec["x"], spec["y"], sample_weight=spec.get("sample_weight"),
                batch_size=batch_size, epochs=epoch + period, initial_epoch=epoch,
                shuffle=shuffle, callbacks=callbacks, verbose=0,
            )
            logs = fitted.history
            for offset in range(period):
                entry = {"cycle": cycle, "task": spec["name"], "state": spec["state"],
                         "epoch": epoch + offset}
                entry.update({k: float(v[offset]) for k, v in logs.items() if offset < len(v)})
                history.epochs.append(entry)
            row.update({f"{spec['name']}_{k}": float(v[-1]) for k, v in logs.items() if v})
            epoch += period
        if evaluate_every and (cycle + 1) % evaluate_every == 0:
            for spec in specs:
                if spec.get("eval_data") is None:
                    continue
                set_task(model, spec["state"])
                x_eval, y_eval = spec["eval_data"]
                result = model.evaluate(x_eval, y_eval, batch_size=batch_size,
                                        verbose=0, return_dict=True)
                row.update({f"{spec['name']}_eval_{k}": float(v) for k, v in result.items()})
        history.cycles.append(row)
        if log_every and (cycle + 1) % log_every == 0:
            log(_summary(row))
        if on_cycle_end is not None and on_cycle_end(cycle, row):
            break
    if final_task is not None:
        set_task(model, final_task)
    return history


def _summary(row):
    parts = [f"cycle {row['cycle'] + 1}"]
    for key, value in row.items():
        if key != "cycle" and math.isfinite(value):
            parts.append(f"{key} {value:.4f}")
    return "  ".join(parts)
