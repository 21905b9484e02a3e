"""The fitness of an agent: how well `model.fit` learns under its modulation.

Each generation draws one architecture and one initialisation seed; every
individual of that generation trains that model from the same initial weights
on the same data order for `epochs` epochs with Nm-SGD or Nm-Adam. The fitness
is the training accuracy at the end of the final epoch (the paper's choice) or,
as an option, the test accuracy. A run whose loss turns NaN or Inf scores
`worst_fitness`.

An `Evaluator` keeps one compiled model and optimizer per architecture: an
evaluation resets the weights and the optimizer state, swaps the genome into the
optimizer's variables and fits, so no model is rebuilt and no train step is
traced again.

An error of the task itself (its data, its models, the reference's training) is
no individual's fault: it is raised as a `TaskError`, which stops an evolution
(`keras_neuromod.evolution.parallel`) instead of scoring every individual worst.
"""

import contextlib
import dataclasses
import math

import numpy as np

from keras_neuromod import _fields
from keras_neuromod import bases
from keras_neuromod import inputs as input_sets
from keras_neuromod import outputs as output_sets
from keras_neuromod.agrn import MAX_PROTEINS
from keras_neuromod.agrn import Genome

__all__ = ["FitnessTask", "TaskData", "Evaluator", "TaskError", "task_step"]


class TaskError(RuntimeError):
    """An evaluation failed through its task (data, models, reference), not through the individual.

    Every individual would fail alike, so an evolution stops at once with this
    error (a worker's traceback included) instead of scoring them all worst.
    """


@contextlib.contextmanager
def task_step(what):
    """Raise what fails inside as a `TaskError` (its cause kept) that says `what` failed.

    Args:
        what: the step, e.g. ``"loading the data of task 'wine'"``.
    """
    try:
        yield
    except TaskError:
        raise
    except Exception as error:  # noqa: BLE001 - re-raised as the task's
        raise TaskError(f"{what} failed: {type(error).__name__}: {error}") from error


