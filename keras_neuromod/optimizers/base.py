"""The machinery shared by the neuromodulated optimizers.

At every update step a `NeuromodulatedOptimizer`

1. gathers the AGRN inputs of every trainable tensor, as the agent's input
   set says (`keras_neuromod.inputs`): the core paper's 13 (its layer's
   location and relative size, mean and standard deviation of |w| and |g|,
   the same six for the same kind of tensor in the next layer with weights,
   and a constant 1.0), or the 18 of the sensing set (log-scaled statistics,
   the gradient-momentum cosine, the gradient's trend, the tensor's kind,
   time and progress, each tensor on its own),
2. runs one AGRN copy per tensor, all copies in one batched computation that
   shares the agent's genome (`keras_neuromod.agrn`),
3. turns each pair of output proteins into one hyperparameter of that tensor,
   on the range and scale the agent's output set gives it
   (`keras_neuromod.outputs`),
4. and applies the subclass's update rule with those per-tensor values.

A tensor's values depend on its own gradient and on the next layer's only,
never on the rest of the model. The tensors are therefore modulated in
blocks of whole consecutive layers (at least `MODULATION_BLOCK_SIZE` tensors
each): backpropagation finishes the last block's gradients first, and that
block's updates can run while the gradients of the layers before it are
still being computed, as a plain optimizer's updates do. Within a block,
everything but the update rule is done in a number of operations that does
not grow with the number of tensors (the statistics of tensors of one shape
are taken together, the per-tensor values are computed as columns). The
values are the same whatever the blocks: every AGRN copy is computed on its
own row.

The work is done once per step in `_backend_update_step`, which then calls the
parent's, so each backend's own path (TensorFlow's distribution updates, JAX's
stateless apply, gradient accumulation, EMA) still runs.
"""

import warnings

import keras
import numpy as np
from keras import ops

from keras_neuromod import _fields
from keras_neuromod import _keras_compat
from keras_neuromod import agrn
from keras_neuromod import bases
from keras_neuromod import inputs as input_sets
from keras_neuromod import outputs as output_sets
from keras_neuromod.bases import INPUT_NAMES
from keras_neuromod.bases import N_INPUTS
from keras_neuromod.zoo import resolve_agent

__all__ = ["NeuromodulatedOptimizer", "N_INPUTS", "INPUT_NAMES", "resolve_agent"]


def _tensor_kind(path, shape):
    """'bias' for biases and other vectors, 'kernel' for everything else."""
    name = path.rsplit("/", 1)[-1]
    return "bias" if ("bias" in name or len(shape) <= 1) else "kernel"


def _layer_layout(variables):
    """Static AGRN inputs and next-layer indices, from the variables' paths.

    Layers with weights are numbered 0..L-1 in the order their first variable
    appears (the model's order). Returns `(static, next_index, kinds, layers,
    layer_of)`: `static` is float32 [n, 2] (location, relative size);
    `next_index[i]` is the index of the tensor of the same kind in the next
    layer with weights, or -1; `kinds[i]` is "kernel" or "bias"; `layers` are
    the layers' names in order and `layer_of[i]` the layer number of tensor i.
    """
    layers, layer_of, kinds = [], [], []
    sizes = {}
    for variable in variables:
        path = getattr(variable, "path", None) or str(variable.name)
        layer = path.rsplit("/", 1)[0] if "/" in path else path
        if layer not in sizes:
            layers.append(layer)
            sizes[layer] = 0
        sizes[layer] += int(np.prod(variable.shape))
        layer_of.append(layers.index(layer))
        kinds.append(_tensor_kind(path, variable.shape))
    count = len(layers)
    largest = max(sizes.values()) if sizes else 1
    static = np.zeros((len(variables), 2), np.float32)
    next_index = np.full(len(variables), -1, np.int64)
    for i, (layer, kind) in enumerate(zip(layer_of, kinds)):
        static[i, 0] = layer / (count - 1) if count > 1 else 0.0
        static[i, 1] = sizes[layers[layer]] / largest if largest else 0.0
        for j, (other, other_kind) in enumerate(zip(layer_of, kinds)):
            if other == layer + 1 and other_kind == kind:
                next_index[i] = j
                break
    return static, next_index, kinds, layers, layer_of


# Tensors are modulated in blocks of whole layers holding at least this many
# tensors (the last block may hold fewer); see the module docstring.
MODULATION_BLOCK_SIZE = 32


def _layer_blocks(layer_of, size):
    """Contiguous `(start, stop)` index ranges of whole layers, >= `size` tensors each.

    A range ends only where the layer changes, and only once it holds at least
    `size` tensors; the last range takes what is left. No tensors, no ranges.
    """
    blocks, start = [], 0
    for index in range(1, len(layer_of)):
        if index - start >= size and layer_of[index] != layer_of[index - 1]:
            blocks.append((start, index))
            start = index
    if len(layer_of):
        blocks.append((start, len(layer_of)))
    return blocks


def _block_plans(blocks, next_index):
    """Where each block finds its gradient statistics, as static indices.

    A block's own rows and its tensors' next-layer rows come from the
    statistics of its own block and of the (later) blocks holding those next
    tensors, concatenated in block order. Returns one dict per block:
    `sources` (block numbers to concatenate), `own` (the rows of the block's
    tensors in that concatenation) and `next` (their next tensors' rows, 0
    where there is none; `has_next` masks them).
    """
    block_of = np.zeros(len(next_index), np.int64)
    for number, (start, stop) in enumerate(blocks):
        block_of[start:stop] = number
    plans = []
    for number, (start, stop) in enumerate(blocks):
        following = next_index[start:stop]
        sources = sorted({number} | {int(block_of[j]) for j in following if j >= 0})
        offset, first = {}, 0
        for source in sources:
            offset[source] = first
            first += blocks[source][1] - blocks[source][0]

        def row(j, offset=offset):
            return offset[int(block_of[j])] + j - blocks[int(block_of[j])][0]

        plans.append(
            {
                "sources": sources,
                "own": np.array([row(j) for j in range(start, stop)], np.int64),
                "next": np.array([row(j) if j >= 0 else 0 for j in following], np.int64),
            }
        )
    return plans


