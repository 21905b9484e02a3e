"""Fast evaluation: whole trainings as compiled JAX code, a population at a time.

`VectorizedEvaluator` computes the same fitness as `Evaluator` (the same model,
initial weights, batches in the same order, loss, optimizer and metric) without
`model.fit`. It writes one individual's whole training (every epoch's batches,
the update of Nm-SGD or Nm-Adam, the accuracy) as one function of the genome
with Keras's stateless API (`model.stateless_call`,
`optimizer.stateless_apply`, the genome being three of the optimizer's
variables) and compiles it once per architecture with `jax.jit`:

* **batched** (`vmap=True`): `jax.vmap` over the genome, so that a group of
  `width` individuals trains in one call, each with its own weights and
  optimizer state. Groups are padded to `width` (with copies of their first
  genome, whose results are dropped), so every group runs the same compiled
  program and an individual's fitness depends on its genome only, not on who
  shares its group or how the population is split among workers.
* **one by one** (`vmap=False`): the same compiled training called once per
  individual.

Batched matrix products round differently from single ones, so a batched
individual's training equals `fit`'s up to float rounding, which a chaotic
training (a learning rate near divergence) can amplify into a visibly
different end; trained one by one with a call per batch, it does `fit`'s
arithmetic.

and, independently, `scan=True` compiles the whole training as one loop
(`jax.lax.scan` over epochs and batches) where `scan=False` calls a compiled
training step once per batch from Python.

Which is faster depends on the architecture and the device
(`benchmarks/evolution_throughput.py` measures them). On a CPU, dense models
gain from both (small matrix products fill the cores better when stacked, and
one loop saves a call per batch); convolutional models lose from both: XLA's
CPU convolutions run several times slower inside a compiled loop than as
separate calls, and batched ones somewhat slower than one after another. So
by default (`vmap=None, scan=None`) dense-only models are batched and scanned
and convolutional ones trained one by one, a call per batch; on an
accelerator both are batched and scanned. Genomes of different sizes share one
program: the optimizer pads every genome to `task.max_regulatory` regulatory proteins.

A diverging individual (a loss that turns NaN or Inf at any step) scores
`task.worst_fitness`; its batch-mates, whose computations are independent of
it, keep theirs.

This needs Keras's JAX backend in the evaluating process (`KERAS_BACKEND=jax`);
the ``"vectorized"`` backend of `keras_neuromod.evolution.evolve` starts such
processes from a program that uses TensorFlow.
"""

import math
from typing import NamedTuple

import numpy as np

from keras_neuromod import _fields
from keras_neuromod.evolution.batched import evaluate_groups
from keras_neuromod.evolution.fitness import GenomeEvaluator
from keras_neuromod.evolution.fitness import TaskData

__all__ = [
    "VectorizedEvaluator",
    "TrainingProgram",
    "Results",
    "DEFAULT_WIDTH",
    "batches_by_default",
    "scans_by_default",
    "seed_states",
]

# Individuals per batched call. 16 fills a 2-core CPU on the digits MLP
# (benchmarks/evolution_throughput.py) while padding a population of 20 or 50
# by little.
DEFAULT_WIDTH = 16

# Held-out examples measured per step after training.
_EVAL_BATCH = 256


def require_jax(what):
    """Raise `RuntimeError` unless Keras runs on JAX in this process."""
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"{what} trains with JAX and needs Keras's JAX backend in this process "
            f"(KERAS_BACKEND=jax); this one runs {keras.backend.backend()!r}. "
            "evolve(..., backend='vectorized') starts JAX workers for you."
        )


# Keras's convolution layers: XLA's CPU convolutions are slower batched and in a loop
_CONVOLUTIONS = (
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
)


def _convolutional(model):
    """Whether `model` holds a convolution layer, at any depth (attention's kernels of rank
    3 are matrix products, which batch well)."""
    import keras

    from keras_neuromod._keras_compat import flatten_layers

    kinds = tuple(getattr(keras.layers, name) for name in _CONVOLUTIONS)
    return any(isinstance(layer, kinds) for layer in flatten_layers(model))


def _seed_slots(model):
    """Indices, among `model.non_trainable_variables`, of the state that is not a weight:
    its random seed generators' (a dropout layer's)."""
    weights = {id(v) for v in model.non_trainable_weights}
    return [i for i, v in enumerate(model.non_trainable_variables) if id(v) not in weights]


