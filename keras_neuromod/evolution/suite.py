"""Multi-task fitness: an agent scored over the task suite, against a tuned Keras optimizer.

A `SuiteTask` is what `evolve` evaluates agents on when they should generalise.
Every generation's seed draws `instances` training instances, each a task of
`keras_neuromod.tasks` (never a held-out one unless named), one of its models
and a seed (the initial weights, the dropout draws and the data order). On every
instance,

* the reference trains the model: by default (``reference="tuned"``) Keras's
  optimizer of the agent's base (Adam for Nm-Adam, SGD for Nm-SGD) at every
  point of a learning-rate grid (`REFERENCE_GRIDS`; SGD with and without
  momentum), each from the same start, and the reference is the best of them
  on the instance's validation split, as a user who tunes the learning rate
  would find it; ``reference="default"`` is Keras's default settings, trained
  once;
* every individual trains the same model from the same weights on the same
  batches under its modulation;
* by default (``augmentation="varied"``) each instance varies its task's
  training: it trains for a multiple of the task's epochs (from half of them to
  8 times as many, `HORIZONS`), with its loss (and so its gradients) scaled by
  a factor from 0.1 to 10 and its initial weights' kernels by one from 0.5 to 2
  (`LOSS_SCALES`, `WEIGHT_SCALES`), all drawn from the instance's seed
  (`SuiteTask.variation`), the same for the reference and every individual;
  ``augmentation="batches"`` draws its batch size too, from 8 to 256
  (`BATCH_SIZES`); ``"resized"`` its model's width (half, as built, or
  twice, `WIDTHS`) and depth (a block fewer, as built, or one more,
  `BLOCK_CHANGES`) where its builder can be resized
  (`keras_neuromod.tasks.resizable`); ``"all"`` both;
* the individual's score is `log(reference validation loss / its validation
  loss)`, clipped to `[-clip, clip]`: 0 is as good as the reference, positive is
  better, and the scale of the loss (cross-entropy, squared error) cancels, so
  that tasks of different difficulty and different losses are comparable. By
  default (``scoring="no_harm"``) it loses, besides, how much further its
  validation loss rose from its best epoch to its end than the reference's did:
  a training that is getting worse scores less than its last loss says. A
  training whose loss turned NaN or Inf scores `-clip`.

The fitness is the mean score over the instances. An error in preparing an
instance or in training its reference is the task's (`fitness.TaskError`): it
stops the evolution instead of scoring every individual worst. Selection reads validation
data only (carved from the training data); the test split is left for evidence.
The static-search control's candidates (`static.FixedHyperparameters`: one fixed
value per hyperparameter) are scored alike, trained through the "frozen"
ablation of the base's optimizer.
Trainings run vectorized (`keras_neuromod.evolution.vectorized.TrainingProgram`),
so this fitness needs the ``"vectorized"`` backend (or Ray with
`vectorized=True`).
"""

import dataclasses
import json
import math
from typing import NamedTuple

import numpy as np

from keras_neuromod import _fields
from keras_neuromod import bases
from keras_neuromod import inputs as input_sets
from keras_neuromod import outputs as output_sets
from keras_neuromod.agrn import MAX_PROTEINS
from keras_neuromod.agrn import Genome
from keras_neuromod.evolution.fitness import GenomeEvaluator
from keras_neuromod.evolution.fitness import placeholder_optimizer
from keras_neuromod.evolution.fitness import task_step

__all__ = [
    "SuiteTask",
    "SuiteEvaluator",
    "BASELINES",
    "REFERENCES",
    "REFERENCE_GRIDS",
    "SCORINGS",
    "SAMPLINGS",
    "AUGMENTATIONS",
    "HORIZONS",
    "LOSS_SCALES",
    "WEIGHT_SCALES",
    "BATCH_SIZES",
    "MIN_BATCHES",
    "WIDTHS",
    "BLOCK_CHANGES",
    "batch_sizes",
    "Variation",
    "VALIDATION_SEEDS",
]