def _sanitise(value):
    """Clip to [0, 1]; NaN and Inf become 1 (this project's choice: the paper is silent)."""
    return ops.where(ops.isfinite(value), ops.clip(value, 0.0, 1.0), 1.0)


def _dense_part(tensor):
    """The nonzero part of a sparse gradient with duplicate indices summed.

    A TensorFlow `IndexedSlices` or a JAX `BCOO` may name a row more than once
    (an embedding row looked up twice in a batch, or gradients all-reduced
    across replicas); its dense value is the sum. The statistics need sums of
    |x| and x^2 of that dense value, which the unique rows alone give, without
    densifying the whole table. Dense tensors are returned as they are.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if isinstance(tensor, tf.IndexedSlices):
            unique, position = tf.unique(tensor.indices)
            return tf.math.unsorted_segment_sum(tensor.values, position, tf.shape(unique)[0])
    elif backend == "jax":
        from jax.experimental import sparse

        if isinstance(tensor, sparse.BCOO):
            return tensor.sum_duplicates(nse=tensor.nse).data
    return to_dense(tensor)


def to_dense(tensor):
    """The dense value of a sparse gradient (repeated rows summed)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if isinstance(tensor, tf.IndexedSlices):
            return tf.convert_to_tensor(tensor)
    elif backend == "jax":
        from jax.experimental import sparse

        if isinstance(tensor, sparse.JAXSparse):
            return tensor.todense()
    return tensor


# Dense tensors with at most this many elements are reduced in groups (see
# `_abs_sums`); larger ones keep reductions of their own.
GROUPED_STATISTICS_MAX_SIZE = 1 << 16


def _static_shape(tensor):
    """The shape of a tensor if it is known at trace time, else None."""
    shape = tuple(tensor.shape)
    return None if any(dim is None for dim in shape) else shape


def _is_sparse(tensor):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return isinstance(tensor, tf.IndexedSlices)
    if backend == "jax":
        from jax.experimental import sparse

        return isinstance(tensor, sparse.JAXSparse)
    return False


def _stacked_sums(stacked):
    """`[sum |x|, sum x^2]` of every entry along the first axis, as float32 [k, 2]."""
    axes = tuple(range(1, len(stacked.shape)))
    return ops.stack(
        [ops.sum(ops.abs(stacked), axis=axes), ops.sum(ops.square(stacked), axis=axes)], axis=1
    )


def _stacked_pair_sums(gradients, momentums):
    """`[sum |g|, sum g m, sum g^2, sum m^2]` along the first axis, as float32 [k, 4]."""
    axes = tuple(range(1, len(gradients.shape)))
    return ops.stack(
        [
            ops.sum(ops.abs(gradients), axis=axes),
            ops.sum(gradients * momentums, axis=axes),
            ops.sum(ops.square(gradients), axis=axes),
            ops.sum(ops.square(momentums), axis=axes),
        ],
        axis=1,
    )


def _gradient_momentum_sums(gradients, momentums):
    """`[sum |g|, sum g m, sum g^2, sum m^2]` of every tensor, as one float32 [n, 4] tensor.

    The sensing input set's gradient statistics: `m` is the tensor's momentum
    before this step (None entries, or no momentums at all, give 0 in its
    columns). Grouped by shape as `_abs_sums` is; a sparse gradient is
    densified (its momentum is dense).
    """
    if momentums is None:
        sums = _abs_sums(gradients)
        zero = ops.zeros_like(sums[:, :1])
        return ops.concatenate([sums[:, :1], zero, sums[:, 1:], zero], axis=1)
    groups, parts, order = {}, [], []
    for index, (gradient, momentum) in enumerate(zip(gradients, momentums)):
        shape = None if gradient is None or _is_sparse(gradient) else _static_shape(gradient)
        if shape is not None and int(np.prod(shape)) <= GROUPED_STATISTICS_MAX_SIZE:
            groups.setdefault(shape, []).append(index)
            continue
        if gradient is None:
            parts.append(ops.zeros((1, 4), "float32"))
        else:
            parts.append(
                _stacked_pair_sums(
                    ops.cast(to_dense(gradient), "float32")[None],
                    ops.cast(momentum, "float32")[None],
                )
            )
        order.append(index)
    for indices in groups.values():
        parts.append(
            _stacked_pair_sums(
                ops.stack([ops.cast(gradients[i], "float32") for i in indices]),
                ops.stack([ops.cast(momentums[i], "float32") for i in indices]),
            )
        )
        order.extend(indices)
    sums = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)
    if order == sorted(order):
        return sums
    return ops.take(sums, np.argsort(np.asarray(order, np.int64)).astype("int32"), axis=0)


def _abs_sums(tensors):
    """`[sum |x|, sum x^2]` of every tensor, as one float32 [n, 2] tensor.

    The operations dispatched grow with the number of distinct shapes among
    the tensors, not with the number of tensors: dense tensors of up to
    `GROUPED_STATISTICS_MAX_SIZE` elements are stacked with the others of the
    same shape, and each stack is reduced at once (per entry). Larger
    tensors, sparse gradients (the nonzero part of their dense value,
    `_dense_part`) and tensors of unknown shape are reduced on their own, so
    that a large tensor keeps its multithreaded reduction and is not copied.
    (A single segment sum over all tensors concatenated, which also dispatches
    few operations, runs single-threaded on the CPU and costs more than the
    operations it saves.) A `None` entry (a tensor without a gradient this
    step) has sums 0. The rows are in the order of `tensors`.
    """
    groups = {}  # shape -> indices of the tensors stacked together
    parts, order = [], []
    for index, tensor in enumerate(tensors):
        shape = None if tensor is None or _is_sparse(tensor) else _static_shape(tensor)
        if shape is not None and int(np.prod(shape)) <= GROUPED_STATISTICS_MAX_SIZE:
            groups.setdefault(shape, []).append(index)
            continue
        if tensor is None:
            parts.append(ops.zeros((1, 2), "float32"))
        else:
            parts.append(_stacked_sums(ops.cast(_dense_part(tensor), "float32")[None]))
        order.append(index)
    for indices in groups.values():
        parts.append(_stacked_sums(ops.stack([ops.cast(tensors[i], "float32") for i in indices])))
        order.extend(indices)
    sums = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)
    if order == sorted(order):
        return sums
    return ops.take(sums, np.argsort(np.asarray(order, np.int64)).astype("int32"), axis=0)