def seed_states(model):
    """The states of `model`'s random seed generators (its dropout layers'), as numpy arrays.

    They fix the draws of its random layers; `model.get_weights` leaves them
    out, and `fit` advances them. A seeded model's, passed to
    `TrainingProgram.run`, makes its trainings draw as that model's `fit` would.
    An empty list for a model without random layers.
    """
    variables = model.non_trainable_variables
    return [np.array(variables[i].value) for i in _seed_slots(model)]


def batches_by_default(model, platform):
    """Whether `vmap=None` batches this model on this platform ('cpu', 'gpu', 'tpu')."""
    return platform != "cpu" or not _convolutional(model)


def scans_by_default(model, platform):
    """Whether `scan=None` compiles this model's whole training as one loop."""
    return platform != "cpu" or not _convolutional(model)


class VectorizedEvaluator(TaskData, GenomeEvaluator):
    """Evaluates genomes on a `FitnessTask` with compiled, batched JAX training.

    Args:
        task: the `FitnessTask`.
        vmap: True to train `width` individuals per batched call, False to
            train them one by one, None to choose by architecture and device
            (see the module's docs).
        scan: True to compile an individual's whole training as one loop
            (`jax.lax.scan` over epochs and batches), False to call a compiled
            training step once per batch from Python, None to choose by
            architecture and device (see the module's docs).
        width: individuals per batched call.

    Raises:
        RuntimeError: if Keras does not run on JAX in this process.
    """

    def __init__(self, task, vmap=None, scan=None, width=DEFAULT_WIDTH):
        require_jax("VectorizedEvaluator")
        for name, value in (("vmap", vmap), ("scan", scan)):
            if value not in (None, True, False):
                raise ValueError(f"{name} must be True, False or None, got {value!r}.")
        self.vmap, self.scan = vmap, scan
        self.width = _fields.integer(width, "width", minimum=1)
        super().__init__(task)
        self._programs = {}

    # -- the compiled training ---------------------------------------------

    def _program(self, architecture):
        if architecture not in self._programs:
            self._programs[architecture] = _Program(self, architecture)
        return self._programs[architecture]

    def plan(self, architecture):
        """How `architecture` is trained: `{"vmap": bool, "scan": bool}`."""
        program = self._program(architecture)
        return {"vmap": program.batched, "scan": program.scanned}

    def evaluate_many(self, genomes, architecture, seed):
        """The fitness of each genome (`Genome`s or genome dicts), as a list of floats."""
        from keras_neuromod.agrn import Genome

        genomes = [g if isinstance(g, Genome) else Genome.from_dict(g) for g in genomes]
        if not genomes:
            return []
        program = self._program(architecture)
        return program.run(genomes, int(seed))


class _Program:
    """One architecture's `TrainingProgram` for a `FitnessTask`, and its start."""

    def __init__(self, evaluator, architecture):
        self.evaluator = evaluator
        self.architecture = architecture
        task = evaluator.task
        model, optimizer = evaluator.build_trainer(architecture)
        held_out = task.metric == "val_accuracy"
        self.program = TrainingProgram(
            model,
            optimizer,
            model.loss,
            "accuracy",
            task.epochs,
            task.batch_size,
            evaluator.x,
            evaluator.y,
            evaluator.x_test if held_out else None,
            evaluator.y_test if held_out else None,
            vmap=evaluator.vmap,
            scan=evaluator.scan,
            width=evaluator.width,
        )
        self.batched, self.scanned = self.program.batched, self.program.scanned

    def run(self, genomes, seed):
        evaluator = self.evaluator
        results = self.program.run(
            genomes, evaluator.initial_weights(self.architecture, seed), evaluator.data_order(seed)
        )
        fitness = np.where(results.finite, results.metric, np.nan)
        fitness = np.where(np.isfinite(fitness), fitness, evaluator.task.worst_fitness)
        return [float(v) for v in fitness]