# The Keras optimizer each base is measured against.
BASELINES = {"adam": "Adam", "sgd": "SGD"}
# What an instance's score is measured against (`SuiteTask.reference`).
REFERENCES = ("tuned", "default")
# How an instance's score reads a training (`SuiteTask.scoring`, `instance_scores`).
SCORINGS = ("no_harm", "final")
# The tuned reference's grid: every combination of these values, the base's other
# hyperparameters at Keras's defaults. Half-decade learning rates over the range
# users tune; SGD with Keras's default momentum (0) and with the usual 0.9.
REFERENCE_GRIDS = {
    "adam": {"learning_rate": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)},
    "sgd": {
        "learning_rate": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
        "momentum": (0.0, 0.9),
    },
}
# How a generation's instances are drawn (`SuiteTask.sampling`).
SAMPLINGS = ("stratified", "uniform")
# How an instance varies its task's training (`SuiteTask.augmentation`, `SuiteTask.variation`).
AUGMENTATIONS = ("varied", "batches", "resized", "all", "none")
# The factors of a task's epochs that a varied instance trains for, and their chances:
# mostly about the task's budget (the suite's budgets make 100 to 250 updates), one
# instance in ten 8 times longer (up to 2,000 updates), where doing no harm over a long
# horizon is tested. An instance trains at least one epoch.
HORIZONS = ((0.5, 0.3), (1.0, 0.4), (2.0, 0.2), (8.0, 0.1))
# The bounds of a varied instance's log-uniform factors of the training loss (which scales
# its gradients, as a sum instead of a mean or a weighted loss would) and of its initial
# kernels (every weight of rank 2 or more: a larger or smaller initialisation).
LOSS_SCALES = (0.1, 10.0)
WEIGHT_SCALES = (0.5, 2.0)
# The batch sizes a "batches" instance draws from, each as likely: those of at least
# `MIN_BATCHES` batches an epoch on the instance's training split, and the task's own.
BATCH_SIZES = (8, 16, 32, 64, 128, 256)
MIN_BATCHES = 4
# The factors of a model's hidden units, filters and features that a "resized" instance
# draws from, and the changes of its number of blocks (never fewer than one), each as likely.
WIDTHS = (0.5, 1.0, 2.0)
BLOCK_CHANGES = (-1, 0, 1)


class Variation(NamedTuple):
    """How one instance varies its task's training (`SuiteTask.variation`): its epochs,
    loss and initial kernels' scales, batch size, and its model's width factor and
    blocks (None: as its builder makes it)."""

    epochs: int
    loss_scale: float
    weight_scale: float
    batch_size: int
    width: float = 1.0
    blocks: int = None

    @property
    def size(self):
        """`Task.build_model`'s `width` and `blocks`, or None for the standard model."""
        if self.width == 1.0 and self.blocks is None:
            return None
        return (self.width, self.blocks)


