"""Evidence: does an optimizer help on *this* model? Paired comparisons over seeds.

A user's first question about an agent is whether it trains their model better
than the optimizer they would otherwise pick. `compare` answers it the way a
careful reviewer wants it answered:

* every method trains each of the task's models from the same seeds; a seed
  fixes the initial weights, the dropout draws and the order of the training
  examples in every epoch (`tasks.Task.data_order`), so the runs of two
  methods on one seed differ only by the optimizer and their differences are
  *paired*;
* each run is scored on the test split: the task's metric (accuracy, or the
  mean squared error) and its loss;
* a run whose training loss turns NaN or Inf, or whose test loss is not
  finite, has *diverged*. It always counts against the method that diverged:
  in a pair it scores as the worse of the other method's run and the untrained
  model, on the metric and on the loss;
* per pair of methods, the per-seed differences (positive: the first method is
  better) give a mean and a 95% confidence interval (Student's t over the
  seeds), and a verdict: the method that diverged on more seeds (where the
  other did not) is ``"worse"``; otherwise ``"better"`` or ``"worse"`` when the
  interval excludes 0, else ``"within noise"``. Over several models of one
  task, the unit is the seed: its differences are averaged over the models
  first.

Across tasks, `aggregate` counts wins, ties and losses by those verdicts over
(task, model) pairs, and averages a scale-free effect, the log ratio of test
errors (1 - accuracy, or the MSE), with its interval taken over *tasks*: the
models of one task and the seeds of one pair are not independent replicates of
the question "does it help on another task?".

Methods are zero-argument factories of Keras optimizers, or `Tuned` (a Keras
optimizer whose settings are searched per model on the validation split, the
reviewer-grade baseline) or `Ablated` (an agent with location or time taken
away). A `record` file keeps every finished run, so an interrupted comparison
resumes without redoing one; a method whose settings change is trained again.

    from keras_neuromod import NmAdam, evidence
    import keras

    report = evidence.compare("wine", {
        "Nm-Adam": lambda: NmAdam(agent="nm_adam_general"),
        "Adam": keras.optimizers.Adam,
        "Adam*": evidence.Tuned("Adam"),
    }, seeds=10)
    print(report.table())
    report.verdict("Nm-Adam", "Adam")      # "better", "worse" or "within noise"
"""

import dataclasses
import hashlib
import itertools
import json
import math
import os
import sys
import time

import keras
import numpy as np

from keras_neuromod import outputs as output_sets
from keras_neuromod import tasks as task_registry
from keras_neuromod.io import atomic_write_json
from keras_neuromod.io import read_json

__all__ = [
    "Ablated",
    "Axis",
    "ADAM_AXES",
    "NEUTRAL_SETTINGS",
    "Report",
    "Run",
    "SGD_AXES",
    "TUNED_AXES",
    "Tuned",
    "VERDICTS",
    "WithHorizon",
    "agent_method",
    "aggregate",
    "compare",
    "identity",
    "interval",
    "paired_differences",
]

VERDICTS = ("better", "within noise", "worse")
RECORD_FORMAT = "keras_neuromod.evidence-record/1"
# Seeds of the tuned baselines' searches: a stream of their own, none a compared seed.
VALIDATION_SEEDS = 10_000
# Share of a training's steps spent warming up the learning rate of a cosine schedule.
WARMUP_FRACTION = 0.05


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------


def interval(values, confidence=0.95):
    """Mean of `values` and its `confidence` interval (Student's t over the values).

    Args:
        values: one number per replicate (paired differences, per-task effects).
        confidence: the interval's coverage, in (0, 1).

    Returns:
        `(mean, low, high)`; with fewer than two values the interval is
        infinite, and with no spread it is the mean itself.
    """
    from scipy import stats

    values = np.asarray(values, np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"interval needs a non-empty list of numbers, got shape {values.shape}.")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, -math.inf, math.inf
    half = float(
        stats.t.ppf(0.5 + confidence / 2, len(values) - 1)
        * values.std(ddof=1)
        / math.sqrt(len(values))
    )
    return mean, mean - half, mean + half


def _verdict(low, high):
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "within noise"


def result_cells(row):
    """A method's row of `Report.rows` as table cells: its test metric (mean +- std over
    seeds), its median test loss and its diverged runs."""
    return (
        f"{row['metric_mean']:.4f} +- {row['metric_std']:.4f}",
        f"{row['loss_median']:.4f}",
        str(row["diverged"]),
    )


def paired_cells(paired):
    """A paired difference of `Report.paired` as table cells: the mean difference, its
    interval, the seeds on which the method is ahead, and the verdict."""
    low, high = paired["ci"]
    return (
        f"{paired['mean']:+.4f}",
        f"[{low:+.4f}, {high:+.4f}]",
        f"{paired['seeds_ahead']}/{paired['seeds']}",
        paired["verdict"],
    )


