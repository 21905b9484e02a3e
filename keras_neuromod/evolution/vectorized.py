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
accelerator both are batched and scanned. Genomes of different sizes share one program: the optimizer pads
every genome to `task.max_regulatory` regulatory proteins.

A diverging individual (a loss that turns NaN or Inf at any step) scores
`task.worst_fitness`; its batch-mates, whose computations are independent of
it, keep theirs.

This needs Keras's JAX backend in the evaluating process (`KERAS_BACKEND=jax`);
the ``"vectorized"`` backend of `keras_neuromod.evolution.evolve` starts such
processes from a program that uses TensorFlow.
"""

import math

import numpy as np

from keras_neuromod import _fields
from keras_neuromod.evolution.batched import evaluate_population
from keras_neuromod.evolution.fitness import TaskData

__all__ = ["VectorizedEvaluator", "DEFAULT_WIDTH", "batches_by_default"]

# Individuals per batched call. 16 fills a 2-core CPU on the digits MLP
# (benchmarks/evolution_throughput.py) while padding a population of 20 or 50
# by little.
DEFAULT_WIDTH = 16

# Test examples classified per step of the val_accuracy computation.
_TEST_BATCH = 256


def _convolutional(model):
    return any(len(v.shape) > 2 for v in model.trainable_variables)


def batches_by_default(model, platform):
    """Whether `vmap=None` batches this model on this platform ('cpu', 'gpu', 'tpu')."""
    return platform != "cpu" or not _convolutional(model)


def scans_by_default(model, platform):
    """Whether `scan=None` compiles this model's whole training as one loop."""
    return platform != "cpu" or not _convolutional(model)


class VectorizedEvaluator(TaskData):
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
        import keras

        if keras.backend.backend() != "jax":
            raise RuntimeError(
                "VectorizedEvaluator trains with JAX and needs Keras's JAX backend in this "
                f"process (KERAS_BACKEND=jax); this one runs {keras.backend.backend()!r}. "
                "evolve(..., backend='vectorized') starts JAX workers for you."
            )
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

    def evaluate(self, genome, architecture, seed):
        """The fitness of one genome (as `Evaluator.evaluate`)."""
        return self.evaluate_many([genome], architecture, seed)[0]


class _Program:
    """One architecture's compiled training, and the state it starts from."""

    def __init__(self, evaluator, architecture):
        import jax

        from keras_neuromod.agrn import pack

        self.evaluator = evaluator
        self.architecture = architecture
        model, optimizer = evaluator.build_trainer(architecture)
        self.model = model
        self.pack = lambda genome: pack(genome, optimizer._capacity)
        variables = list(optimizer.variables)
        genome_slots = [
            next(i for i, v in enumerate(variables) if v is target)
            for target in (optimizer._grn_tags, optimizer._grn_active, optimizer._grn_rates)
        ]
        optimizer.reset_state()
        self.optimizer_start = [v.value for v in variables]
        platform = jax.default_backend()
        self.batched = (batches_by_default(model, platform) if evaluator.vmap is None
                        else bool(evaluator.vmap))
        self.scanned = (scans_by_default(model, platform) if evaluator.scan is None
                        else bool(evaluator.scan))
        self.data = tuple(jax.device_put(a) for a in (evaluator.x, evaluator.y,
                                                       evaluator.x_test, evaluator.y_test))
        parts = _training_functions(model, optimizer, evaluator.task, genome_slots)
        self.start, self.step, self.finish = parts

        def batch(function, shared):
            return jax.jit(jax.vmap(function, in_axes=(0,) + (None,) * shared)
                           if self.batched else function)

        if self.scanned:
            self.train = batch(self._whole_training, 6)
        else:
            self.start_compiled = batch(self.start, 3)
            self.step_compiled = batch(self.step, 4)
            self.finish_compiled = batch(self.finish, 2)

    def _whole_training(self, genome, trainable, non_trainable, optimizer_variables, orders, weights, data):
        import jax
        import jax.numpy as jnp

        x, y, x_test, y_test = data
        batch = self.evaluator.task.batch_size
        full, remainder = divmod(orders.shape[1], batch)
        state = self.start(genome, trainable, non_trainable, optimizer_variables)

        def epoch(state, inputs):
            order, weight = inputs

            def scanned(state, indices):
                return self.step(state, indices, weight, x, y), None

            state, _ = jax.lax.scan(scanned, state, jnp.reshape(order[: full * batch], (full, batch)))
            if remainder:
                state, _ = scanned(state, order[full * batch:])
            return state, None

        state, _ = jax.lax.scan(epoch, state, (orders, weights))
        return self.finish(state, x_test, y_test)

    def run(self, genomes, seed):
        import jax.numpy as jnp

        evaluator = self.evaluator
        task = evaluator.task
        self.model.set_weights(evaluator.initial_weights(self.architecture, seed))
        trainable = [v.value for v in self.model.trainable_variables]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        orders = evaluator.data_order(seed)
        # the accuracy counted is that of the last epoch (as `fit` reports it)
        weights = np.zeros(len(orders), np.int32)
        weights[-1] = 1
        packed = [self.pack(g) for g in genomes]
        population = (
            np.stack([p.tags for p in packed]).astype(np.float32),
            np.stack([p.active for p in packed]).astype(np.float32),
            np.stack([[p.beta, p.delta] for p in packed]).astype(np.float32),
        )
        x, y, x_test, y_test = self.data
        batch = task.batch_size

        def train(genome):
            if self.scanned:
                return self.train(genome, trainable, non_trainable, self.optimizer_start,
                                  jnp.asarray(orders), jnp.asarray(weights), self.data)
            state = self.start_compiled(genome, trainable, non_trainable, self.optimizer_start)
            for order, weight in zip(orders, weights):
                for first in range(0, len(order), batch):
                    state = self.step_compiled(state, order[first:first + batch], weight, x, y)
            return self.finish_compiled(state, x_test, y_test)

        if self.batched:
            width = evaluator.width
            call = train
        else:
            width = 1

            def call(group):
                return jnp.reshape(train(tuple(part[0] for part in group)), (1,))

        values = evaluate_population(call, population, width, task.worst_fitness)
        return [float(v) for v in values]