def _abs_stats(tensors, sizes):
    """Mean and standard deviation of |x| of every tensor, as one [n, 2] tensor.

    The sums are taken by `_abs_sums` (in few operations whatever the number
    of tensors); the rest is vectorised over tensors. A `None` entry (a tensor
    without a gradient this step) has statistics 0.
    """
    sums = _abs_sums(tensors)
    sizes = ops.convert_to_tensor(np.asarray(sizes, np.float32))
    mean = sums[:, 0] / sizes
    std = ops.sqrt(ops.maximum(sums[:, 1] / sizes - ops.square(mean), 0.0))
    return _sanitise(ops.stack([mean, std], axis=1))


def _sensing_gradient_inputs(sums, sizes, weight_mean, trend, first):
    """The sensing set's gradient inputs of a block, and its new trend state.

    Args:
        sums: float32 [k, 4] from `_gradient_momentum_sums`.
        sizes: the tensors' element counts.
        weight_mean: float32 [k]: mean |w|.
        trend: float32 [k, 2]: the fast and slow running means of log10
            mean |g| before this step.
        first: a boolean scalar, true at the first update (the running means
            start at this step's value).

    Returns:
        `(inputs, trend)`: float32 [k, 4] (log mean |g|, log gradient to
        weight, gradient-momentum cosine, gradient trend) and the new [k, 2]
        running means.
    """
    sizes = ops.convert_to_tensor(np.asarray(sizes, np.float32))
    gradient_mean = sums[:, 0] / sizes
    ratio = gradient_mean / ops.maximum(weight_mean, 1e-30)
    norms = ops.sqrt(sums[:, 2] * sums[:, 3])
    cosine = ops.where(norms > 0, sums[:, 1] / ops.where(norms > 0, norms, 1.0), 0.0)
    cosine = ops.where(ops.isfinite(cosine), ops.clip(cosine, -1.0, 1.0), 0.0)
    logged = ops.clip(ops.log(ops.maximum(gradient_mean, 1e-12)) / np.log(10.0), -12.0, 2.0)
    logged = ops.where(ops.isfinite(gradient_mean), logged, 2.0)
    rates = np.asarray(input_sets.TREND_RATES, np.float32)
    running = trend + rates * (logged[:, None] - trend)
    running = ops.where(first, ops.broadcast_to(logged[:, None], ops.shape(trend)), running)
    slope = (running[:, 0] - running[:, 1]) / (2.0 * input_sets.TREND_DECADES)
    columns = [
        input_sets.log_unit(gradient_mean, input_sets.GRADIENT_DECADES),
        input_sets.log_unit(ratio, input_sets.RATIO_DECADES),
        (cosine + 1.0) / 2.0,
        ops.clip(0.5 + slope, 0.0, 1.0),
    ]
    return ops.stack(columns, axis=1), running


def _time_inputs(updates, horizon):
    """The sensing set's time inputs (the same for every tensor): float32 [7].

    `tanh(t / tau)` for each of `TIME_CONSTANTS`, then the progress `t /
    horizon` and the flag that a horizon is known (both 0 without one), where
    `t` is this update's number (1 at the first).
    """
    t = ops.cast(updates, "float32") + 1.0
    known = ops.cast(horizon > 0, "float32")
    progress = known * ops.clip(t / ops.maximum(horizon, 1.0), 0.0, 1.0)
    taus = np.asarray(input_sets.TIME_CONSTANTS, np.float32)
    return ops.concatenate([ops.tanh(t / taus), ops.stack([progress, known])], axis=0)


def _constant(value):
    """An initializer that fills a variable with `value` (as float32 unless told a dtype)."""
    value = np.asarray(value, np.float32)
    return lambda shape, dtype=None: ops.convert_to_tensor(value, dtype or "float32")