def paired_differences(mine, theirs, untrained, higher_is_better, what="metric"):
    """Per-seed differences of one pair of methods, positive where `mine` is better.

    A diverged run scores as the worse of the other method's run and the
    untrained model on that seed, so a divergence never helps the method that
    diverged; two diverged runs tie.

    Args:
        mine, theirs: lists of `Run`, one per seed, in the same seed order.
        untrained: the untrained model's `Run` per seed (its metric and loss).
        higher_is_better: whether a larger metric is better (accuracy).
        what: ``"metric"`` (the difference of the metric, signed so that
            positive is better), ``"loss"`` (the log ratio of test losses,
            theirs over mine) or ``"error"`` (the log ratio of test errors;
            see `Run.error`).

    Returns:
        numpy float64 [seeds].
    """
    if what not in ("metric", "loss", "error"):
        raise ValueError(f"what must be 'metric', 'loss' or 'error', got {what!r}.")
    if not len(mine) == len(theirs) == len(untrained):
        raise ValueError(
            f"Paired runs need one run per seed each, got {len(mine)}, {len(theirs)} "
            f"and {len(untrained)} untrained."
        )
    out = []
    for a, b, zero in zip(mine, theirs, untrained):
        if what == "metric":
            sign = 1.0 if higher_is_better else -1.0
            values = [sign * r.metric for r in (a, b, zero)]
        elif what == "loss":
            values = [-math.log(max(r.loss, 1e-30)) for r in (a, b, zero)]
        else:
            values = [-math.log(r.error(higher_is_better)) for r in (a, b, zero)]
        va, vb, v0 = values
        if a.diverged and b.diverged:
            out.append(0.0)
        elif a.diverged:
            out.append(min(vb, v0) - vb)
        elif b.diverged:
            out.append(va - min(va, v0))
        else:
            out.append(va - vb)
    return np.asarray(out, np.float64)


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """One training's outcome on the test (or validation) split.

    Attributes:
        seed: the seed it trained from.
        metric: the task's metric (accuracy, or MSE); NaN when it diverged.
        loss: the loss; NaN when it diverged.
        diverged: the training loss or the final loss was not finite.
        steps: the optimizer steps it took.
        examples: the examples it was scored on.
        curve: the training loss and metric of every epoch (`fit`'s history:
            ``{"loss": [...], "metric": [...]}``), or None.
    """

    seed: int
    metric: float
    loss: float
    diverged: bool
    steps: int = 0
    examples: int = 1
    curve: dict = None

    def error(self, higher_is_better):
        """The test error: 1 - accuracy (at least half an example's share), or the MSE."""
        if higher_is_better:
            return max(1.0 - self.metric, 0.5 / max(self.examples, 1))
        return max(self.metric, 1e-12)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data, where="run"):
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object, got {type(data).__name__}.")
        missing = [
            f.name for f in dataclasses.fields(cls) if f.name not in data and f.name != "curve"
        ]
        if missing:
            raise ValueError(f"{where} lacks the field(s) {missing}.")
        try:
            curve = data.get("curve")
            if curve is not None:
                curve = {key: [float(v) for v in curve[key]] for key in ("loss", "metric")}
            return cls(
                seed=int(data["seed"]),
                metric=float(data["metric"]),
                loss=float(data["loss"]),
                diverged=bool(data["diverged"]),
                steps=int(data["steps"]),
                examples=int(data["examples"]),
                curve=curve,
            )
        except (TypeError, ValueError, KeyError):
            raise ValueError(f"{where} holds a field of the wrong type: {data!r:.200}.") from None


class _StepCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps, self.finite = 0, True

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.finite = False
            self.model.stop_training = True