class Results(NamedTuple):
    """What a `TrainingProgram` measured, one entry per genome (numpy arrays).

    Attributes:
        metric: the metric on the held-out data after training, or (without
            held-out data) the running metric of the last epoch, as `fit`
            reports it: accuracy, or mean squared error.
        loss: the loss, likewise.
        finite: False where the training loss was ever NaN or Inf.
        best_loss: the least held-out loss at the end of any epoch (the
            last one's included), or (without held-out data) `loss`: how far
            the training's loss ended above its best.
    """

    metric: np.ndarray
    loss: np.ndarray
    finite: np.ndarray
    best_loss: np.ndarray


class TrainingProgram:
    """One model's training under a neuromodulated optimizer, compiled once for every genome.

    The training is `fit`'s (batches of `batch_size` in the given order, the
    last one smaller, the loss averaged over each batch), written with Keras's
    stateless API and compiled with JAX as the plan says (`vmap`, `scan`; see
    the module's docs). Genomes enter through the optimizer's genome
    variables, the initial weights and the data order as arguments: neither a
    new genome nor a new seed compiles anything again.

    Layers with state train as in `fit`: batch normalisation's moving
    statistics start from the initial weights and follow the batches; dropout
    draws from its seed generators' states (`seed_states`), every genome from
    the same start: those given to `run`, or those the model had when the
    program was made. (`set_weights` leaves them, and `fit` advances them: a
    `fit` draws alike only from the same states.)

    Args:
        model: a built Keras model (a classifier outputs logits).
        optimizer: a `NeuromodulatedOptimizer` built for `model`'s trainable
            variables, its "frozen" ablation (`keras_neuromod.optimizers.ablation`,
            which takes fixed hyperparameter vectors where genomes go: the
            static search), or a plain Keras optimizer (a baseline, trained once).
        loss: a Keras loss (a `keras.losses.Loss` or a function of
            `(y_true, y_pred)` returning one value per example).
        metric: ``"accuracy"`` (argmax against integer labels) or ``"mse"``.
        epochs, batch_size: the budget. `run` may be given the data orders of
            another number of epochs.
        x, y: the training data.
        x_eval, y_eval: held-out data on which the loss and the metric are
            measured after training (None: the last epoch's running values).
        vmap, scan, width: the plan (None: by model and device).
        max_epochs: the most epochs a run is expected to train (None:
            `epochs`). With `scan`, the compiled loop holds this many epochs
            and runs as many as a run's data orders give; a run of more
            compiles once again, for its length.

    Raises:
        RuntimeError: if Keras does not run on JAX in this process.
    """

    def __init__(
        self,
        model,
        optimizer,
        loss,
        metric,
        epochs,
        batch_size,
        x,
        y,
        x_eval=None,
        y_eval=None,
        vmap=None,
        scan=None,
        width=DEFAULT_WIDTH,
        max_epochs=None,
    ):
        import jax

        require_jax("TrainingProgram")
        if metric not in ("accuracy", "mse"):
            raise ValueError(f"metric must be 'accuracy' or 'mse', got {metric!r}.")
        self.model, self.metric = model, metric
        self.epochs = _fields.integer(epochs, "epochs", minimum=1)
        self.rows = self.epochs
        if max_epochs is not None:
            self.rows = max(self.rows, _fields.integer(max_epochs, "max_epochs", minimum=1))
        self.batch_size = _fields.integer(batch_size, "batch_size", minimum=1)
        self.width = _fields.integer(width, "width", minimum=1)
        genome_slots = self._read_optimizer(optimizer)
        self.seed_slots = _seed_slots(model)
        self.seed_start = seed_states(model)
        platform = jax.default_backend()
        self.batched = batches_by_default(model, platform) if vmap is None else bool(vmap)
        self.scanned = scans_by_default(model, platform) if scan is None else bool(scan)
        self.size = len(x)
        self.held_out = x_eval is not None
        if not self.held_out:
            x_eval, y_eval = x[:1], y[:1]  # unused placeholders
        self.data = tuple(jax.device_put(np.asarray(a)) for a in (x, y, x_eval, y_eval))
        self.start, self.step, self.observe, self.finish = _training_functions(
            model, optimizer, _per_example(loss), metric, self.held_out, genome_slots
        )
        self._compile()

    @classmethod
    def for_task(cls, task, model, optimizer, splits, epochs=None, batch_size=None, **options):
        """A task's training: `model` compiled by `task` (`keras_neuromod.tasks.Task`)
        with `optimizer` (built here), trained on `splits`' training split and measured
        on its validation split.

        Args:
            task: the `Task`.
            model: a model of the task (`Task.build_model`).
            optimizer: as for the constructor.
            splits: the task's `Splits` (`Task.splits`).
            epochs: the budget's epochs (None: the task's).
            batch_size: the batch size (None: the task's).
            **options: `vmap`, `scan`, `width`, `max_epochs`.
        """
        task.compile(model, optimizer)
        optimizer.build(model.trainable_variables)
        return cls(
            model,
            optimizer,
            task.loss_function(),
            task.metric,
            task.epochs if epochs is None else epochs,
            task.batch_size if batch_size is None else batch_size,
            *splits.train,
            *splits.val,
            **options,
        )

    def _read_optimizer(self, optimizer):
        """Find the optimizer's candidate and horizon slots, reset it and keep its start values.

        Returns:
            The indices, among the optimizer's variables, of those a candidate goes into.
        """
        import jax.numpy as jnp

        variables = list(optimizer.variables)
        horizon = getattr(optimizer, "horizon_variable", None)  # the sensing input set's
        self.horizon_slot = next((i for i, v in enumerate(variables) if v is horizon), None)
        self.pack, targets = _candidate_slots(optimizer)
        # a plain Keras optimizer (a baseline) takes no candidates: `run` then trains once
        self.takes_genomes = self.pack is not None
        genome_slots = [
            next(i for i, v in enumerate(variables) if v is target) for target in targets
        ]
        if hasattr(optimizer, "reset_state"):
            optimizer.reset_state()
        # copies: a `fit` of the model donates (deletes) its variables' buffers
        self.optimizer_start = [jnp.array(v.value, copy=True) for v in variables]
        return genome_slots

    def _compile(self):
        """Jit the training functions the plan calls, batched over genomes where it batches."""
        import jax

        def batch(function, shared):
            return jax.jit(
                jax.vmap(function, in_axes=(0,) + (None,) * shared) if self.batched else function
            )

        if self.scanned:
            self.train = batch(self._whole_training, 7)
        else:
            self.start_compiled = batch(self.start, 3)
            self.step_compiled = batch(self.step, 5)
            self.observe_compiled = batch(self.observe, 2)
            self.finish_compiled = batch(self.finish, 2)

    def use_data(self, x, y, x_eval=None, y_eval=None):
        """Train and measure on other arrays of the same shapes (no compilation)."""
        import jax

        if not self.held_out:
            x_eval, y_eval = x[:1], y[:1]
        arrays = tuple(np.asarray(a) for a in (x, y, x_eval, y_eval))
        for new, old in zip(arrays, self.data):
            if new.shape != old.shape:
                raise ValueError(
                    f"use_data needs arrays shaped as the program's: {new.shape} "
                    f"against {old.shape}."
                )
        self.data = tuple(jax.device_put(a) for a in arrays)

    def _whole_training(
        self, genome, trainable, non_trainable, optimizer_variables, orders, epochs, scale, data
    ):
        """One candidate's training in one loop: the first `epochs` rows of `orders` (an
        array of at least as many, its length fixed by the compilation), the number a
        run-time value, so that any number of epochs up to the rows trains without
        compiling again."""
        import jax
        import jax.numpy as jnp

        x, y, x_eval, y_eval = data
        batch = self.batch_size
        full, remainder = divmod(orders.shape[1], batch)
        state = self.start(genome, trainable, non_trainable, optimizer_variables)

        def epoch(state, order, weight):
            def scanned(state, indices):
                return self.step(state, indices, weight, scale, x, y), None

            state, _ = jax.lax.scan(
                scanned, state, jnp.reshape(order[: full * batch], (full, batch))
            )
            if remainder:
                state, _ = scanned(state, order[full * batch :])
            return state

        def observed_epoch(index, state):
            state = epoch(state, orders[index], jnp.zeros((), "int32"))
            return self.observe(state, x_eval, y_eval)

        # every epoch but the last is measured on the held-out data at its end; `finish`
        # measures the last, whose running loss and metric are counted (as `fit` reports)
        state = jax.lax.fori_loop(0, epochs - 1, observed_epoch, state)
        state = epoch(state, orders[epochs - 1], jnp.ones((), "int32"))
        return self.finish(state, x_eval, y_eval)

    def run(self, genomes, initial_weights, orders, horizon=None, seed_states=None, loss_scale=1.0):
        """Train every genome from `initial_weights` (`model.get_weights()` order).

        Args:
            genomes: `Genome`s; with a frozen optimizer, hyperparameter vectors
                (`FixedHyperparameters` or arrays of one value per
                hyperparameter); None with a plain optimizer (one training).
            initial_weights: the model's starting weights.
            orders: int array [epochs, examples]: each epoch's order of the
                training examples; as many epochs as the program's budget or
                another number (`max_epochs`).
            horizon: the updates the agents are told the training makes
                (`NeuromodulatedOptimizer.set_horizon`; the sensing input set
                reads it), or None to leave it as the optimizer had it.
            seed_states: the starting states of the model's random seed
                generators (`seed_states` of a model: a seeded model's fixes
                the dropout draws as its own), or None for those the model had
                when the program was made.
            loss_scale: a positive factor of the training loss (of its
                gradients; the losses and metrics measured are unscaled).

        Returns:
            `Results`, one entry per genome.
        """
        import jax.numpy as jnp

        orders = self._checked_orders(orders)
        if not (_fields.is_number(loss_scale) and 0 < float(loss_scale) < math.inf):
            raise ValueError(f"loss_scale must be a positive number, got {loss_scale!r}.")
        scale = np.float32(loss_scale)
        trainable, non_trainable = self._initial_state(initial_weights, seed_states)
        if self.scanned:  # the loop's rows, and how many of them train (a run-time value)
            course = (self._loop_rows(orders), np.int32(len(orders)))
        else:  # each epoch's order and weight: the last epoch's metric counts (as in `fit`)
            course = (orders, np.eye(len(orders), dtype=np.int32)[-1])
        population = self._population(genomes)
        optimizer_start = self._optimizer_start(horizon)

        def train(genome):
            return self._train_one(genome, trainable, non_trainable, optimizer_start, course, scale)

        if self.batched:
            width = self.width if self.takes_genomes else 1
            call = train
        else:
            width = 1

            def call(group):
                one = train(tuple(part[0] for part in group))
                return jnp.reshape(one, (1, -1))

        values = evaluate_groups(call, population, width)
        return Results(values[:, 0], values[:, 1], values[:, 2] > 0.5, values[:, 3])

    def _initial_state(self, initial_weights, states):
        """The trainable and non-trainable variables' starting values: the weights given
        (batch normalisation's moving statistics among them) and the seed generators' states."""
        import jax.numpy as jnp

        states = self.seed_start if states is None else list(states)
        expected = [np.shape(v) for v in self.seed_start]
        if [np.shape(v) for v in states] != expected:
            raise ValueError(
                f"seed_states must be the states of the model's {len(expected)} seed "
                f"generator(s), shaped {expected}; got {[np.shape(v) for v in states]}."
            )
        self.model.set_weights(initial_weights)
        trainable = [v.value for v in self.model.trainable_variables]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        for slot, state in zip(self.seed_slots, states):
            non_trainable[slot] = jnp.asarray(state, non_trainable[slot].dtype)
        return trainable, non_trainable

    def _checked_orders(self, orders):
        """`orders` as a numpy array, checked to hold one order of every example per epoch."""
        orders = np.asarray(orders)
        if orders.ndim != 2 or orders.shape[0] < 1 or orders.shape[1] != self.size:
            raise ValueError(
                f"orders must have shape (epochs, {self.size}) with at least one epoch, "
                f"got {orders.shape}."
            )
        return orders

    def _population(self, genomes):
        """The candidates packed and stacked, one row per candidate, per optimizer variable."""
        if self.takes_genomes:
            packed = [self.pack(g) for g in genomes]
            return tuple(np.stack(parts).astype(np.float32) for parts in zip(*packed))
        if genomes is not None:
            raise ValueError("A TrainingProgram with a plain optimizer takes no genomes.")
        return (np.zeros((1, 1), np.float32),)  # one training; `start` ignores it

    def _optimizer_start(self, horizon):
        """The optimizer's starting variables, telling the agents `horizon` if given."""
        import jax.numpy as jnp

        optimizer_start = list(self.optimizer_start)
        if horizon is not None and self.horizon_slot is not None:
            optimizer_start[self.horizon_slot] = jnp.asarray(float(horizon), "float32")
        return optimizer_start

    def _loop_rows(self, orders):
        """`orders` padded to the compiled loop's rows (a longer training grows them: the
        loop compiles once again, for its length)."""
        import jax.numpy as jnp

        self.rows = max(self.rows, len(orders))
        padded = np.zeros((self.rows, self.size), orders.dtype)
        padded[: len(orders)] = orders
        return jnp.asarray(padded)

    def _train_one(self, genome, trainable, non_trainable, optimizer_start, course, scale):
        """Train one candidate (or a batch of them): one compiled loop (`course`: the
        padded orders and the number of epochs), or a call per batch (`course`: the orders
        and each epoch's metric weight)."""
        if self.scanned:
            return self.train(
                genome, trainable, non_trainable, optimizer_start, *course, scale, self.data
            )
        orders, weights = course
        x, y, x_eval, y_eval = self.data
        batch = self.batch_size
        state = self.start_compiled(genome, trainable, non_trainable, optimizer_start)
        for epoch, (order, weight) in enumerate(zip(orders, weights)):
            if epoch:
                state = self.observe_compiled(state, x_eval, y_eval)
            for first in range(0, len(order), batch):
                state = self.step_compiled(state, order[first : first + batch], weight, scale, x, y)
        return self.finish_compiled(state, x_eval, y_eval)