# Draw seeds of the validation instances: a stream of its own (an evolution's
# generation seeds come from its numpy generator, below 2**31 - 1).
VALIDATION_SEEDS = 2**31


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    """What agents are evolved on: instances drawn from the task suite.

    Args:
        base: the optimizer base (``"adam"`` or ``"sgd"``; one with a Keras
            baseline in `BASELINES`).
        tasks: names of `keras_neuromod.tasks` tasks to draw from (None: every
            task that is not held out).
        instances: (task, model, seed) instances per generation.
        clip: the bound of an instance's score (3: a loss 20 times the
            reference's, or a 20th of it); a diverging training scores `-clip`.
            Too tight a bound flattens the fitness of a population whose
            untrained agents all lose by more.
        ranges: hyperparameter ranges of the optimizer (None: its defaults).
        warmup_steps, grn_steps_per_update: AGRN settings of the optimizer.
        max_regulatory: padded AGRN capacity (genomes up to this size share one
            compiled program).
        inputs: the agents' input set (`keras_neuromod.inputs`; default
            ``"sensing"``). A suite written without it (a checkpoint or
            record of an earlier run) reads as ``"paper"``, the set its
            agents were evolved with.
        outputs: the agents' output set (`keras_neuromod.outputs`; default
            ``"centred"``: every range centred on Keras's default settings,
            so that a silent agent trains as the default). A suite written
            without it (before output sets) reads as ``"paper"``, the set its
            agents were evolved with.
        sampling: how a generation's instances are drawn (`SAMPLINGS`).
            ``"stratified"`` (default): the tasks' families take turns in a
            random order, and so do a family's tasks and a task's models, so
            that a generation meets every family as evenly as its number of
            instances allows and two generations differ less by their draw.
            ``"uniform"``: each instance's task and model are drawn
            independently, uniformly; a suite written without the field (before
            it) reads as this, the draw its agents were evolved with.
        reference: what an instance's score is measured against
            (`REFERENCES`). ``"tuned"`` (default): the best, on the
            instance's validation split, of Keras's optimizer of the base
            over the learning-rate grid of `REFERENCE_GRIDS` (an agent scores
            0 where it trains as well as the learning rate a user would tune),
            at the cost of the grid's trainings on each instance.
            ``"default"``: Keras's optimizer with its default settings; a
            suite written without the field (before it) reads as this, the
            reference its agents were evolved against.
        scoring: how an instance's score reads a training (`SCORINGS`,
            `instance_scores`). ``"no_harm"`` (default): the log ratio of the
            reference's final validation loss to the candidate's, less how
            much further the candidate's loss rose from its best epoch to its
            end than the reference's did; a training that gets worse toward
            its end, as it would go on doing over a longer horizon, scores
            less. ``"final"``: the log ratio of the final losses alone; a suite
            written without the field (before it) reads as this.
        augmentation: how an instance varies its task's training
            (`AUGMENTATIONS`, `variation`). ``"varied"`` (default): its
            length, loss scale and initial weights' scale are drawn from its
            seed, so that agents meet trainings longer and shorter than the
            tasks' budgets and gradients and weights of other sizes.
            ``"batches"``: as ``"varied"``, and its batch size is drawn from
            `BATCH_SIZES` (8 to 256, `batch_sizes`): smaller than the task's,
            it makes about as many updates as at the task's; larger, it trains as
            many epochs. ``"resized"``: as ``"varied"``, and its model is built
            half as wide, as wide or twice as wide (`WIDTHS`) and a block
            shallower, as deep or a block deeper (`BLOCK_CHANGES`), where its
            builder can be resized (`keras_neuromod.tasks.resizable`).
            ``"all"``: both. Each batch size and each model size compiles
            programs of its own. ``"none"``: the task's budget, unscaled; a
            suite written without the field (before it) reads as this.
    """

    base: str = "adam"
    tasks: tuple = None
    instances: int = 4
    clip: float = 3.0
    ranges: dict = None
    warmup_steps: int = 25
    grn_steps_per_update: int = 1
    max_regulatory: int = 32
    inputs: str = input_sets.DEFAULT
    outputs: str = output_sets.DEFAULT
    sampling: str = "stratified"
    reference: str = "tuned"
    scoring: str = "no_harm"
    augmentation: str = "varied"

    def __post_init__(self):
        from keras_neuromod import tasks as suite

        bases.get(self.base, where="SuiteTask's base")
        if self.base not in BASELINES:
            raise ValueError(
                f"SuiteTask needs a base with a Keras baseline ({sorted(BASELINES)}), "
                f"got {self.base!r}."
            )
        names = suite.names(held_out=False) if self.tasks is None else self.tasks
        if isinstance(names, str) or not names:
            raise ValueError(
                f"tasks must be a non-empty sequence of task names, got {self.tasks!r}."
            )
        for name in names:
            suite.get(name)
        object.__setattr__(self, "tasks", tuple(names))
        object.__setattr__(
            self, "instances", _fields.integer(self.instances, "instances", minimum=1)
        )
        clip = _fields.number(self.clip, "clip")
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a positive number, got {self.clip!r}.")
        _fields.choice(self.sampling, "sampling", SAMPLINGS)
        _fields.choice(self.reference, "reference", REFERENCES)
        _fields.choice(self.scoring, "scoring", SCORINGS)
        _fields.choice(self.augmentation, "augmentation", AUGMENTATIONS)
        input_sets.get(self.inputs)
        base = bases.get(self.base)
        object.__setattr__(self, "outputs", base.resolve_outputs(self.outputs, self.inputs))
        base.check_ranges(self.ranges, outputs=self.outputs)
        limit = MAX_PROTEINS - self.n_inputs - self.n_outputs
        object.__setattr__(
            self, "max_regulatory", _fields.integer(self.max_regulatory, "max_regulatory", 0, limit)
        )

    @property
    def n_inputs(self):
        return input_sets.get(self.inputs).size

    @property
    def n_outputs(self):
        return bases.get(self.base).n_outputs

    @property
    def reference_trainings(self):
        """The reference's trainings per instance: the grid's points, or 1 (the default)."""
        if self.reference == "default":
            return 1
        return math.prod(len(values) for values in REFERENCE_GRIDS[self.base].values())

    def describe_reference(self):
        """The reference, in words (for logs and figures)."""
        optimizer = BASELINES[self.base]
        if self.reference == "default":
            return f"Keras's default {optimizer}"
        return f"{optimizer} at the best of {self.reference_trainings} learning-rate settings"

    @property
    def worst_fitness(self):
        return -float(self.clip)

    def draw(self, seed):
        """The generation's instances: `[(task name, model name, seed), ...]`."""
        from keras_neuromod import tasks as suite

        rng = np.random.default_rng(int(seed))
        if self.sampling == "uniform":
            drawn = []
            for _ in range(self.instances):
                task = suite.get(self.tasks[int(rng.integers(len(self.tasks)))])
                model = task.models[int(rng.integers(len(task.models)))]
                drawn.append((task.name, model, int(rng.integers(2**31 - 1))))
            return drawn
        families = {}
        for name in self.tasks:
            families.setdefault(suite.get(name).family, []).append(name)
        family_turns = _Turns(sorted(families), rng)
        task_turns = {family: _Turns(names, rng) for family, names in families.items()}
        model_turns = {name: _Turns(suite.get(name).models, rng) for name in self.tasks}
        drawn = []
        for _ in range(self.instances):
            name = task_turns[family_turns.next()].next()
            drawn.append((name, model_turns[name].next(), int(rng.integers(2**31 - 1))))
        return drawn

    def variation(self, task, seed, model=None):
        """How the instance of `task` (a `keras_neuromod.tasks.Task`) and `model` (its
        name; None: the standard model) drawn with `seed` varies its training: a
        `Variation` (the task's own budget, unscaled, without augmentation)."""
        from keras_neuromod import tasks as suite

        if self.augmentation == "none":
            return Variation(task.epochs, 1.0, 1.0, task.batch_size)
        # a stream of its own: the seed also fixes the instance's weights and data order
        rng = np.random.default_rng([int(seed), 1])
        factors, chances = zip(*HORIZONS)
        factor = factors[int(rng.choice(len(factors), p=chances))]
        loss_scale, weight_scale = (
            float(math.exp(rng.uniform(math.log(low), math.log(high))))
            for low, high in (LOSS_SCALES, WEIGHT_SCALES)
        )
        batch_size, width, blocks = task.batch_size, 1.0, None
        # drawn after "varied"'s draws, the batch size before the model's size
        if self.augmentation in ("batches", "all"):
            sizes = batch_sizes(task, len(task.splits(seed).train[0]))
            batch_size = sizes[int(rng.integers(len(sizes)))]
        if self.augmentation in ("resized", "all"):
            width = WIDTHS[int(rng.integers(len(WIDTHS)))]
            change = BLOCK_CHANGES[int(rng.integers(len(BLOCK_CHANGES)))]
            standard = None if model is None else suite.resizable(model)
            if standard is None:
                width = 1.0  # the standard model: its builder cannot be resized
            elif max(1, standard + change) != standard:  # (one block fewer than one is one)
                blocks = standard + change
        epochs = _epochs(task, factor * _batch_share(task, batch_size))
        return Variation(epochs, loss_scale, weight_scale, batch_size, width, blocks)

    def most_epochs(self, task, batch_size=None):
        """The most epochs an instance of `task` trains at `batch_size` (None: the
        task's) (`variation`)."""
        if self.augmentation == "none":
            return task.epochs
        batch_size = task.batch_size if batch_size is None else batch_size
        return _epochs(task, max(f for f, _ in HORIZONS) * _batch_share(task, batch_size))

    def to_dict(self):
        return {"kind": "suite", **dataclasses.asdict(self), "tasks": list(self.tasks)}

    @classmethod
    def from_dict(cls, data):
        data = dict(data)
        if data.pop("kind", None) != "suite":
            raise ValueError("Not a SuiteTask: its 'kind' must be 'suite'.")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown SuiteTask field(s) {unknown}.")
        if data.get("tasks") is not None:
            data["tasks"] = tuple(data["tasks"])
        data.setdefault("inputs", input_sets.LEGACY)  # written before input sets: the paper's
        data.setdefault("outputs", output_sets.LEGACY)  # written before output sets: the paper's
        data.setdefault("sampling", "uniform")  # written before stratified draws
        data.setdefault("reference", "default")  # written before tuned references
        data.setdefault("scoring", "final")  # written before the no-harm score
        data.setdefault("augmentation", "none")  # written before varied instances
        return cls(**data)