class Trainer:
    """One model of a task compiled with one optimizer, trained from any seed.

    A seed's training starts from that seed's initial weights (and dropout
    draws) with the optimizer's state as it was when built, and visits the
    training split in the seed's order: the training a fresh model and a fresh
    optimizer would have. Compiling once spares a trace per seed.

    Args:
        task: a `tasks.Task`.
        model: one of the task's models.
        optimizer: an unbuilt Keras optimizer.
    """

    def __init__(self, task, model, optimizer):
        self.task, self.model_name, self.optimizer = task, model, optimizer
        self.model = task.build_model(model, seed=0)
        task.compile(self.model, optimizer)
        optimizer.build(self.model.trainable_variables)
        self._optimizer_start = [
            np.array(keras.ops.convert_to_numpy(v)) for v in optimizer.variables
        ]

    def _start(self, seed):
        keras.utils.set_random_seed(seed)
        fresh = self.task.build_model(self.model_name, seed=seed)
        targets, sources = self.model.variables, fresh.variables
        if [tuple(v.shape) for v in targets] != [tuple(v.shape) for v in sources]:
            raise ValueError(
                f"The builder of model {self.model_name!r} of task {self.task.name!r} "
                "builds models of different variables from one call to the next."
            )
        for target, source in zip(targets, sources):
            target.assign(source.value)
        for variable, value in zip(self.optimizer.variables, self._optimizer_start):
            variable.assign(value)
        if hasattr(self.optimizer, "reset_state"):
            self.optimizer.reset_state()

    def run(self, seed, split="test", callbacks=(), horizon=False):
        """Train from `seed` and score on `split` (``"test"`` or ``"val"``): a `Run`.

        With `horizon`, a neuromodulated optimizer is told the training's updates
        (`set_horizon`) before its first step, as `callbacks.TrainingHorizon`
        tells it in one `fit`; the training here is one `fit` per epoch, which
        that callback would read as the last.
        """
        self._start(seed)
        orders = self.task.data_order(seed)  # [epochs, training examples]
        if horizon:
            if not hasattr(self.optimizer, "set_horizon"):
                raise ValueError(
                    f"Only a neuromodulated optimizer is told a horizon, not "
                    f"{type(self.optimizer).__name__}."
                )
            epochs, examples = orders.shape
            every = self.optimizer.gradient_accumulation_steps or 1
            steps = epochs * math.ceil(examples / self.task.batch_size)
            self.optimizer.set_horizon(steps // every)
        try:
            return self._train(seed, split, callbacks, orders)
        finally:
            if horizon:
                self.optimizer.set_horizon(None)

    def _train(self, seed, split, callbacks, orders):
        """`run`'s training on the epochs' `orders`, then its score."""
        task = self.task
        counter = _StepCounter()
        x, y = task.splits(seed).train
        # one `fit` per epoch, on that epoch's order (Keras's own shuffling would
        # draw another order for every method)
        curve = {"loss": [], "metric": []}
        for epoch, order in enumerate(orders):
            history = self.model.fit(
                x[order],
                y[order],
                batch_size=task.batch_size,
                epochs=epoch + 1,
                initial_epoch=epoch,
                shuffle=False,
                verbose=0,
                callbacks=[counter, *callbacks],
            ).history
            if not counter.finite:
                break
            curve["loss"] += [float(v) for v in history["loss"]]
            curve["metric"] += [float(v) for v in history[task.metric]]
        return dataclasses.replace(self.score(seed, split, counter), curve=curve)

    def score(self, seed, split="test", counter=None):
        """Score the model as it is on `split` of `seed`'s data (untrained: `counter` None)."""
        x, y = self.task.splits(seed).test if split == "test" else self.task.splits(seed).val
        result = self.model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
        loss, metric = float(result["loss"]), float(result[self.task.metric])
        finite = counter is None or counter.finite
        diverged = not (finite and math.isfinite(loss) and math.isfinite(metric))
        return Run(
            seed=int(seed),
            metric=math.nan if diverged else metric,
            loss=math.nan if diverged else loss,
            diverged=diverged,
            steps=0 if counter is None else counter.steps,
            examples=len(y),
        )

    def untrained(self, seed, split="test"):
        """The seed's initial model, scored without training (what a diverged run is
        worth at best)."""
        self._start(seed)
        return self.score(seed, split)


# --------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------


def _digest(data):
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Settings that a version of the optimizers added to their config, each with the
# value that trains exactly as the versions before it did: at that value the
# setting stays out of an identity, so that records written before it was added
# are reused rather than trained again.
NEUTRAL_SETTINGS = {"outputs": output_sets.LEGACY, "horizon": None}


def identity(optimizer):
    """What makes an optimizer train the way it does: its serialized config, hashed.

    Two optimizers of the same identity train a model alike, so that work done
    with one (a record's runs, a figure) holds for the other. The name is left
    out: Keras numbers it per process (``"sgd_4"``). So is a setting of
    `NEUTRAL_SETTINGS` at its listed value: the setting was added to the
    config later, and at that value trains as the versions without it did.

    Args:
        optimizer: a `keras.optimizers.Optimizer`.

    Returns:
        A 16-character hexadecimal digest.
    """
    data = keras.saving.serialize_keras_object(optimizer)
    data["config"] = {
        key: value
        for key, value in data["config"].items()
        if key != "name" and not (key in NEUTRAL_SETTINGS and value == NEUTRAL_SETTINGS[key])
    }
    return _digest(data)


class _Factory:
    """A zero-argument factory of an optimizer, as a method."""

    def __init__(self, factory):
        self.factory = factory

    def plan(self, context):
        return _Plan(self.factory, settings=None)


@dataclasses.dataclass
class _Plan:
    """A method resolved for one (task, model): its optimizer factory and what it chose."""

    factory: object
    settings: dict = None
    search: dict = None
    before_run: object = None  # before_run(trainer, seed)
    horizon: bool = False  # each training told its length (`WithHorizon`)


@dataclasses.dataclass(frozen=True)
class Axis:
    """One setting a `Tuned` search varies, and how its grid grows at an edge.

    Args:
        values: the initial grid, in increasing order.
        scale: ``"log"`` (the grid grows by the ratio of its two outermost
            values), ``"complement_log"`` (the same on 1 - value: a momentum or
            a beta, growing towards 1) or ``"choice"`` (fixed choices).
        limits: `(lo, hi)`: no value beyond them is tried.
    """

    values: tuple
    scale: str = "log"
    limits: tuple = (0.0, math.inf)

    def __post_init__(self):
        if self.scale not in ("log", "complement_log", "choice"):
            raise ValueError(
                f"Axis scale must be 'log', 'complement_log' or 'choice', got {self.scale!r}."
            )
        if not self.values:
            raise ValueError("An Axis needs at least one value.")
        object.__setattr__(self, "values", tuple(self.values))

    def _forward(self, value):
        return math.log(value) if self.scale == "log" else math.log(1.0 - value)

    def _backward(self, u):
        return math.exp(u) if self.scale == "log" else 1.0 - math.exp(u)

    def _safe(self, value):
        return value > 0 if self.scale == "log" else value < 1

    def beyond(self, grid, high):
        """The next value past the `high` (or low) edge of `grid`, or None at a limit."""
        if self.scale == "choice" or len(grid) < 2:
            return None
        grid = sorted(grid)
        outer, inner = (grid[-1], grid[-2]) if high else (grid[0], grid[1])
        try:
            u = 2 * self._forward(outer) - self._forward(inner)
        except ValueError:  # log(0): the edge is the limit itself
            return None
        value = float(f"{self._backward(u):.6g}")
        lo, hi = self.limits
        value = min(max(value, lo), hi)  # a step past a limit tries the limit itself
        if (
            value in grid
            or (self.scale == "log" and value <= 0)
            or (self.scale == "complement_log" and value >= 1)
        ):
            return None
        return value

    def around(self, value):
        """`value` and its two neighbours at the grid's spacing (a second, local pass)."""
        if self.scale == "choice":
            return [value]
        ends = [self._forward(v) for v in self.values if self._safe(v)]
        step = (max(ends) - min(ends)) / (len(ends) - 1) if len(ends) > 1 else 1.0
        try:
            u = self._forward(value)
        except ValueError:
            return [value]
        lo, hi = self.limits
        near = {float(f"{self._backward(u + s * step):.6g}") for s in (-1, 1)}
        return sorted({value} | {v for v in near if lo <= v <= hi})


# The search spaces of the tuned baselines. Keras's default of each setting is on its grid.
ADAM_AXES = {
    "learning_rate": Axis((1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2), "log", (1e-7, 10.0)),
    "beta_1": Axis((0.0, 0.5, 0.9, 0.99), "complement_log", (0.0, 0.9999)),
    "beta_2": Axis((0.9, 0.99, 0.999, 0.9999), "complement_log", (0.5, 0.999999)),
    "epsilon": Axis((1e-7, 1e-5, 1e-3, 1e-1), "log", (1e-12, 10.0)),
}
SGD_AXES = {
    "learning_rate": Axis((1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0), "log", (1e-6, 100.0)),
    "momentum": Axis((0.0, 0.5, 0.9, 0.99), "complement_log", (0.0, 0.999)),
    "nesterov": Axis((False, True), "choice"),
}
TUNED_AXES = {"Adam": ADAM_AXES, "SGD": SGD_AXES}


class Tuned:
    """A Keras optimizer whose settings are searched per (task, model): a tuned baseline.

    The search is coordinate-wise on a grid: first the learning rate with the
    other settings at Keras's defaults, then each other setting in turn at
    the best values so far, then the learning rate again around its best.
    Along each line, while the best value lies on an edge of the grid, the
    grid is extended past that edge (at the grid's spacing, within the axis'
    limits). Every candidate trains on `seeds` seeds of their own (none of the
    compared seeds) and is scored on the validation split by its mean loss
    (a diverged training: infinite), so the test split stays unseen.

    Args:
        optimizer: the Keras optimizer's name (``"Adam"``, ``"SGD"``, or any
            class in `keras.optimizers` with `axes` given).
        schedule: None for a constant learning rate, or ``"cosine"``: cosine
            decay to 0 over the training with a linear warm-up over its first
            `WARMUP_FRACTION` of steps (`keras.optimizers.schedules.CosineDecay`).
        axes: settings name -> `Axis` (default: `ADAM_AXES` or `SGD_AXES`).
        seeds: validation seeds each candidate is scored on (at least 1; 3 by default).
        start_from: None, or the name of another `Tuned` method of the same
            comparison, listed before this one: the search starts from the
            settings that one chose for the model and keeps those of the
            settings this one does not vary (for example a cosine schedule's
            peak learning rate searched with the constant search's betas).
    """

    def __init__(self, optimizer="Adam", schedule=None, axes=None, seeds=3, start_from=None):
        if schedule not in (None, "cosine"):
            raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}.")
        if axes is None and optimizer not in TUNED_AXES:
            raise ValueError(
                f"Give the axes to search for {optimizer!r}; "
                f"defaults exist for {sorted(TUNED_AXES)}."
            )
        if not isinstance(getattr(keras.optimizers, optimizer, None), type):
            raise ValueError(f"Unknown Keras optimizer {optimizer!r}.")
        self.optimizer, self.schedule = optimizer, schedule
        self.axes = dict(TUNED_AXES[optimizer] if axes is None else axes)
        if "learning_rate" not in self.axes:
            raise ValueError("A Tuned search needs a 'learning_rate' axis.")
        self.seeds = int(seeds)
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {seeds!r}.")
        self.start_from = start_from

    def __repr__(self):
        return (
            f"Tuned({self.optimizer!r}, schedule={self.schedule!r}, seeds={self.seeds}, "
            f"start_from={self.start_from!r})"
        )

    def make(self, settings, total_steps):
        """The optimizer with `settings` (its schedule spread over `total_steps`)."""
        settings = dict(settings)
        rate = settings.pop("learning_rate")
        if self.schedule == "cosine":
            warmup = max(1, int(round(WARMUP_FRACTION * total_steps)))
            rate = keras.optimizers.schedules.CosineDecay(
                0.0,
                decay_steps=max(1, total_steps - warmup),
                warmup_target=rate,
                warmup_steps=warmup,
            )
        return getattr(keras.optimizers, self.optimizer)(learning_rate=rate, **settings)

    def _defaults(self):
        defaults = getattr(keras.optimizers, self.optimizer)().get_config()
        return {name: defaults.get(name, axis.values[0]) for name, axis in self.axes.items()}

    def _start(self, context):
        point = self._defaults()
        if self.start_from is not None:
            chosen = context.chosen.get(self.start_from)
            if chosen is None:
                raise ValueError(
                    f"{context.name!r} starts from {self.start_from!r}, which must be a "
                    "Tuned method listed before it in the same comparison."
                )
            point.update(chosen)
        return point

    def plan(self, context):
        total = context.total_steps
        seeds = [VALIDATION_SEEDS + i for i in range(self.seeds)]
        point = self._start(context)
        tried = context.search_record(self, point)

        def score(point):
            key = json.dumps(point, sort_keys=True)
            if key not in tried:
                runs = [
                    context.trainer(self.make(point, total)).run(seed, split="val")
                    for seed in seeds
                ]
                tried[key] = [r.loss if not r.diverged else "inf" for r in runs]
                context.save()
            return float(np.mean([float(v) for v in tried[key]]))

        others = [n for n in self.axes if n != "learning_rate"]
        order = ["learning_rate"] + others + (["learning_rate"] if others else [])
        for step, name in enumerate(order):
            axis = self.axes[name]
            grid = (
                axis.around(point[name]) if step and name == "learning_rate" else list(axis.values)
            )
            point[name] = self._line(point, name, axis, grid, score)
        return _Plan(
            lambda: self.make(point, total),
            settings=dict(point),
            search={
                "candidates": len(tried),
                "seeds": len(seeds),
                "trainings": len(tried) * len(seeds),
            },
        )

    @staticmethod
    def _line(point, name, axis, grid, score):
        """The best value of `name` on `grid`, the grid extended while the best is on an edge."""
        grid = sorted(set(grid), key=float)
        while True:
            losses = [score({**point, name: value}) for value in grid]
            best = int(np.argmin(losses))
            if not math.isfinite(losses[best]):
                return point[name]
            edge = {0: False, len(grid) - 1: True}.get(best) if len(grid) > 1 else None
            extra = None if edge is None else axis.beyond(grid, high=edge)
            if extra is None:
                return grid[best]
            grid = sorted(grid + [extra], key=float)