def _candidate_slots(optimizer):
    """How `run` packs a candidate, and the optimizer variables it goes into.

    A neuromodulated optimizer takes genomes (packed tags, activity and rates:
    three variables); its "frozen" ablation takes fixed hyperparameter vectors
    (one value per hyperparameter, `start` broadcasts it to every tensor's row
    of the ablation's table); a plain optimizer takes none (`(None, ())`).
    """
    from keras_neuromod.optimizers.base import NeuromodulatedOptimizer

    if getattr(optimizer, "ablation", None) == "frozen":
        names = tuple(optimizer.HYPERPARAMETERS)

        def vector(candidate):
            values = np.asarray(getattr(candidate, "vector", candidate), np.float32)
            if values.shape != (len(names),):
                raise ValueError(
                    f"A frozen optimizer's candidates are {len(names)} values "
                    f"({list(names)}), got shape {values.shape}."
                )
            return (values,)

        return vector, (optimizer.frozen_variable,)
    if isinstance(optimizer, NeuromodulatedOptimizer) and optimizer.built:
        return optimizer.pack_genome, optimizer.genome_variables()
    return None, ()


def _per_example(loss):
    """`loss` as a function of `(y_true, y_pred)` giving one value per example."""
    import keras

    if isinstance(loss, keras.losses.Loss):
        return loss.call
    return loss