def _epochs(task, factor):
    """`factor` times the task's epochs, rounded half up, at least one."""
    return max(1, int(task.epochs * factor + 0.5))


def batch_sizes(task, examples):
    """The batch sizes a ``"batches"`` instance of `task` draws from (`BATCH_SIZES`):
    those that make at least `MIN_BATCHES` batches of its `examples` training examples,
    and the task's own batch size.

    At a smaller batch size than its task's, an instance makes about as many updates as
    at the task's (in fewer epochs); at a larger one it trains as many epochs (in
    fewer, larger updates), as a user who raises the batch size keeps the epochs.
    Either way it trains on at most as many examples as at its task's batch size
    (at least one epoch: a few more updates where an epoch rounds up).
    """
    sizes = {b for b in BATCH_SIZES if b * MIN_BATCHES <= examples} | {task.batch_size}
    return tuple(sorted(sizes))


def _batch_share(task, batch_size):
    """The factor of an instance's epochs at `batch_size` (`batch_sizes`)."""
    return min(1.0, batch_size / task.batch_size)


class _Turns:
    """Items taking turns: each round goes through all of them in a new random order."""

    def __init__(self, items, rng):
        self.items, self.rng, self.round = tuple(items), rng, []

    def next(self):
        if not self.round:
            self.round = [self.items[i] for i in self.rng.permutation(len(self.items))]
        return self.round.pop()