class Ablated:
    """An agent with location or time dependence taken away (`optimizers.ablation`).

    ``"network_mean"``: every tensor gets, at every step, the network's mean
    of what the agent chose. ``"frozen"``: every tensor keeps, through the
    training, its own time average over the agent's training of the same seed
    (that training is run first, with a `ModulationTracer`).

    Args:
        agent: a factory of the agent's optimizer (`lambda: NmAdam(agent=...)`).
        ablation: ``"network_mean"`` or ``"frozen"``.
    """

    horizon = False  # `WithHorizon` tells the agent's own training too

    def __init__(self, agent, ablation):
        from keras_neuromod.optimizers.ablation import ABLATIONS

        if ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}.")
        if not callable(agent):
            raise ValueError("Ablated needs a zero-argument factory of the agent's optimizer.")
        self.agent, self.ablation = agent, ablation

    def plan(self, context):
        from keras_neuromod.callbacks import ModulationTracer
        from keras_neuromod.optimizers.ablation import ablate
        from keras_neuromod.optimizers.ablation import time_average

        if self.ablation == "network_mean":
            return _Plan(lambda: ablate(self.agent(), "network_mean"))
        own = context.trainer(self.agent())
        count = len(own.model.trainable_variables)
        placeholder = np.tile(
            [[own.optimizer.ranges[n][0] for n in own.optimizer.HYPERPARAMETERS]], (count, 1)
        )

        def before_run(trainer, seed):
            tracer = ModulationTracer(update_freq=1)
            own.run(seed, callbacks=[tracer], horizon=self.horizon)
            trainer.optimizer.set_hyperparameters(time_average(tracer, own.optimizer))

        return _Plan(lambda: ablate(own.optimizer, "frozen", placeholder), before_run=before_run)