def _training_functions(model, optimizer, loss, metric, held_out, genome_slots):
    """`start`, `step`, `observe` and `finish`: one individual's training as pure functions.

    * `start(genome, trainable, non_trainable, optimizer_variables) -> state`
      puts the genome (the packed tags, activity and rates), or a fixed
      hyperparameter vector, into the optimizer's variables;
    * `step(state, indices, weight, scale, x, y) -> state` trains on the
      examples `x[indices]` (one batch) with the loss times `scale`, and adds
      `weight` times the batch's summed (unscaled) loss and metric (of the
      predictions before the update, as `fit`'s running metrics are);
    * `observe(state, x_eval, y_eval) -> state` keeps the least held-out
      loss seen at an epoch's end (a no-op without held-out data);
    * `finish(state, x_eval, y_eval) -> [metric, loss, finite, best loss]`:
      on the held-out data, or the last epoch's running values.
    """
    measure = _measure_function(metric)
    return (
        _start_function(genome_slots),
        _step_function(model, optimizer, loss, measure),
        _observe_function(model, loss, measure, held_out),
        _finish_function(model, loss, measure, held_out),
    )


def _measure_function(metric):
    """The per-example metric: right (1) or wrong (0), or the squared error."""
    import jax.numpy as jnp

    def measure(predictions, y):
        """Per-example metric: right (1) or wrong (0), or the squared error."""
        if metric == "accuracy":
            return (jnp.argmax(predictions, axis=-1) == y).astype("float32")
        error = jnp.square(predictions - jnp.reshape(y, predictions.shape))
        return jnp.mean(jnp.reshape(error, (error.shape[0], -1)), axis=-1)

    return measure