@dataclasses.dataclass(frozen=True)
class FitnessTask:
    """What an agent is evaluated on (plain data, sent to every worker).

    Args:
        dataset: ``"digits"``, ``"cifar10"`` or ``"cifar100"``.
        base: the optimizer base, a name registered in `keras_neuromod.bases`
            (``"sgd"`` for Nm-SGD, ``"adam"`` for Nm-Adam).
        epochs: training epochs per evaluation.
        batch_size: training batch size.
        width: width factor of the models (`keras_neuromod.models.build`).
        metric: ``"accuracy"`` (final-epoch training accuracy, the paper's) or
            ``"val_accuracy"`` (accuracy on the test split after training).
        train_subset: use only the first N training examples (None: all).
        ranges: hyperparameter ranges of the optimizer (None: its defaults).
        warmup_steps, grn_steps_per_update: AGRN settings of the optimizer.
        max_regulatory: padded AGRN capacity; genomes up to this size share
            one compiled train step. The AGRN inputs + the outputs + max_regulatory
            may not exceed `keras_neuromod.agrn.MAX_PROTEINS`.
        inputs: the agents' input set (`keras_neuromod.inputs`; the core
            paper's by default, as this task is the paper's setting).
        outputs: the agents' output set (`keras_neuromod.outputs`; None:
            ``"paper"`` for the paper's input set, ``"centred"`` for any
            other). A task written without the field (before output sets)
            reads as ``"paper"``, the set its agents were evolved with.
        worst_fitness: the fitness of a diverging (NaN or Inf) or failed run.
        data_dir: tensorflow-datasets folder for CIFAR.
    """

    dataset: str = "digits"
    base: str = "adam"
    epochs: int = 2
    batch_size: int = 32
    width: float = 0.5
    metric: str = "accuracy"
    train_subset: int = None
    ranges: dict = None
    warmup_steps: int = 25
    grn_steps_per_update: int = 1
    max_regulatory: int = 32
    worst_fitness: float = 0.0
    data_dir: str = None
    inputs: str = "paper"
    outputs: str = None

    def __post_init__(self):
        from keras_neuromod.datasets import NAMES

        if self.dataset not in NAMES:
            raise ValueError(f"Unknown dataset {self.dataset!r}; choose one of {list(NAMES)}.")
        bases.get(self.base, where="FitnessTask's base")
        if self.metric not in ("accuracy", "val_accuracy"):
            raise ValueError(f"metric must be 'accuracy' or 'val_accuracy', got {self.metric!r}.")
        for name in ("epochs", "batch_size"):
            object.__setattr__(self, name, _fields.integer(getattr(self, name), name, minimum=1))
        if not (isinstance(self.width, (int, float)) and self.width > 0):
            raise ValueError(f"width must be positive, got {self.width!r}.")
        input_sets.get(self.inputs)
        base = bases.get(self.base)
        object.__setattr__(self, "outputs", base.resolve_outputs(self.outputs, self.inputs))
        base.check_ranges(self.ranges, outputs=self.outputs)
        limit = MAX_PROTEINS - self.n_inputs - self.n_outputs
        try:
            max_regulatory = _fields.integer(self.max_regulatory, "max_regulatory", 0, limit)
        except ValueError as error:
            raise ValueError(
                f"{error} The AGRN's {self.n_inputs} inputs, {self.n_outputs} outputs "
                "and max_regulatory "
                f"proteins stay within keras_neuromod.agrn.MAX_PROTEINS = {MAX_PROTEINS}."
            ) from None
        object.__setattr__(self, "max_regulatory", max_regulatory)
        if self.train_subset is not None and int(self.train_subset) < self.batch_size:
            raise ValueError("train_subset must be at least one batch.")
        if not math.isfinite(self.worst_fitness):
            raise ValueError("worst_fitness must be finite (it is stored in JSON).")

    @property
    def n_inputs(self):
        return input_sets.get(self.inputs).size

    @property
    def n_outputs(self):
        return bases.get(self.base).n_outputs

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown FitnessTask field(s) {unknown}.")
        data = dict(data)
        data.setdefault("outputs", output_sets.LEGACY)  # written before output sets: the paper's
        return cls(**data)


def placeholder_optimizer(task):
    """The task's Nm optimizer (its base, input and output sets, ranges, AGRN settings and
    padded capacity).

    It holds an empty placeholder genome: evaluators swap each individual's in.
    """
    return bases.get(task.base).optimizer(
        agent=Genome.random(task.n_inputs, task.n_outputs, 0, rng=0),
        inputs=task.inputs,
        outputs=task.outputs,
        ranges=task.ranges,
        warmup_steps=task.warmup_steps,
        grn_steps_per_update=task.grn_steps_per_update,
        max_regulatory=task.max_regulatory,
    )