class WithHorizon:
    """A method whose agent is told how long each training runs.

    An agent of the ``"sensing"`` input set reads its progress `t / horizon`
    when it is told the horizon, which `keras_neuromod.callbacks.TrainingHorizon`
    does in `fit` and the docs ask users to do; compared without it, the agent
    trains as for a user who does not. Here each training's horizon is its
    updates (`NeuromodulatedOptimizer.set_horizon`), set before its first step
    and cleared after its last:

    >>> evidence.compare("wine", {
    ...     "agent": evidence.WithHorizon(lambda: NmAdam(agent=path)),
    ...     "agent, not told": lambda: NmAdam(agent=path),
    ...     "Adam": keras.optimizers.Adam})

    Being told is part of the method's identity in a record.

    Args:
        method: a zero-argument factory of a neuromodulated optimizer, or an
            `Ablated` (whose agent's own training, which the ``"frozen"``
            ablation reads, is told too).
    """

    def __init__(self, method):
        if not isinstance(method, Ablated) and (
            not callable(method) or isinstance(method, (Tuned, WithHorizon, _Factory))
        ):
            raise ValueError(
                "WithHorizon takes a zero-argument factory of a neuromodulated optimizer "
                f"or an Ablated, got {type(method).__name__}."
            )
        self.method = method

    def plan(self, context):
        if isinstance(self.method, Ablated):
            method = Ablated(self.method.agent, self.method.ablation)
            method.horizon = True
        else:
            method = _Factory(self.method)
        return dataclasses.replace(method.plan(context), horizon=True)


def agent_method(agent, method=None):
    """How a zoo agent trains in a comparison: as the docs ask its users to train it.

    An agent that reads the training's progress (`Agent.reads_horizon`) is
    told each training's horizon (`WithHorizon`); any other trains as it is.

    Args:
        agent: a `keras_neuromod.agents.Agent`.
        method: what trains: the agent's optimizer factory (default,
            `agent.optimizer`) or an `Ablated` of it.
    """
    method = agent.optimizer if method is None else method
    return WithHorizon(method) if agent.reads_horizon else method


def _as_method(name, spec):
    if isinstance(spec, (Tuned, Ablated, _Factory, WithHorizon)):
        return spec
    if callable(spec):
        return _Factory(spec)
    raise ValueError(
        f"Method {name!r} must be a zero-argument factory of a Keras optimizer, a Tuned, "
        f"an Ablated or a WithHorizon, got {type(spec).__name__}."
    )