def _start_function(genome_slots):
    """`start`: the training's first state, the candidate put into the optimizer's variables."""
    import jax.numpy as jnp

    def start(genome, trainable, non_trainable, optimizer_variables):
        optimizer_variables = list(optimizer_variables)
        for slot, value in zip(genome_slots, genome):
            # a fixed hyperparameter vector fills every tensor's row; genome parts fit as they are
            optimizer_variables[slot] = jnp.broadcast_to(
                value, jnp.shape(optimizer_variables[slot])
            )
        zero, best = jnp.zeros((), "float32"), jnp.full((), jnp.inf, "float32")
        return (
            trainable,
            non_trainable,
            optimizer_variables,
            jnp.ones((), bool),
            zero,
            zero,
            zero,
            best,
        )

    return start


def _step_function(model, optimizer, loss, measure):
    """`step`: one batch's update, and its weighted loss and metric added to the sums."""
    import jax
    import jax.numpy as jnp

    def loss_function(trainable, non_trainable, x, y):
        predictions, non_trainable = model.stateless_call(
            trainable, non_trainable, x, training=True
        )
        return jnp.mean(loss(y, predictions)), (predictions, non_trainable)

    gradient = jax.value_and_grad(loss_function, has_aux=True)

    def step(state, indices, weight, scale, x, y):
        trainable, non_trainable, optimizer_variables, finite, metric_sum, loss_sum, seen, best = (
            state
        )
        x, y = x[indices], y[indices]
        (value, (predictions, non_trainable)), grads = gradient(trainable, non_trainable, x, y)
        grads = [g * scale for g in grads]  # the gradient of the scaled loss
        trainable, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        count = weight.astype("float32") * y.shape[0]
        return (
            trainable,
            non_trainable,
            optimizer_variables,
            finite & jnp.isfinite(value),
            metric_sum + weight * jnp.sum(measure(predictions, y)),
            loss_sum + count * value,
            seen + count,
            best,
        )

    return step