class TaskData:
    """A `FitnessTask`'s data, models and data order, shared by the evaluators.

    Args:
        task: the `FitnessTask`.
    """

    def __init__(self, task):
        from keras_neuromod import datasets

        self.task = task
        kwargs = {"data_dir": task.data_dir} if task.dataset != "digits" else {}
        data = datasets.load(task.dataset, **kwargs)
        (x, y), (x_test, y_test), self.num_classes = data
        if task.train_subset:
            x, y = x[: task.train_subset], y[: task.train_subset]
        self.x, self.y, self.x_test, self.y_test = x, y, x_test, y_test
        self.input_shape = data.input_shape
        self._initial = {}

    def build_trainer(self, architecture):
        """A compiled model of `architecture` and its built Nm optimizer (placeholder genome).

        The model outputs logits (its softmax is part of the loss), so that the
        loss is computed alike on every backend; the accuracy is unchanged.
        """
        import keras

        from keras_neuromod import models

        task = self.task
        # Train on the logits: the loss is the log-softmax of the output layer's
        # logits on every backend (Keras's TensorFlow backend does this for a
        # softmax output; its JAX backend would clip the probabilities, whose
        # gradient then vanishes for a saturated example).
        model = models.build(
            architecture,
            self.input_shape,
            self.num_classes,
            width=task.width,
            output_activation=None,
        )
        optimizer = placeholder_optimizer(task)
        model.compile(
            optimizer=optimizer,
            metrics=["accuracy"],
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        optimizer.build(model.trainable_variables)
        return model, optimizer

    def initial_weights(self, architecture, seed):
        """The generation's initial weights (`model.get_weights()` order), the same on
        every backend."""
        key = (architecture, int(seed))
        if key not in self._initial:
            from keras_neuromod import models

            if len(self._initial) >= 4:
                self._initial.pop(next(iter(self._initial)))
            reference = models.build(
                architecture,
                self.input_shape,
                self.num_classes,
                width=self.task.width,
                seed=int(seed),
            )
            self._initial[key] = reference.get_weights()
        return self._initial[key]

    def data_order(self, seed):
        """The order of the training examples in each epoch: int array [epochs, examples]."""
        order = np.random.default_rng(int(seed))
        return np.stack([order.permutation(len(self.x)) for _ in range(self.task.epochs)])


class GenomeEvaluator:
    """What every evaluator answers: one genome's fitness, and many genomes' at once.

    `Evaluator` (`model.fit`, one genome at a time) implements `evaluate`;
    `VectorizedEvaluator` and `SuiteEvaluator` (compiled JAX trainings of many
    genomes together) implement `evaluate_many`. Each method's default calls the
    other, so a subclass implements one of them.
    """

    def evaluate(self, genome, architecture, seed):
        """The fitness of one genome, a float.

        Args:
            genome: a `Genome` or a genome dict.
            architecture: what the generation trains (an architecture's name,
                or ``"suite"``).
            seed: the generation's seed.
        """
        return self.evaluate_many([genome], architecture, seed)[0]

    def evaluate_many(self, genomes, architecture, seed):
        """The fitness of each of `genomes`, a list of floats in their order (as `evaluate`)."""
        return [self.evaluate(genome, architecture, seed) for genome in genomes]


class Evaluator(TaskData, GenomeEvaluator):
    """Evaluates genomes on a `FitnessTask` with `model.fit`, reusing compiled models.

    Args:
        task: the `FitnessTask`.
    """

    def __init__(self, task):
        super().__init__(task)
        self._models = {}

    def _trainer(self, architecture):
        if architecture not in self._models:
            import keras

            model, optimizer = self.build_trainer(architecture)
            self._models[architecture] = (model, optimizer, keras.callbacks.TerminateOnNaN())
        return self._models[architecture]

    def evaluate(self, genome, architecture, seed):
        """Train the generation's model under `genome`; return the fitness.

        Args:
            genome: a `Genome` or a genome dict.
            architecture: ``"A"``, ``"B"``, ``"C"`` or ``"mlp"``.
            seed: the generation's seed: initial weights and data order.
        """
        if not isinstance(genome, Genome):
            genome = Genome.from_dict(genome)
        with task_step(f"building model {architecture!r} of the {self.task.dataset} task"):
            model, optimizer, stop_on_nan = self._trainer(architecture)
            model.set_weights(self.initial_weights(architecture, seed))
        optimizer.set_genome(genome, reset=True)
        history = None
        for permutation in self.data_order(seed):
            history = model.fit(
                self.x[permutation],
                self.y[permutation],
                batch_size=self.task.batch_size,
                epochs=1,
                shuffle=False,
                verbose=0,
                callbacks=[stop_on_nan],
            )
            loss = history.history["loss"][-1] if history.history.get("loss") else float("nan")
            if not math.isfinite(loss) or model.stop_training:
                return float(self.task.worst_fitness)
        if self.task.metric == "val_accuracy":
            _, fitness = model.evaluate(self.x_test, self.y_test, batch_size=256, verbose=0)
        else:
            fitness = history.history["accuracy"][-1]
        fitness = float(fitness)
        if not math.isfinite(fitness):
            return float(self.task.worst_fitness)
        return fitness