def instance_scores(reference, result, clip, scoring="no_harm"):
    """The candidates' scores on one instance.

    `log(reference's final loss / candidate's final loss)`; with
    ``scoring="no_harm"``, minus how much further the candidate's loss rose
    from its best epoch to its end than the reference's did (in log ratios,
    if more): a training that is getting worse, and would go on so over a
    longer horizon, scores less than its final loss says. Clipped to
    `[-clip, clip]`; `-clip` for a training whose loss turned NaN or Inf.

    Args:
        reference: `(final loss, least loss)` of the reference on the instance.
        result: the candidates' `vectorized.Results`.
        clip: the bound of a score.
        scoring: ``"no_harm"`` or ``"final"`` (`SCORINGS`).
    """
    final, best = reference
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.log(final / result.loss)
        if scoring == "no_harm":
            rise = np.log(result.loss / result.best_loss) - np.log(final / best)
            score = score - np.maximum(rise, 0.0)
    return np.where(result.finite & np.isfinite(score), np.clip(score, -clip, clip), -clip)


def variance_components(table):
    """How a score table's variance splits: `(candidates, instances, rest)`.

    A `[candidates, instances]` table (every candidate scored on the same
    instances, `SuiteEvaluator.scores`) read as a two-way layout without
    replication: the candidates' effect (how much they differ in general), the
    instances' effect (how easy each instance is for all of them) and the rest
    (how a candidate's score depends on the instance beyond both, and noise).
    The unbiased mean-square estimates; one estimated below 0 is 0.
    """
    table = np.asarray(table, np.float64)
    n, m = table.shape
    if n < 2 or m < 2:
        raise ValueError(f"A score table needs 2 candidates and 2 instances, got {table.shape}.")
    rows, columns, grand = table.mean(axis=1), table.mean(axis=0), table.mean()
    rest = table - rows[:, None] - columns[None, :] + grand
    rest_square = float((rest**2).sum() / ((n - 1) * (m - 1)))
    candidates = (m * rows.var(ddof=1) - rest_square) / m
    instances = (n * columns.var(ddof=1) - rest_square) / n
    return max(candidates, 0.0), max(instances, 0.0), rest_square