def _training_functions(model, optimizer, task, genome_slots):
    """`start`, `step` and `finish`: one individual's training as pure functions.

    * `start(genome, trainable, non_trainable, optimizer_variables) -> state`
      puts the genome (the packed tags, activity and rates) into the
      optimizer's variables;
    * `step(state, indices, weight, x, y) -> state` trains on the examples
      `x[indices]` (one batch) and adds `weight` times the number it
      classified right (before the update, as `fit`'s accuracy does);
    * `finish(state, x_test, y_test) -> fitness`: the final-epoch training
      accuracy (or the test accuracy, by `task.metric`), NaN if the loss was
      ever not finite.
    """
    import jax
    import jax.numpy as jnp
    import keras

    def loss_function(trainable, non_trainable, x, y):
        predictions, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        # the model outputs logits (`TaskData.build_trainer`), as in `fit`
        loss = jnp.mean(keras.losses.sparse_categorical_crossentropy(y, predictions, from_logits=True))
        return loss, (predictions, non_trainable)

    gradient = jax.value_and_grad(loss_function, has_aux=True)

    def start(genome, trainable, non_trainable, optimizer_variables):
        optimizer_variables = list(optimizer_variables)
        for slot, value in zip(genome_slots, genome):
            optimizer_variables[slot] = value
        counters = (jnp.ones((), bool), jnp.zeros((), "int32"), jnp.zeros((), "int32"))
        return (trainable, non_trainable, optimizer_variables) + counters

    def step(state, indices, weight, x, y):
        trainable, non_trainable, optimizer_variables, finite, correct, seen = state
        x, y = x[indices], y[indices]
        (loss, (predictions, non_trainable)), grads = gradient(trainable, non_trainable, x, y)
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
        right = jnp.sum((jnp.argmax(predictions, axis=-1) == y).astype("int32"))
        return (trainable, non_trainable, optimizer_variables, finite & jnp.isfinite(loss),
                correct + weight * right, seen + weight * y.shape[0])

    def finish(state, x_test, y_test):
        trainable, non_trainable, _, finite, correct, seen = state
        if task.metric == "val_accuracy":
            fitness = _test_accuracy(model, trainable, non_trainable, x_test, y_test)
        else:
            fitness = correct / jnp.maximum(seen, 1)
        return jnp.where(finite, fitness.astype("float32"), jnp.nan)

    return start, step, finish


def _test_accuracy(model, trainable, non_trainable, x_test, y_test):
    import jax
    import jax.numpy as jnp

    count = x_test.shape[0]
    steps = math.ceil(count / _TEST_BATCH)
    padded = steps * _TEST_BATCH
    index = jnp.minimum(jnp.arange(padded), count - 1).reshape(steps, _TEST_BATCH)
    valid = (jnp.arange(padded) < count).reshape(steps, _TEST_BATCH)

    def classify(total, batch):
        indices, keep = batch
        predictions, _ = model.stateless_call(trainable, non_trainable, x_test[indices], training=False)
        right = (jnp.argmax(predictions, axis=-1) == y_test[indices]) & keep
        return total + jnp.sum(right), None

    total, _ = jax.lax.scan(classify, jnp.zeros((), "int32"), (index, valid))
    return total / count
