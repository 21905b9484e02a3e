"""Model-level switching and training (the paper's Algorithm 1).

* `set_task`, `get_task`, `task_layers`: select the task of every switchable
  layer of a model at once (an eager assignment of non-trainable variables: a
  compiled model is not retraced and not recompiled).
* `fit_alternating`: Algorithm 1 with Keras's own `fit` underneath: `period`
  epochs of each task in turn, in that task's state, for `cycles` cycles,
  logging per-task loss and metrics.
"""

import math

import keras

from keras_neuromod import _fields
from keras_neuromod import _keras_compat
from keras_neuromod.switching.layers import TaskStateMixin

__all__ = [
    "AlternatingHistory",
    "fit_alternating",
    "get_task",
    "set_task",
    "task_layers",
]


def task_layers(model):
    """Every layer of `model` (nested ones included) that holds a task state."""
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"model must be a Keras model or layer, got {type(model).__name__}.")
    return [
        layer for layer in _keras_compat.flatten_layers(model) if isinstance(layer, TaskStateMixin)
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
            raise ValueError(
                f"tasks[{index}] must be an (x, y) pair or a dict, got {type(task).__name__}."
            )
        spec.setdefault("name", f"task{index}")
        spec.setdefault("state", index)
        spec.setdefault("y", None)
        out.append(spec)
    names = [spec["name"] for spec in out]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must differ, got {names}.")
    return out


def fit_alternating(
    model,
    tasks,
    period,
    cycles,
    *,
    batch_size=None,
    shuffle=True,
    callbacks=None,
    evaluate_every=1,
    on_cycle_end=None,
    log_every=0,
    log=print,
    final_task=0,
):
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
    _check_model(model)
    specs = _normalise_tasks(tasks)
    period = _fields.integer(period, "period", 1)
    cycles = _fields.integer(cycles, "cycles", 1)
    evaluate_every = _fields.integer(evaluate_every, "evaluate_every")
    log_every = _fields.integer(log_every, "log_every")
    _check_switchable(model)
    fit_options = {"batch_size": batch_size, "shuffle": shuffle, "callbacks": callbacks}
    history = AlternatingHistory()
    epoch = 0
    for cycle in range(cycles):
        row = {"cycle": cycle}
        for spec in specs:
            _fit_task(model, spec, cycle, epoch, period, fit_options, history, row)
            epoch += period
        if evaluate_every and (cycle + 1) % evaluate_every == 0:
            _evaluate_tasks(model, specs, batch_size, row)
        history.cycles.append(row)
        if log_every and (cycle + 1) % log_every == 0:
            log(_summary(row))
        if on_cycle_end is not None and on_cycle_end(cycle, row):
            break
    if final_task is not None:
        set_task(model, final_task)
    return history


def _check_model(model):
    """Raise unless `model` is a compiled Keras model."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got {type(model).__name__}.")
    if not getattr(model, "compiled", False):
        raise ValueError("Compile the model before fit_alternating (model.compile(...)).")


def _check_switchable(model):
    """Raise unless `model` has a switchable layer or a `TaskInput`."""
    if not task_layers(model):
        raise ValueError(
            f"{model.name!r} has no switchable layer or TaskInput: there is nothing "
            "for fit_alternating to switch."
        )


def _fit_task(model, spec, cycle, epoch, period, fit_options, history, row):
    """Fit one task for `period` epochs in its state; log its epochs and last values."""
    set_task(model, spec["state"])
    fitted = model.fit(
        spec["x"],
        spec["y"],
        sample_weight=spec.get("sample_weight"),
        batch_size=fit_options["batch_size"],
        epochs=epoch + period,
        initial_epoch=epoch,
        shuffle=fit_options["shuffle"],
        callbacks=fit_options["callbacks"],
        verbose=0,
    )
    logs = fitted.history
    for offset in range(period):
        entry = {
            "cycle": cycle,
            "task": spec["name"],
            "state": spec["state"],
            "epoch": epoch + offset,
        }
        entry.update({k: float(v[offset]) for k, v in logs.items() if offset < len(v)})
        history.epochs.append(entry)
    row.update({f"{spec['name']}_{k}": float(v[-1]) for k, v in logs.items() if v})


def _evaluate_tasks(model, specs, batch_size, row):
    """Evaluate every task that has ``eval_data`` in its own state, into `row`."""
    for spec in specs:
        if spec.get("eval_data") is None:
            continue
        set_task(model, spec["state"])
        x_eval, y_eval = spec["eval_data"]
        result = model.evaluate(x_eval, y_eval, batch_size=batch_size, verbose=0, return_dict=True)
        row.update({f"{spec['name']}_eval_{k}": float(v) for k, v in result.items()})


def _summary(row):
    parts = [f"cycle {row['cycle'] + 1}"]
    for key, value in row.items():
        if key != "cycle" and math.isfinite(value):
            parts.append(f"{key} {value:.4f}")
    return "  ".join(parts)