# --------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------


class Record:
    """Finished runs of one task's comparison in a JSON file, written after every run.

    Layout: ``{"format", "task", "models": {model: {"untrained": {seed: run},
    "methods": {name: {"identity", "settings", "search", "runs": {seed: run}}},
    "searches": {name: {"identity", "candidates": {point: [val losses]}}}}}}``.

    Args:
        path: the file (None: kept in memory only).
        task: the task's name.
    """

    def __init__(self, path, task):
        self.path, self.task = path, task
        self.data = {"format": RECORD_FORMAT, "task": task, "models": {}}
        if path is not None and os.path.exists(path):
            self.data = self._validated(read_json(path, "evidence record"), path)

    def _validated(self, data, path):
        where = f"Evidence record {path}"
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ValueError(
                f"{where} is not an evidence record (its 'format' must be {RECORD_FORMAT!r})."
            )
        if data.get("task") != self.task:
            raise ValueError(
                f"{where} holds the task {data.get('task')!r}, not {self.task!r}: "
                "use one record file per task."
            )
        models = data.get("models")
        if not isinstance(models, dict):
            raise ValueError(f"{where}: 'models' must be an object.")
        for model, entry in models.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: models[{model!r}] must be an object.")
            for seed, run in entry.get("untrained", {}).items():
                Run.from_dict(run, f"{where}: models[{model!r}].untrained[{seed!r}]")
            for name, method in entry.get("methods", {}).items():
                at = f"{where}: models[{model!r}].methods[{name!r}]"
                if (
                    not isinstance(method, dict)
                    or not isinstance(method.get("runs"), dict)
                    or not isinstance(method.get("identity"), str)
                ):
                    raise ValueError(f"{at} must hold an 'identity' string and a 'runs' object.")
                for seed, run in method["runs"].items():
                    Run.from_dict(run, f"{at}.runs[{seed!r}]")
            for name, search in entry.get("searches", {}).items():
                if not isinstance(search, dict) or not isinstance(search.get("candidates"), dict):
                    raise ValueError(
                        f"{where}: models[{model!r}].searches[{name!r}] must hold 'candidates'."
                    )
        return data

    def model(self, model):
        return self.data["models"].setdefault(
            model, {"untrained": {}, "methods": {}, "searches": {}}
        )

    def save(self):
        if self.path is not None:
            atomic_write_json(self.path, self.data)


@dataclasses.dataclass
class _Context:
    """What a method sees while it is resolved for one (task, model)."""

    task: object
    model: str
    record: Record
    name: str
    chosen: dict = dataclasses.field(
        default_factory=dict
    )  # settings of the methods resolved so far

    @property
    def total_steps(self):
        n = len(self.task.splits(0).train[0])
        return self.task.epochs * math.ceil(n / self.task.batch_size)

    def trainer(self, optimizer):
        return Trainer(self.task, self.model, optimizer)

    def search_record(self, tuned, start):
        searches = self.record.model(self.model)["searches"]
        digest = _digest(
            [
                repr(tuned),
                {k: dataclasses.asdict(a) for k, a in tuned.axes.items()},
                identity(tuned.make(start, self.total_steps)),
            ]
        )
        entry = searches.get(self.name)
        if entry is None or entry.get("identity") != digest:
            entry = searches[self.name] = {"identity": digest, "candidates": {}}
        return entry["candidates"]

    def save(self):
        self.record.save()


# --------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------


def _resolve_task(task):
    if isinstance(task, task_registry.Task):
        return task
    if isinstance(task, str):
        return task_registry.get(task)
    raise ValueError(
        f"task must be a registered task's name or a tasks.Task, got {type(task).__name__}."
    )


def compare(task, methods, models=None, seeds=10, record=None, first_seed=0, verbose=False):
    """Train every method on every model of `task` from the same seeds, paired.

    Args:
        task: a registered task's name or a `tasks.Task`.
        methods: method name -> a zero-argument factory of a Keras optimizer
            (a class such as `keras.optimizers.Adam`, or a lambda), a `Tuned`
            or an `Ablated`.
        models: the task's models to train (None: all of them), a name or a list.
        seeds: the number of seeds (at least 2 for an interval), `first_seed`,
            `first_seed + 1`, ...
        record: a JSON file that keeps every finished run (and search); an
            existing one is resumed: a run is reused when its method's
            settings (the optimizer's serialized config) are unchanged.
        first_seed: the first seed.
        verbose: print a line per finished (model, method).

    Returns:
        A `Report`.
    """
    task = _resolve_task(task)
    specs = _method_specs(methods)
    models = _model_list(task, models)
    seed_list = _seed_list(seeds, first_seed)
    store = Record(None if record is None else os.fspath(record), task.name)
    results, untrained, settings, searches = {}, {}, {}, {}
    for model in models:
        entry = store.model(model)
        untrained[model] = _untrained(task, model, seed_list, entry, store)
        chosen = {}
        for name, spec in specs.items():
            start = time.perf_counter()
            plan = spec.plan(_Context(task, model, store, name, chosen))
            if plan.settings is not None:
                chosen[name] = plan.settings
            runs = _method_runs(task, model, name, plan, seed_list, entry, store)
            results[(model, name)] = runs
            settings[(model, name)] = plan.settings
            searches[(model, name)] = plan.search
            if verbose:
                _print_progress(task, model, name, runs, start)
    return Report(task, models, list(specs), seed_list, results, untrained, settings, searches)