class NeuromodulatedOptimizer(keras.optimizers.Optimizer):
    """Base class of optimizers whose hyperparameters an AGRN sets per tensor.

    Subclasses declare `HYPERPARAMETERS` (names, in output-protein order),
    `OUTPUT_SETS` (output set name -> hyperparameter name -> `(lo, hi,
    scale)`: the default range and the scale of each hyperparameter in each
    set of `keras_neuromod.outputs` the base offers) and `BOUNDS`,
    create their own state in `build` (after calling the parent's, as Keras's
    optimizers do) and implement `update_step(gradient, variable,
    learning_rate)` reading `self._modulated(variable)`. A subclass whose
    update derives scalars from the hyperparameters (a step size, `1 - beta`)
    computes them for a block of tensors at once in `_step_table`, so that
    the step dispatches no operation per tensor beyond the update itself, and
    writes state derived there in `_write_step_state`. Registered with
    `keras_neuromod.bases.register(name)`, a subclass is the optimizer of the
    agents whose base is `name`.

    Args:
        agent: the AGRN genome: a `Genome`, a genome or agent dict, the path of a
            genome or agent JSON file, or the name of a zoo agent.
        ranges: dict mapping hyperparameter names to `(lo, hi)`; the ones left
            out keep the output set's defaults, and every range keeps the
            output set's scale. `lo == hi` fixes a hyperparameter. None takes
            a zoo agent's own ranges, or the defaults.
        warmup_steps: AGRN steps run with inputs at 0 before the first update
            (None: the agent's setting, or 25).
        grn_steps_per_update: AGRN steps run at every update after the inputs
            are written (None: the agent's setting, or 1).
        max_regulatory: pad the genome to this many regulatory proteins, so
            that genomes up to that size can be swapped in with `set_genome`
            without a retrace. Defaults to the agent's own count.
        learning_rate: a multiplier (float or schedule) applied to the
            learning rate the agent chooses. Defaults to 1.0, so that
            callbacks such as `ReduceLROnPlateau` still work.
        inputs: the agent's input set (`keras_neuromod.inputs`: ``"paper"``
            or ``"sensing"``). None: the agent's own setting, else the set
            with as many inputs as the genome (an agent file without the
            setting reads as ``"paper"``).
        outputs: the agent's output set (`keras_neuromod.outputs`): each
            hyperparameter's default range and scale. ``"paper"``: Nm-Adam
            learning_rate (1e-5, 0.1) log, beta_1 (0, 0.999) linear, beta_2
            (0.5, 0.9999) linear, epsilon (1e-8, 1) log; Nm-SGD learning_rate
            (1e-4, 1) log, momentum (0, 0.99) linear. ``"centred"``, whose
            middles are Keras's defaults: Nm-Adam learning_rate (1e-5, 0.1)
            log, beta_1 (0, 0.99) and beta_2 (0.9, 0.99999) complement_log,
            epsilon (1e-10, 1e-4) log, so that a silent agent is Keras's
            `Adam()`; Nm-SGD learning_rate (1e-4, 1) log, momentum (0, 0.99)
            complement_log, so that a silent agent is `SGD(0.01,
            momentum=0.9)`. ``"narrow"``: ``"centred"`` with the learning
            rate within a decade of the default (Nm-Adam (1e-4, 1e-2), Nm-SGD
            (1e-3, 0.1)). None: the agent's own setting, else ``"paper"``
            for the paper's input set and ``"centred"`` for any other.
        horizon: the updates the training will make, where it is known when
            the optimizer is made (as a decay schedule's `decay_steps`): an
            agent of the ``"sensing"`` set reads its progress `t / horizon`.
            None: unknown until `set_horizon` or the `TrainingHorizon`
            callback tells it. Other input sets ignore it.
        **kwargs: Keras's base optimizer options (`clipnorm`, `weight_decay`,
            `gradient_accumulation_steps`, `use_ema`, ...).
    """

    HYPERPARAMETERS = ()
    OUTPUT_SETS = {}
    BOUNDS = {}
    # +1 where the momentum follows the gradient (Adam's mean of g), -1 where it is
    # a velocity against it (SGD's -lr g + momentum m): the cosine input then reads
    # above 0.5 for a gradient that keeps its direction, whatever the base.
    MOMENTUM_SIGN = 1.0

    def __init__(
        self,
        agent,
        ranges=None,
        warmup_steps=None,
        grn_steps_per_update=None,
        max_regulatory=None,
        learning_rate=1.0,
        inputs=None,
        outputs=None,
        horizon=None,
        name=None,
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.horizon = None if horizon is None else _fields.integer(horizon, "horizon", minimum=1)
        self.set_horizon(self.horizon)
        self._warned_untold = False
        genome, evolved_with = resolve_agent(agent)
        # an agent's own ranges and settings apply unless given here
        if ranges is None:
            ranges = evolved_with.get("ranges")
        if warmup_steps is None:
            warmup_steps = evolved_with.get("warmup_steps", 25)
        if grn_steps_per_update is None:
            grn_steps_per_update = evolved_with.get("grn_steps_per_update", 1)
        if inputs is None:
            inputs = evolved_with.get("inputs") or input_sets.for_genome(genome.n_inputs)
        self.input_set = input_sets.get(inputs)
        self._check_genome_shape(genome)
        if outputs is None:
            outputs = evolved_with.get("outputs")
        base = bases.Base.of(type(self))
        self.output_set = output_sets.get(base.resolve_outputs(outputs, self.input_set.name))
        self.scales = base.scales(self.output_set.name)
        self.ranges = self._check_ranges(ranges)
        self.warmup_steps, self.grn_steps_per_update = self._check_settings(
            warmup_steps, grn_steps_per_update
        )
        self._hold_genome(genome, max_regulatory)

    def _check_genome_shape(self, genome):
        """Raise unless `genome` reads the input set and has two outputs per hyperparameter."""
        n_inputs, n_outputs = self.input_set.size, 2 * len(self.HYPERPARAMETERS)
        if genome.n_inputs != n_inputs or genome.n_outputs != n_outputs:
            made_for = [
                base.optimizer.__name__
                for base in bases.registered().values()
                if base.n_outputs == genome.n_outputs
            ]
            raise ValueError(
                f"{type(self).__name__} needs an agent with {n_inputs} inputs (the "
                f"{self.input_set.name!r} input set) and {n_outputs} outputs (two output "
                f"proteins for each of {list(self.HYPERPARAMETERS)}); this one has "
                f"{genome.n_inputs} inputs and {genome.n_outputs} outputs"
                + (f", so it was made for {' or '.join(made_for)}." if made_for else ".")
            )

    def _hold_genome(self, genome, max_regulatory):
        """Keep `genome`, packed with room for `max_regulatory` regulatory proteins."""
        n_inputs, n_outputs = self.input_set.size, 2 * len(self.HYPERPARAMETERS)
        if max_regulatory is None:
            max_regulatory = genome.n_regulatory
        self.max_regulatory = _fields.integer(max_regulatory, "max_regulatory")
        self._n_inputs = n_inputs
        self._sensing = self.input_set.name == "sensing"
        self._capacity = n_inputs + n_outputs + self.max_regulatory
        self._genome = genome
        self._packed = agrn.pack(genome, self._capacity)
        self._step_values = None

    # -- configuration -----------------------------------------------------

    def _check_ranges(self, ranges):
        return bases.Base.of(type(self)).check_ranges(ranges, outputs=self.output_set.name)

    @staticmethod
    def _check_settings(warmup_steps, grn_steps_per_update):
        return (
            _fields.integer(warmup_steps, "warmup_steps", 0),
            _fields.integer(grn_steps_per_update, "grn_steps_per_update", 1),
        )

    @property
    def genome(self):
        """The agent's `Genome`."""
        return self._genome

    @property
    def grn_capacity(self):
        """The number of proteins the packed genome holds room for.

        Inputs, outputs and `max_regulatory` regulatory proteins: the width of
        the arrays `pack_genome` returns.
        """
        return self._capacity

    def pack_genome(self, genome):
        """`genome` as the values of `genome_variables()`, in their order.

        Writing these values into the variables swaps the agent in, as
        `set_genome` does; a vectorized evaluation writes them into its copy
        of the optimizer state instead.

        Args:
            genome: a `Genome` with this optimizer's inputs and outputs.

        Returns:
            A tuple of numpy arrays: the tags, float32 `[3, grn_capacity]`;
            the activity, float32 `[grn_capacity]`; and `[beta, delta]`,
            float32 `[2]`.
        """
        packed = agrn.pack(genome, self._capacity)
        return packed.tags, packed.active, np.array([packed.beta, packed.delta], np.float32)

    def genome_variables(self):
        """The optimizer variables that hold the packed genome (see `pack_genome`).

        Returns:
            A tuple of three variables (tags, activity, beta and delta), or
            an empty tuple before the optimizer is built.
        """
        if not self.built:
            return ()
        return (self._grn_tags, self._grn_active, self._grn_rates)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "agent": self._genome.to_dict(),
                "ranges": {name: list(pair) for name, pair in self.ranges.items()},
                "warmup_steps": self.warmup_steps,
                "grn_steps_per_update": self.grn_steps_per_update,
                "max_regulatory": self.max_regulatory,
                "inputs": self.input_set.name,
                "outputs": self.output_set.name,
                "horizon": self.horizon,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "outputs" not in config and output_sets.LEGACY in cls.OUTPUT_SETS:
            # a configuration saved before output sets: it mapped with the paper's scales
            config["outputs"] = output_sets.LEGACY
        return super().from_config(config, custom_objects=custom_objects)

    @property
    def updates(self):
        """The AGRN updates made so far (0 before the optimizer is built)."""
        if not self.built:
            return 0
        return int(ops.convert_to_numpy(self._grn_updates))

    @property
    def input_names(self):
        """The names of the AGRN inputs, in the order of `modulation()["inputs"]`."""
        return self.input_set.names

    def set_horizon(self, steps):
        """Tell the agent how many updates the training will make (None or 0: unknown).

        The sensing input set reads the progress `t / steps`; other sets
        ignore it. `keras_neuromod.callbacks.TrainingHorizon` calls this from
        `fit`'s epochs and steps (and restores the optimizer's own `horizon`
        after `fit`); a custom training loop calls it itself. Call it once
        the optimizer is built (`fit` builds it), or before: the value is
        kept until then.
        """
        steps = 0 if steps is None else _fields.integer(steps, "steps", minimum=0)
        self._horizon_steps = steps
        if self.built and self._sensing:
            self._horizon.assign(float(steps))

    def _warn_if_untold(self):
        """Warn once, as the update is first traced, where no horizon was set before it.

        An agent that reads the training's progress trains differently untold
        (its progress and horizon flag read 0); the warning says how to tell it.
        """
        if self._horizon_steps or self._warned_untold:
            return
        if all(lo == hi for lo, hi in self.ranges.values()):
            return  # fixed values: what the agent reads changes nothing
        self._warned_untold = True
        warnings.warn(
            f"{type(self).__name__}'s agent reads the training's progress, but no one told it "
            "how long the training runs, so it trains untold (its progress reads 0). Pass "
            "keras_neuromod.callbacks.TrainingHorizon() to fit, make the optimizer with "
            "horizon=updates, or call optimizer.set_horizon(updates) in a custom loop.",
            stacklevel=2,
        )

    @property
    def horizon_variable(self):
        """The optimizer variable holding the horizon `set_horizon` sets, or None.

        Only the sensing input set reads a horizon, and only a built optimizer
        has the variable; otherwise None.
        """
        return getattr(self, "_horizon", None) if self.built else None

    # -- variables ---------------------------------------------------------

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        static, next_index, kinds, layers, layer_of = _layer_layout(variables)
        self._static_inputs = static
        self._next_index = next_index
        self.tensor_paths = [getattr(v, "path", None) or str(v.name) for v in variables]
        self.tensor_kinds = kinds
        self._sizes = [max(1, int(np.prod(v.shape))) for v in variables]
        self.tensor_layers = [layers[i] for i in layer_of]
        self._blocks = self._modulation_blocks(layer_of)
        self._block_plans = _block_plans(self._blocks, next_index)
        self._add_grn_variables(len(variables))
        if self._sensing:
            self._add_sensing_variables(variables)

    def _add_grn_variables(self, count):
        """Add the packed genome's variables and the AGRN's state, inputs and outputs."""
        packed = self._packed
        n_hp = len(self.HYPERPARAMETERS)
        self._grn_tags = self.add_variable(
            (3, self._capacity), initializer=_constant(packed.tags), name="grn_tags"
        )
        self._grn_active = self.add_variable(
            (self._capacity,), initializer=_constant(packed.active), name="grn_active"
        )
        self._grn_rates = self.add_variable(
            (2,), initializer=_constant([packed.beta, packed.delta]), name="grn_beta_delta"
        )
        self._grn_state = self.add_variable(
            (count, self._capacity), initializer="zeros", name="grn_concentrations"
        )
        self._grn_updates = self.add_variable(
            (), initializer="zeros", dtype="int", name="grn_updates"
        )
        self._grn_inputs = self.add_variable(
            (count, self._n_inputs), initializer="zeros", name="grn_inputs"
        )
        self._grn_hparams = self.add_variable(
            (count, n_hp), initializer="zeros", name="modulated_hyperparameters"
        )

    def _add_sensing_variables(self, variables):
        """Add what the sensing input set reads: each tensor's static inputs, trend and horizon."""
        static = self._static_inputs
        count = len(variables)
        rows = [
            [
                static[i, 0],
                input_sets.log_size(self._sizes[i]),
                *input_sets.kind_flags(self.tensor_paths[i], tuple(v.shape)),
            ]
            for i, v in enumerate(variables)
        ]
        self._sensing_static = np.array(rows, np.float32).reshape(count, 6)
        self._grn_trend = self.add_variable((count, 2), initializer="zeros", name="gradient_trend")
        self._horizon = self.add_variable(
            (),
            initializer=_constant(float(self._horizon_steps)),
            name="horizon",
        )

    def modulation(self):
        """What the AGRN saw and chose at the last update, for every tensor.

        The tensors are those of `tensor_paths`, the hyperparameters those of
        `HYPERPARAMETERS`, in order. Reads three small variables (a device
        sync); under JAX, read it through the model (`model.optimizer`) in a
        callback, so that the training state is synced first.

        Returns:
            None before the optimizer is built; else a dict with `"updates"`
            (int: the AGRN updates so far, 0 before the first), `"inputs"`
            (numpy float32 [tensors, inputs]: the AGRN inputs of the last
            update, named by `input_names`) and `"hyperparameters"` (numpy float32 [tensors,
            hyperparameters]: the values it chose).
        """
        if not self.built:
            return None
        return {
            "updates": int(ops.convert_to_numpy(self._grn_updates)),
            "inputs": ops.convert_to_numpy(self._grn_inputs),
            "hyperparameters": ops.convert_to_numpy(self._grn_hparams),
        }

    def set_genome(self, agent, reset=True):
        """Swap in another agent without rebuilding or retracing.

        An agent that carries its own ranges or AGRN settings (a zoo agent, an
        agent file) brings them along: before the optimizer is built they
        replace the current ones; once it is built (its train step is traced
        with them) an agent whose ranges or settings differ is refused. Pass
        a bare `Genome` (`agent.genome`) to keep this optimizer's. An agent of
        another input set or output set (`keras_neuromod.inputs`,
        `keras_neuromod.outputs`) is always refused: build a new optimizer.

        Args:
            agent: anything `agent` accepts in the constructor.
            reset: also reset the optimizer state (`reset_state`), as for a
                fresh training run.
        """
        genome, evolved_with = resolve_agent(agent)
        if (genome.n_inputs, genome.n_outputs) != (
            self._genome.n_inputs,
            self._genome.n_outputs,
        ):
            raise ValueError(
                f"The new agent has {genome.n_inputs} inputs and {genome.n_outputs} "
                f"outputs; {type(self).__name__} needs {self._genome.n_inputs} and "
                f"{self._genome.n_outputs}."
            )
        packed = agrn.pack(genome, self._capacity)
        self._adopt_settings(evolved_with)
        self._genome, self._packed = genome, packed
        if self.built:
            for variable, value in zip(self.genome_variables(), self.pack_genome(genome)):
                variable.assign(value)
            if reset:
                self.reset_state()

    def _adopt_settings(self, evolved_with):
        """Take an agent's ranges and AGRN settings (`set_genome`), if allowed.

        An agent of another input or output set is refused: the sets fix the
        AGRN's inputs and how its outputs map, which a new optimizer sets up.
        """
        self._check_same_sets(evolved_with)
        wanted = {
            "ranges": self._check_ranges(evolved_with.get("ranges", self.ranges)),
            "warmup_steps": evolved_with.get("warmup_steps", self.warmup_steps),
            "grn_steps_per_update": evolved_with.get(
                "grn_steps_per_update", self.grn_steps_per_update
            ),
        }
        current = {name: getattr(self, name) for name in wanted}
        if wanted == current:
            return
        if self.built:
            differing = sorted(name for name in wanted if wanted[name] != current[name])
            raise ValueError(
                f"The agent was evolved with other {', '.join(differing)} than this "
                f"{type(self).__name__} uses (agent: "
                f"{[wanted[n] for n in differing]}, optimizer: "
                f"{[current[n] for n in differing]}), and a built optimizer cannot "
                "change them without retracing. Build a new optimizer with "
                f"`{type(self).__name__}(agent=...)` to use the agent's, or pass "
                "the bare genome (`agent.genome`) to keep this optimizer's."
            )
        self.ranges = wanted["ranges"]
        self.warmup_steps, self.grn_steps_per_update = self._check_settings(
            wanted["warmup_steps"], wanted["grn_steps_per_update"]
        )

    def _check_same_sets(self, evolved_with):
        """Refuse an agent of another input or output set than this optimizer's."""
        inputs = evolved_with.get("inputs", self.input_set.name)
        if inputs != self.input_set.name:
            raise ValueError(
                f"The agent reads the {inputs!r} input set; this {type(self).__name__} was "
                f"made for {self.input_set.name!r}. Build a new optimizer for it."
            )
        if "outputs" in evolved_with or "inputs" in evolved_with:
            # an agent that names no output set reads the default of its input set
            outputs = bases.Base.of(type(self)).resolve_outputs(evolved_with.get("outputs"), inputs)
        else:
            outputs = self.output_set.name  # a bare genome (or an agent naming neither set)
        if outputs != self.output_set.name:
            raise ValueError(
                f"The agent maps its outputs with the {outputs!r} output set; this "
                f"{type(self).__name__} was made for {self.output_set.name!r}. Build a new "
                f"optimizer for it (`{type(self).__name__}(agent=...)`)."
            )

    def reset_state(self):
        """Zero the step counters, the AGRN state and the update state (eagerly)."""
        if not self.built:
            return
        genome_variables = {id(variable) for variable in self.genome_variables()}
        settings = (_keras_compat.learning_rate_variable(self), getattr(self, "_horizon", None))
        for variable in self.variables:
            if id(variable) in genome_variables:
                continue
            if any(variable is setting for setting in settings):
                continue  # the multiplier and the horizon are settings, not state
            variable.assign(self._reset_value(variable))

    def _reset_value(self, variable):
        return ops.zeros(variable.shape, variable.dtype)

    # -- the modulation ----------------------------------------------------

    def _modulation_blocks(self, layer_of):
        """The `(start, stop)` tensor ranges modulated together (see the module docstring).

        `layer_of[i]` is the layer number of tensor i. A subclass whose values
        need every tensor at once (an ablation taking the mean over the
        network) returns a single range.
        """
        return _layer_blocks(layer_of, MODULATION_BLOCK_SIZE)

    def _step_inputs(self):
        """What every block of this step shares, computed once per step.

        The weight statistics, the AGRN matrices and the AGRN state before this
        step's inputs (reset and warmed up at the first update) depend on no
        gradient, so they are ready before backpropagation ends.
        """
        variables = _keras_compat.tracked_variables(self)
        count = len(variables)
        shared = self._known_inputs(variables)
        weights, updatable = agrn.grn_matrices(
            self._grn_tags,
            self._grn_active,
            self._grn_rates[0],
            self._grn_rates[1],
            self._n_inputs,
            2 * len(self.HYPERPARAMETERS),
        )
        warmup_steps, n_inputs = self.warmup_steps, self._n_inputs

        def warm():
            state = agrn.grn_reset(self._grn_active, n_inputs, count)
            return agrn.grn_run_steps(state, weights, updatable, warmup_steps)

        state = ops.cond(
            ops.equal(self._grn_updates, 0),
            warm,
            lambda: ops.convert_to_tensor(self._grn_state),
        )
        shared.update(weights=weights, updatable=updatable, state=state)
        return shared

    def _known_inputs(self, variables):
        """The inputs known before the gradients (`"known"`), and the sensing set's extras."""
        if not self._sensing:
            known = ops.concatenate(
                [ops.convert_to_tensor(self._static_inputs), _abs_stats(variables, self._sizes)],
                axis=1,
            )
            return {"known": known}
        sizes = ops.convert_to_tensor(np.asarray(self._sizes, np.float32))
        weight_mean = _abs_sums(variables)[:, 0] / sizes
        known = ops.concatenate(
            [
                ops.convert_to_tensor(self._sensing_static),
                input_sets.log_unit(weight_mean, input_sets.WEIGHT_DECADES)[:, None],
            ],
            axis=1,
        )
        self._warn_if_untold()
        return {
            "known": known,
            "weight_mean": weight_mean,
            "time": _time_inputs(self._grn_updates, ops.convert_to_tensor(self._horizon)),
            "first": ops.equal(self._grn_updates, 0),
            "trend": ops.convert_to_tensor(self._grn_trend),
            "new_trend": {},
        }

    def _momentum_variables(self):
        """Each trainable tensor's momentum variable (the sensing set's cosine), or None.

        Subclasses with a momentum return the list, in the order of the
        trainable variables; without one the cosine input reads 0.5.
        """
        return None

    def _gradient_statistics(self, gradients):
        """Per block, what `_block_inputs` reads of the gradients (see `_prepare_step`)."""
        if not self._sensing:
            return [
                _abs_stats(gradients[start:stop], self._sizes[start:stop])
                for start, stop in self._blocks
            ]
        momentums = self._momentum_variables()
        sign = np.array([1.0, self.MOMENTUM_SIGN, 1.0, 1.0], np.float32)
        return [
            _gradient_momentum_sums(
                gradients[start:stop], None if momentums is None else momentums[start:stop]
            )
            * sign
            for start, stop in self._blocks
        ]

    def _modulate(self, block, gradient_stats, shared):
        """Run the AGRN copies of one block of tensors.

        Args:
            block: the block's number in `self._blocks`.
            gradient_stats: per block, float32 [block tensors, 2]: mean and
                standard deviation of |g| (0 for a tensor without a gradient
                this step).
            shared: what `_step_inputs` computed.

        Returns:
            `(hyperparameters, state, inputs)` of the block's tensors: the
            values the update uses, the AGRN state after this step and the
            inputs it read.
        """
        start, stop = self._blocks[block]
        inputs = self._block_inputs(block, gradient_stats, shared)
        state = agrn.grn_set_inputs(shared["state"][start:stop], inputs)
        state = agrn.grn_run_steps(
            state, shared["weights"], shared["updatable"], self.grn_steps_per_update
        )
        n_inputs = self._n_inputs
        outputs = state[:, n_inputs : n_inputs + 2 * len(self.HYPERPARAMETERS)]
        return self._outputs_to_hyperparameters(outputs), state, inputs

    def _block_inputs(self, block, gradient_stats, shared):
        """The AGRN inputs of one block's tensors, float32 [block tensors, inputs]."""
        if self._sensing:
            return self._sensing_inputs(block, gradient_stats, shared)
        return self._paper_inputs(block, gradient_stats, shared)

    def _sensing_inputs(self, block, gradient_stats, shared):
        start, stop = self._blocks[block]
        gradients, trend = _sensing_gradient_inputs(
            gradient_stats[block],
            self._sizes[start:stop],
            shared["weight_mean"][start:stop],
            shared["trend"][start:stop],
            shared["first"],
        )
        shared["new_trend"][block] = trend
        count = stop - start
        time = ops.broadcast_to(shared["time"][None, :], (count, 6))
        return ops.concatenate(
            [shared["known"][start:stop], gradients, time, ops.ones((count, 1))], axis=1
        )

    def _paper_inputs(self, block, gradient_stats, shared):
        start, stop = self._blocks[block]
        plan = self._block_plans[block]
        sources = [gradient_stats[number] for number in plan["sources"]]
        pool = sources[0] if len(sources) == 1 else ops.concatenate(sources, axis=0)
        if np.array_equal(plan["own"], np.arange(stop - start)):
            own_stats = pool[: stop - start]
        else:
            own_stats = ops.take(pool, plan["own"], axis=0)
        following = self._next_index[start:stop]
        has_next = ops.convert_to_tensor((following >= 0).astype("float32"))[:, None]
        known = shared["known"]
        own = ops.concatenate([known[start:stop], own_stats], axis=1)
        after = ops.concatenate(
            [
                ops.take(known, np.maximum(following, 0), axis=0),
                ops.take(pool, plan["next"], axis=0),
            ],
            axis=1,
        )
        return ops.concatenate([own, after * has_next, ops.ones((stop - start, 1))], axis=1)

    def _outputs_to_hyperparameters(self, outputs):
        """Map output-protein pairs to hyperparameters, one column each.

        `d = (a - b) / (a + b)` (0 when both are 0) gives the position
        `(d + 1) / 2` in [0, 1], mapped onto [lo, hi] on each hyperparameter's
        scale (`keras_neuromod.outputs.values_at`).
        """
        names = self.HYPERPARAMETERS
        pairs = ops.reshape(outputs, (-1, len(names), 2))
        a, b = pairs[..., 0], pairs[..., 1]
        total = a + b
        d = ops.where(total > 0, (a - b) / ops.where(total > 0, total, 1.0), 0.0)
        fraction = ops.clip((d + 1.0) / 2.0, 0.0, 1.0)
        return output_sets.values_at(fraction, *self._range_columns())

    def _range_columns(self):
        """`(lo, hi, scales)` in `HYPERPARAMETERS` order: float64 arrays and a tuple."""
        names = self.HYPERPARAMETERS
        lo = np.array([self.ranges[n][0] for n in names], np.float64)
        hi = np.array([self.ranges[n][1] for n in names], np.float64)
        return lo, hi, tuple(self.scales[n] for n in names)

    def _step_table(self, hparams, learning_rate, rows):
        """Per-tensor values the update rule reads: columns and their names.

        `hparams` is float32 [block tensors, hyperparameters] for the tensors
        `rows` (a slice of the tensor indices), `learning_rate` the multiplier
        (the optimizer's learning rate this step). Subclasses extend the table
        with whatever their update rule derives from these values and from
        vectorised per-step state (Adam's beta products and step size), so
        that no scalar is computed tensor by tensor; state the table updates
        is written by `_write_step_state`, once for all blocks.
        """
        return hparams, self.HYPERPARAMETERS

    def _write_step_state(self, table, names):
        """Write per-step state from the whole table (every tensor's row, in order)."""

    def _scaled_learning_rate(self, hparams, learning_rate):
        """The multiplier times the modulated learning rate of every tensor, [tensors]."""
        index = self.HYPERPARAMETERS.index("learning_rate")
        return ops.cast(learning_rate, "float32") * hparams[:, index]

    def _prepare_step(self, grads, trainable_variables, learning_rate):
        """Modulate once, and keep each tensor's values for `update_step`.

        Block by block, the table is split column by column: a fixed number
        of operations (one per column) give every tensor of the block its
        scalars. The AGRN state, inputs and values of every tensor are then
        written once.

        `grads` are the gradients the update applies (all-reduced across
        replicas under a distribution strategy); a tensor without one this
        step (Keras filters those out) has gradient statistics 0.
        """
        count = len(_keras_compat.tracked_variables(self))
        by_index = {
            _keras_compat.variable_index(self, v): g for g, v in zip(grads, trainable_variables)
        }
        gradients = [by_index.get(i) for i in range(count)]
        gradient_stats = self._gradient_statistics(gradients)
        shared = self._step_inputs()
        self._step_values = []
        done = {"hparams": [], "state": [], "inputs": [], "table": []}
        for block, (start, stop) in enumerate(self._blocks):
            hparams, state, inputs = self._modulate(block, gradient_stats, shared)
            table, names = self._step_table(hparams, learning_rate, slice(start, stop))
            columns = [
                ops.unstack(column, num=stop - start)
                for column in ops.unstack(table, num=len(names), axis=1)
            ]
            self._step_values.extend(dict(zip(names, values)) for values in zip(*columns))
            for key, value in zip(done, (hparams, state, inputs, table)):
                done[key].append(value)
        whole = {
            key: parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)
            for key, parts in done.items()
        }
        self.assign(self._grn_state, whole["state"])
        self.assign(self._grn_inputs, whole["inputs"])
        if self._sensing and self._blocks:
            trends = [shared["new_trend"][block] for block in range(len(self._blocks))]
            self.assign(self._grn_trend, trends[0] if len(trends) == 1 else ops.concatenate(trends))
        self.assign(self._grn_hparams, whole["hparams"])
        self.assign_add(self._grn_updates, ops.ones((), self._grn_updates.dtype))
        self._write_step_state(whole["table"], names)

    # The three overrides below are private hooks of Keras's optimizer (see
    # `_keras_compat.OPTIMIZER_HOOKS`, which a test checks against Keras).

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        """Modulate once from every gradient, then run Keras's update step."""
        if keras.backend.backend() == "tensorflow":
            self._tf_update_step(grads, trainable_variables, learning_rate)
            return
        self._prepare_step(grads, trainable_variables, learning_rate)
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._step_values = None

    def _tf_update_step(self, grads, trainable_variables, learning_rate):
        """TensorFlow's `_backend_update_step`, without a needless all-reduce.

        Keras's TensorFlow step all-reduces the gradients across replicas and
        then applies them in `_distributed_tf_update_step`, where the
        modulation reads the reduced gradients. With one replica the
        all-reduce is the identity, but it is built as one operation over
        every gradient (an `IdentityN`, which TensorFlow's graph optimizer
        does not always remove), and every update would wait for the last
        gradient of backpropagation. It is skipped then, so that a block's
        updates wait only for the gradients they read.
        """
        strategy = _keras_compat.distribution_strategy(self)
        if strategy.num_replicas_in_sync > 1:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
            return
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        _keras_compat.merge_call(
            self._distributed_tf_update_step, strategy, list(zip(grads, variables)), learning_rate
        )

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        """TensorFlow only: modulate from the all-reduced gradients, then update.

        This runs once, in cross-replica context, under a `tf.distribute`
        strategy (and directly without one). Every replica holds the same
        reduced gradients and the same mirrored variables, so the first
        replica's values are modulated; the AGRN state and the per-tensor
        values are then written to every replica alike, and each replica's
        update reads the same values.
        """

        def first_replica(value):
            if value is None:
                return None
            return distribution.experimental_local_results(value)[0]

        self._prepare_step(
            [first_replica(g) for g, _ in grads_and_vars],
            [v for _, v in grads_and_vars],
            learning_rate,
        )
        try:
            super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)
        finally:
            self._step_values = None

    def _apply_weight_decay(self, variables):
        # Decoupled weight decay needs each tensor's modulated learning rate,
        # known only after the modulation: `update_step` applies it through
        # `_decay_weights`.
        pass

    def _decay_weights(self, variable, learning_rate):
        """Decay `variable` by `weight_decay` times its learning rate.

        Keras decays every variable by `weight_decay * learning_rate` before
        the update; here `learning_rate` is the tensor's modulated rate times
        the multiplier, so fixed ranges give exactly Keras's decay. Variables
        excluded with `exclude_from_weight_decay` are left alone.
        """
        if self.weight_decay is None or not _keras_compat.uses_weight_decay(self, variable):
            return
        decay = ops.cast(self.weight_decay, variable.dtype) * learning_rate
        self.assign_sub(variable, ops.multiply(variable, decay))

    def _modulated(self, variable):
        """This step's values of `variable` (hyperparameters and more), as scalars."""
        values = self._step_values[_keras_compat.variable_index(self, variable)]
        if keras.backend.standardize_dtype(variable.dtype) == "float32":
            return values
        return {name: ops.cast(value, variable.dtype) for name, value in values.items()}