def _observe_function(model, loss, measure, held_out):
    """`observe`: the least held-out loss at an epoch's end, kept in the state."""
    import jax.numpy as jnp

    def observe(state, x_eval, y_eval):
        if not held_out:
            return state
        trainable, non_trainable = state[:2]
        _, loss_sum, seen = _held_out_sums(
            model, trainable, non_trainable, x_eval, y_eval, loss, measure
        )
        return (*state[:-1], jnp.fmin(state[-1], loss_sum / seen))

    return observe


def _finish_function(model, loss, measure, held_out):
    """`finish`: the metric, the loss and finiteness, on held-out data or the running sums."""
    import jax.numpy as jnp

    def finish(state, x_eval, y_eval):
        trainable, non_trainable, _, finite, metric_sum, loss_sum, seen, best = state
        if held_out:
            metric_sum, loss_sum, seen = _held_out_sums(
                model, trainable, non_trainable, x_eval, y_eval, loss, measure
            )
        seen = jnp.maximum(seen, 1.0)
        final = loss_sum / seen
        best = jnp.fmin(best, final) if held_out else final
        return jnp.stack([metric_sum / seen, final, finite.astype("float32"), best])

    return finish


def _held_out_sums(model, trainable, non_trainable, x_eval, y_eval, loss, measure):
    """Summed metric and loss over the held-out data, and its size, in chunks."""
    import jax
    import jax.numpy as jnp

    count = x_eval.shape[0]
    steps = math.ceil(count / _EVAL_BATCH)
    padded = steps * _EVAL_BATCH
    index = jnp.minimum(jnp.arange(padded), count - 1).reshape(steps, _EVAL_BATCH)
    valid = (jnp.arange(padded) < count).reshape(steps, _EVAL_BATCH).astype("float32")

    def add(totals, chunk):
        indices, keep = chunk
        x, y = x_eval[indices], y_eval[indices]
        predictions, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return (
            totals[0] + jnp.sum(measure(predictions, y) * keep),
            totals[1] + jnp.sum(loss(y, predictions) * keep),
        ), None

    zero = jnp.zeros((), "float32")
    (metric_sum, loss_sum), _ = jax.lax.scan(add, (zero, zero), (index, valid))
    return metric_sum, loss_sum, jnp.asarray(count, "float32")