def _method_specs(methods):
    """Check `methods` and turn each entry into a method spec."""
    if not isinstance(methods, dict) or not methods:
        raise ValueError("methods must be a non-empty dict of names to optimizer factories.")
    return {str(name): _as_method(name, spec) for name, spec in methods.items()}


def _model_list(task, models):
    """The list of `task`'s models to train, checked (None: all of them)."""
    if models is None:
        models = list(task.models)
    elif isinstance(models, str):
        models = [models]
    models = list(models)
    for model in models:
        if model not in task.models:
            raise ValueError(
                f"Task {task.name!r} trains the models {list(task.models)}, not {model!r}."
            )
    return models


def _seed_list(seeds, first_seed):
    """The `seeds` consecutive seeds from `first_seed`, checked."""
    seeds = int(seeds)
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds!r}.")
    return [int(first_seed) + i for i in range(seeds)]


def _print_progress(task, model, name, runs, start):
    """Print one line on stderr for a finished (model, method)."""
    metric = np.nanmean([r.metric for r in runs]) if not all(r.diverged for r in runs) else math.nan
    print(
        f"  {task.name} / {model} / {name}: {task.metric} {metric:.4f}, "
        f"{sum(r.diverged for r in runs)} diverged "
        f"({time.perf_counter() - start:.0f} s)",
        file=sys.stderr,
        flush=True,
    )


def _untrained(task, model, seeds, entry, store):
    missing = [s for s in seeds if str(s) not in entry["untrained"]]
    if missing:
        trainer = Trainer(task, model, keras.optimizers.SGD())
        for seed in missing:
            entry["untrained"][str(seed)] = trainer.untrained(seed).to_dict()
        store.save()
    return [Run.from_dict(entry["untrained"][str(s)]) for s in seeds]


def _method_runs(task, model, name, plan, seeds, entry, store):
    optimizer = plan.factory()
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            f"The factory of method {name!r} returned {type(optimizer).__name__}, "
            "not a Keras optimizer."
        )
    digest = identity(optimizer)
    if plan.horizon:
        digest = _digest([digest, "told the horizon"])
    saved = entry["methods"].get(name)
    if saved is None or saved["identity"] != digest:
        saved = entry["methods"][name] = {"identity": digest, "runs": {}}
    saved["settings"], saved["search"] = plan.settings, plan.search
    trainer = None
    for seed in seeds:
        if str(seed) in saved["runs"]:
            continue
        if trainer is None:
            trainer = Trainer(task, model, optimizer)
        if plan.before_run is not None:
            plan.before_run(trainer, seed)
        saved["runs"][str(seed)] = trainer.run(seed, horizon=plan.horizon).to_dict()
        store.save()
    return [Run.from_dict(saved["runs"][str(s)]) for s in seeds]