def reliability(components, count):
    """The reliability of a fitness averaged over `count` instances.

    ``var(candidates) / (var(candidates) + var(rest) / count)`` from
    `variance_components`: the share of the fitness's variance over candidates
    that is theirs, not their draw's. The instances' effect does not enter, since
    every candidate of a generation meets the same instances; its square root is
    the expected correlation of a `count`-instance fitness with the candidates'
    mean over all instances.
    """
    candidates, _, rest = components
    total = candidates + rest / count
    return candidates / total if total > 0 else math.nan


def reference_grid(base):
    """The tuned reference's candidates: `FixedHyperparameters` over `REFERENCE_GRIDS[base]`.

    The base's other hyperparameters keep Keras's defaults.
    """
    import itertools

    import keras

    from keras_neuromod.evolution.static import FixedHyperparameters

    grid = REFERENCE_GRIDS[base]
    defaults = keras.optimizers.get(BASELINES[base]).get_config()
    names = bases.get(base).hyperparameters
    values = {name: float(defaults[name]) for name in names}
    return [
        FixedHyperparameters(base, {**values, **dict(zip(grid, point))})
        for point in itertools.product(*grid.values())
    ]


def _shapes(splits):
    """The shapes of an instance's training and validation arrays (a program's key)."""
    return tuple(np.shape(a) for a in (*splits.train, *splits.val))


def _horizon(task, instance, seed):
    """The horizon an instance's agents are told: its updates on even seeds, unknown (0) on odd.

    Users train with and without `callbacks.TrainingHorizon`; agents meet both.
    """
    if seed % 2:
        return 0
    epochs, examples = np.shape(instance.orders)
    return epochs * math.ceil(examples / instance.batch_size)


class _Instance(NamedTuple):
    """What one instance's trainings start from: its splits, initial weights, dropout
    draws (the states of its seeded model's seed generators, `vectorized.seed_states`),
    data order (one row per epoch), loss scale, batch size and model size
    (`Variation.size`)."""

    splits: object
    weights: list
    draws: list
    orders: np.ndarray
    loss_scale: float
    batch_size: int
    size: tuple = None


def _batch_key(task, instance):
    """The batch size of an instance's programs: None at its task's own, so that a suite
    without varied batches compiles the programs it always did."""
    return None if instance.batch_size == task.batch_size else instance.batch_size


def _built(task, model_name, seed, size):
    """`task`'s model `model_name` built with `seed`, at `size` (`Variation.size`)."""
    width, blocks = (None, None) if size is None else size
    return task.build_model(model_name, seed=seed, width=width, blocks=blocks)


def _size_key(size):
    """A program key's part for a model size: nothing for the standard model, so that a
    suite without resized models compiles the programs it always did."""
    return () if size is None else (("size",) + tuple(size))


def _training(instance):
    """`TrainingProgram.run`'s arguments for an instance's training."""
    return {
        "initial_weights": instance.weights,
        "orders": instance.orders,
        "seed_states": instance.draws,
        "loss_scale": instance.loss_scale,
    }