class Report:
    """The runs of one `compare`, and the statistics read from them.

    Attributes:
        task: the `tasks.Task`.
        models: the models trained.
        methods: the method names, in the order given.
        seeds: the seeds.
        settings: `(model, method)` -> the settings a `Tuned` method chose (else None).
        searches: `(model, method)` -> a `Tuned` search's size (candidates,
            seeds, trainings), else None.
    """

    def __init__(
        self, task, models, methods, seeds, runs, untrained, settings, searches, confidence=0.95
    ):
        self.task, self.models, self.methods, self.seeds = (
            task,
            list(models),
            list(methods),
            list(seeds),
        )
        self._runs, self._untrained = runs, untrained
        self.settings, self.searches = settings, searches
        self.confidence = confidence

    def runs(self, model, method):
        """The `Run`s of `method` on `model`, one per seed."""
        self._check(method)
        if model not in self.models:
            raise ValueError(f"No model {model!r} in this report; it has {self.models}.")
        return list(self._runs[(model, method)])

    def untrained(self, model):
        """The untrained model's `Run` per seed."""
        return list(self._untrained[model])

    def _check(self, *methods):
        for method in methods:
            if method not in self.methods:
                raise ValueError(f"No method {method!r} in this report; it has {self.methods}.")

    def differences(self, a, b, model=None, what="metric"):
        """Per-seed paired differences of `a` minus `b` (positive: `a` is better).

        With `model` None, each seed's differences are averaged over the models.
        `what`: ``"metric"``, ``"loss"`` (log ratio of losses) or ``"error"``
        (log ratio of errors); see `paired_differences`.
        """
        self._check(a, b)
        models = self.models if model is None else [model]
        rows = [
            paired_differences(
                self.runs(m, a),
                self.runs(m, b),
                self.untrained(m),
                self.task.higher_is_better,
                what,
            )
            for m in models
        ]
        return np.mean(rows, axis=0)

    def paired(self, a, b, model=None, what="metric"):
        """Mean paired difference of `a` minus `b`, its interval and verdict, as a dict.

        The verdict: the method that diverged on more seeds where the other
        did not is ``"worse"`` (a lost training outweighs any gain on the
        others); with as many such seeds on each side, the interval decides.
        """
        difference = self.differences(a, b, model, what)
        mean, low, high = interval(difference, self.confidence)
        if np.all(difference == 0):
            low = high = 0.0
        lost = [0, 0]  # seeds where only a, or only b, diverged (on any model)
        for m in self.models if model is None else [model]:
            for ra, rb in zip(self.runs(m, a), self.runs(m, b)):
                lost[0] += ra.diverged and not rb.diverged
                lost[1] += rb.diverged and not ra.diverged
        verdict = (
            "worse" if lost[0] > lost[1] else "better" if lost[1] > lost[0] else _verdict(low, high)
        )
        return {
            "task": self.task.name,
            "model": model or "all",
            "method": a,
            "baseline": b,
            "what": what,
            "mean": mean,
            "ci": [low, high],
            "seeds": len(difference),
            "differences": [float(d) for d in difference],
            "seeds_ahead": int((difference > 0).sum()),
            "seeds_behind": int((difference < 0).sum()),
            "diverged_alone": lost,
            "verdict": verdict,
        }

    def verdict(self, a, b, model=None, on="metric"):
        """``"better"``, ``"worse"`` or ``"within noise"``: `a` against `b` on the test metric.

        Args:
            a, b: method names.
            model: one model, or None for all the task's models in the report.
            on: ``"metric"`` (the test metric) or ``"loss"`` (the test loss).
        """
        return self.paired(a, b, model, on)["verdict"]

    def rows(self):
        """Per (model, method): the test metric and loss (mean, std; the loss's median),
        diverged runs, and a tuned method's settings and search size.

        A diverged run counts here as the untrained model's score.
        """
        out = []
        for model in self.models:
            zero = self.untrained(model)
            for method in self.methods:
                runs = self.runs(model, method)
                metric = np.array(
                    [z.metric if r.diverged else r.metric for r, z in zip(runs, zero)]
                )
                loss = np.array([z.loss if r.diverged else r.loss for r, z in zip(runs, zero)])
                out.append(
                    {
                        "task": self.task.name,
                        "model": model,
                        "method": method,
                        "metric_name": self.task.metric,
                        "metric_mean": float(metric.mean()),
                        "metric_std": float(metric.std(ddof=1)) if len(metric) > 1 else 0.0,
                        "loss_mean": float(loss.mean()),
                        "loss_median": float(np.median(loss)),
                        "loss_std": float(loss.std(ddof=1)) if len(loss) > 1 else 0.0,
                        "diverged": int(sum(r.diverged for r in runs)),
                        "seeds": len(runs),
                        "settings": self.settings.get((model, method)),
                        "search": self.searches.get((model, method)),
                    }
                )
        return out

    def table(self, baseline=None):
        """The rows as a fixed-width text table; with `baseline`, each method's verdict
        against it."""
        headers = [
            "model",
            "method",
            f"test {self.task.metric} (mean +- std)",
            "test loss (median)",
            "diverged",
        ]
        if baseline is not None:
            headers += [f"minus {baseline} (95% CI)", "verdict"]
        lines = []
        for row in self.rows():
            cells = [row["model"], row["method"], *result_cells(row)]
            if baseline is not None:
                if row["method"] == baseline:
                    cells += ["", ""]
                else:
                    mean, ci, _, verdict = paired_cells(
                        self.paired(row["method"], baseline, row["model"])
                    )
                    cells += [f"{mean} {ci}", verdict]
            lines.append(cells)
        return _text_table(headers, lines)

    def to_dict(self):
        """The report as JSON-ready data: rows, and every pair's paired differences on
        each model."""
        pairs = [
            self.paired(a, b, m, what)
            for m in self.models
            for a, b in itertools.permutations(self.methods, 2)
            for what in ("metric", "loss")
        ]
        return {
            "task": self.task.name,
            "metric": self.task.metric,
            "models": self.models,
            "methods": self.methods,
            "seeds": self.seeds,
            "rows": self.rows(),
            "paired": pairs,
        }


def _text_table(headers, rows):
    everything = [headers] + rows
    widths = [max(len(r[i]) for r in everything) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in everything)


def aggregate(reports, a, b, confidence=0.95):
    """`a` against `b` across tasks: wins, ties and losses, and an effect with its interval
    over tasks.

    Args:
        reports: `Report`s, one per task (each with both methods).
        a, b: method names.
        confidence: the interval's coverage.

    Returns:
        A dict: `pairs` (the (task, model) pairs), `better`, `within_noise`,
        `worse` (pairs by their verdict on the test metric), `diverged` (runs
        of `a`, and of `b`), `tasks`, and `log_error_ratio` and
        `log_loss_ratio`: each the mean over tasks of the task's mean paired
        log ratio (`b`'s test error or loss over `a`'s; positive: `a` is
        better), with `ci` over tasks and a `verdict`.
    """
    reports = list(reports)
    if not reports:
        raise ValueError("aggregate needs at least one report.")
    verdicts, diverged = [], [0, 0]
    effects = {"error": [], "loss": []}
    for report in reports:
        for model in report.models:
            verdicts.append(report.verdict(a, b, model))
            diverged[0] += sum(r.diverged for r in report.runs(model, a))
            diverged[1] += sum(r.diverged for r in report.runs(model, b))
        for what in effects:
            effects[what].append(float(report.differences(a, b, what=what).mean()))
    out = {
        "method": a,
        "baseline": b,
        "pairs": len(verdicts),
        "tasks": len(reports),
        "better": verdicts.count("better"),
        "within_noise": verdicts.count("within noise"),
        "worse": verdicts.count("worse"),
        "diverged": diverged,
    }
    for what, values in effects.items():
        mean, low, high = interval(values, confidence)
        out[f"log_{what}_ratio"] = {"mean": mean, "ci": [low, high], "verdict": _verdict(low, high)}
    return out