class SuiteEvaluator(GenomeEvaluator):
    """Scores genomes on a `SuiteTask` with vectorized trainings (needs Keras on JAX).

    Args:
        suite: the `SuiteTask`.
        vmap, scan, width: the `TrainingProgram` plan.
    """

    def __init__(self, suite, vmap=None, scan=None, width=None):
        from keras_neuromod.evolution.vectorized import DEFAULT_WIDTH
        from keras_neuromod.evolution.vectorized import require_jax

        require_jax("SuiteEvaluator")
        self.suite = suite
        self.plan = {"vmap": vmap, "scan": scan, "width": DEFAULT_WIDTH if width is None else width}
        self._programs = {}
        self._references = {}
        self._seeded = set()

    def _programs_for(self, task_name, model_name, splits, batch_size=None, size=None):
        """The task and the agents' compiled training of one (task, model, data shapes,
        batch size, model size; None: the task's and the standard model).

        A generated task's split sizes may differ a little from seed to seed
        (the stratified validation carve rounds per class); each size has its
        own program.
        """
        key = (task_name, model_name, _shapes(splits), batch_size) + _size_key(size)
        if key not in self._programs:
            from keras_neuromod import tasks as suite_tasks

            task = suite_tasks.get(task_name)
            model = _built(task, model_name, 0, size)
            optimizer = placeholder_optimizer(self.suite)
            self._programs[key] = (
                task,
                self._compiled(task, model, optimizer, splits, batch_size),
            )
        return self._programs[key]

    def _default_program(self, task, model_name, splits, batch_size=None, size=None):
        """The compiled training of Keras's optimizer of the base, at its defaults."""
        key = (task.name, model_name, _shapes(splits), batch_size, "default") + _size_key(size)
        if key not in self._programs:
            import keras

            model = _built(task, model_name, 0, size)
            optimizer = keras.optimizers.get(BASELINES[self.suite.base])
            self._programs[key] = self._compiled(task, model, optimizer, splits, batch_size)
        return self._programs[key]

    def _static_program(self, task, model_name, splits, kind="static", batch_size=None, size=None):
        """The compiled training of fixed hyperparameters on one (task, model, shapes).

        The task's optimizer under the "frozen" ablation (`static.fixed_optimizer`):
        a population of hyperparameter vectors trains where genomes would.
        ``kind="static"`` clips them to the suite's ranges (the static search);
        ``kind="reference"`` to the centred output set's default ranges, which
        hold every point of the reference's grid.
        """
        suite = self.suite
        if kind == "reference":
            suite = dataclasses.replace(suite, ranges=None, outputs="centred")
        # the static search within the reference's ranges shares the reference's program
        ranges = json.dumps(suite.ranges, sort_keys=True)
        key = (task.name, model_name, _shapes(splits), batch_size, "fixed", suite.outputs, ranges)
        key += _size_key(size)
        if key not in self._programs:
            from keras_neuromod.evolution.static import fixed_optimizer

            model = _built(task, model_name, 0, size)
            optimizer = fixed_optimizer(suite, len(model.trainable_variables))
            self._programs[key] = self._compiled(task, model, optimizer, splits, batch_size)
        return self._programs[key]

    def _compiled(self, task, model, optimizer, splits, batch_size=None):
        """`model` compiled by `task` with `optimizer`, as a vectorized `TrainingProgram`
        at `batch_size` (None: the task's)."""
        from keras_neuromod.evolution.vectorized import TrainingProgram

        return TrainingProgram.for_task(
            task,
            model,
            optimizer,
            splits,
            **self.plan,
            batch_size=batch_size,
            max_epochs=self.suite.most_epochs(task, batch_size),
        )

    def _candidates(self, genomes):
        """Genomes, or fixed hyperparameters of the suite's base (the static search); not both."""
        from keras_neuromod.evolution.static import FixedHyperparameters
        from keras_neuromod.evolution.static import is_candidate

        static = [is_candidate(g) for g in genomes]
        if any(static) and not all(static):
            raise ValueError("Score genomes and fixed hyperparameters in separate calls.")
        if not all(static):
            return [g if isinstance(g, Genome) else Genome.from_dict(g) for g in genomes], False
        candidates = [
            g if isinstance(g, FixedHyperparameters) else FixedHyperparameters.from_dict(g)
            for g in genomes
        ]
        for candidate in candidates:
            if candidate.base != self.suite.base:
                raise ValueError(
                    f"Fixed hyperparameters of the {candidate.base!r} base cannot be "
                    f"scored on a suite of the {self.suite.base!r} base."
                )
        return candidates, True

    def _instance(self, task, model_name, seed):
        """The instance's `_Instance`, varied as the suite's `variation` draws it."""
        from keras_neuromod.evolution.vectorized import seed_states

        variation = self.suite.variation(task, seed, model_name)
        splits = task.splits(seed)
        model = _built(task, model_name, seed, variation.size)
        built = model.get_weights()
        self._check_seeded(task, model_name, seed, built, variation.size)
        weights = [
            w * np.asarray(variation.weight_scale, w.dtype) if np.ndim(w) >= 2 else w for w in built
        ]
        orders = task.data_order(seed, epochs=variation.epochs)
        return _Instance(
            splits,
            weights,
            seed_states(model),
            orders,
            variation.loss_scale,
            variation.batch_size,
            variation.size,
        )

    def _check_seeded(self, task, model_name, seed, weights, size=None):
        """Refuse a model whose builder ignores its seed: `weights`, built with `seed`,
        against a second build (checked once per model).

        Its instances would start from other weights on every run, so one seed
        would not give one evolution.
        """
        if (task.name, model_name) in self._seeded:
            return
        again = _built(task, model_name, seed, size).get_weights()
        if any(not np.array_equal(a, b) for a, b in zip(weights, again)):
            raise ValueError(
                f"The builder of model {model_name!r} ignores its seed: built twice with "
                f"seed {seed}, its weights differ, so the suite's instances (and the "
                "evolution) would not repeat. Pass the seed to every initializer, for "
                "example keras.initializers.GlorotUniform(seed=seed)."
            )
        self._seeded.add((task.name, model_name))

    def _reference(self, task, model_name, seed, instance):
        """The reference's final and least validation loss on an instance (NaN if it
        diverged), trained once.

        The tuned reference is the grid's finite training of least final loss.
        """
        key = (task.name, model_name, seed)
        if key not in self._references:
            if len(self._references) >= 256:
                self._references.pop(next(iter(self._references)))
            splits = instance.splits
            batch = _batch_key(task, instance)
            if self.suite.reference == "tuned":
                program = self._static_program(
                    task, model_name, splits, "reference", batch, instance.size
                )
                candidates = reference_grid(self.suite.base)
            else:
                program = self._default_program(task, model_name, splits, batch, instance.size)
                candidates = None
            program.use_data(*splits.train, *splits.val)
            result = program.run(candidates, **_training(instance))
            losses = np.where(result.finite, result.loss, np.inf)
            chosen = int(np.argmin(losses))
            if math.isfinite(losses[chosen]):
                reference = (float(result.loss[chosen]), float(result.best_loss[chosen]))
            else:
                reference = (math.nan, math.nan)
            self._references[key] = reference
        return self._references[key]

    def scores(self, genomes, seed):
        """Per-instance scores, `[genomes, instances]`, and the instances.

        Args:
            genomes: `Genome`s or genome dicts, or (the static search)
                `FixedHyperparameters` or their dicts, trained with those
                values fixed for every tensor and step.
            seed: the draw's seed.
        """
        from keras_neuromod import tasks as suite_tasks

        genomes, static = self._candidates(genomes)
        clip = float(self.suite.clip)
        instances = self.suite.draw(seed)
        table = np.zeros((len(genomes), len(instances)))
        for column, (task_name, model_name, instance_seed) in enumerate(instances):
            # everything up to the reference's training is the task's: its errors stop a run
            with task_step(
                f"preparing task {task_name!r} with model {model_name!r} "
                f"(seed {instance_seed}) and training its reference "
                f"({self.suite.describe_reference()})"
            ):
                task = suite_tasks.get(task_name)
                instance = self._instance(task, model_name, instance_seed)
                splits = instance.splits
                batch = _batch_key(task, instance)
                if static:
                    program = self._static_program(
                        task, model_name, splits, batch_size=batch, size=instance.size
                    )
                else:
                    _, program = self._programs_for(
                        task_name, model_name, splits, batch, instance.size
                    )
                program.use_data(*splits.train, *splits.val)
                reference = self._reference(task, model_name, instance_seed, instance)
            if static:
                result = program.run(genomes, **_training(instance))
            else:
                horizon = _horizon(task, instance, instance_seed)
                result = program.run(genomes, **_training(instance), horizon=horizon)
            table[:, column] = instance_scores(reference, result, clip, self.suite.scoring)
        return table, instances

    def evaluate_many(self, genomes, architecture, seed):
        """The fitness of each genome (or fixed hyperparameters): its mean score over
        the instances."""
        if not genomes:
            return []
        table, _ = self.scores(genomes, seed)
        return [float(v) for v in table.mean(axis=1)]
