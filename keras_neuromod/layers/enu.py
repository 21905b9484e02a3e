"""Evolvable neural units (ENUs) and networks of them (Bertens and Lee, 2020).

An ENU is a gated recurrent unit that stands in for a neuron or a synapse. Its
weights are shared by all units of a kind and evolved, not trained (see
`keras_neuromod.evolution.strategies`; `keras_neuromod.evolution.enu_fitness`
scores a whole population of genomes in one compiled call).

The equations, with `u` the unit's input vector, ordered exactly as
`u = [x, o_prev, h, 1]` (external input `x` of `input_dim` channels, the previous
output `o_prev` of `channels` channels, the memory `h` of `memory` channels, and a
constant 1 that plays the role of every bias)::

    r    = sigmoid(3 * (u @ W_r - 1))                  # reset gate, shifted by -1
    z    = sigmoid(3 * (u @ W_z))                      # update gate
    c    = tanh(3 * ([x, o_prev, r * h, 1] @ W_c))     # candidate
    h'   = (1 - z) * h + z * c                         # memory
    o'   = clip([h', 1] @ W_o, 0, 1)                   # output

The factor 3 steepens the gates and the candidate (the reference's choice). The -1
shift of the reset gate starts a fresh unit with its reset gate mostly closed
(sigmoid(-3) ~ 0.05), so new memory is built from the input before old memory is
let in. The output is clipped to [0, 1] so that spikes (1) and silence (0) are
exactly reachable.

Weight layout (the order of the flat genome evolved by the ES, each kernel
flattened in C order, rows indexed by the input vector above):

    reset_kernel      W_r  (input_dim + channels + memory + 1, memory)
    update_kernel     W_z  (input_dim + channels + memory + 1, memory)
    candidate_kernel  W_c  (input_dim + channels + memory + 1, memory)
    output_kernel     W_o  (memory + 1, channels)

`ENUCell` and `ENUNetwork` are Keras RNN cells with one set of weights each. The
functions below (`enu_step`, `enu_run`, `network_step`) are the same computation
with an optional leading population axis `P` on the kernels, one weight set per
individual, which is how a population of genomes is evaluated at once.
"""

import keras
import numpy as np
from keras import ops

from keras_neuromod import _fields

__all__ = [
    "ENUCell",
    "ENUNetwork",
    "enu_weight_shapes",
    "enu_num_params",
    "enu_unflatten",
    "enu_step",
    "enu_run",
    "network_step",
    "van_rossum_distance",
]

WEIGHT_NAMES = ("reset_kernel", "update_kernel", "candidate_kernel", "output_kernel")


def _check_positive_int(name, value):
    return _fields.integer(value, f"`{name}`", minimum=1)


def enu_weight_shapes(input_dim, memory, channels):
    """The ENU's kernels, in genome order, as a dict name -> shape."""
    rows = input_dim + channels + memory + 1
    return {
        "reset_kernel": (rows, memory),
        "update_kernel": (rows, memory),
        "candidate_kernel": (rows, memory),
        "output_kernel": (memory + 1, channels),
    }


def enu_num_params(input_dim, memory, channels):
    """Number of evolved parameters of one ENU."""
    return sum(int(np.prod(s)) for s in enu_weight_shapes(input_dim, memory, channels).values())


def enu_unflatten(flat, input_dim, memory, channels):
    """Split flat genomes `(..., num_params)` into the kernels `(..., *shape)`."""
    shapes = enu_weight_shapes(input_dim, memory, channels)
    lead = tuple(ops.shape(flat)[:-1])
    weights, start = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        weights[name] = ops.reshape(flat[..., start : start + size], lead + shape)
        start += size
    return weights


def enu_step(weights, x, memory_state, output_state):
    """One ENU step for a block of units sharing one weight set (or one per individual).

    Args:
        weights: dict of the four kernels; with a population, each has a leading
            population axis `P`.
        x: external input, `(rows, input_dim)` or `(P, rows, input_dim)`.
        memory_state: `h`, `(rows, memory)` or `(P, rows, memory)`.
        output_state: `o_prev`, `(rows, channels)` or `(P, rows, channels)`.

    Returns:
        `(h_new, o_new)`.
    """
    h = memory_state
    ones = ops.ones_like(h[..., :1])
    u = ops.concatenate([x, output_state, h, ones], axis=-1)
    r = ops.sigmoid(3.0 * (ops.matmul(u, weights["reset_kernel"]) - 1.0))
    z = ops.sigmoid(3.0 * ops.matmul(u, weights["update_kernel"]))
    u_c = ops.concatenate([x, output_state, r * h, ones], axis=-1)
    c = ops.tanh(3.0 * ops.matmul(u_c, weights["candidate_kernel"]))
    h_new = (1.0 - z) * h + z * c
    o_new = ops.clip(
        ops.matmul(ops.concatenate([h_new, ones], axis=-1), weights["output_kernel"]),
        0.0,
        1.0,
    )
    return h_new, o_new


def enu_run(weights, inputs, memory, channels):
    """Run ENUs over time from zero state.

    Args:
        weights: kernels as for `enu_step` (population axis `P` or none).
        inputs: `(T, rows, input_dim)` or `(T, P, rows, input_dim)`, time first.
        memory, channels: the ENU's sizes.

    Returns:
        The outputs over time, `(T, rows, channels)` or `(T, P, rows, channels)`.
    """
    lead = tuple(ops.shape(inputs)[1:-1])
    h0 = ops.zeros(lead + (memory,), dtype=inputs.dtype)
    o0 = ops.zeros(lead + (channels,), dtype=inputs.dtype)

    def body(carry, x):
        new = enu_step(weights, x, *carry)
        # Keras's TensorFlow `scan` stacks outputs shaped like the carry only.
        return new, new

    _, (_, outputs) = ops.scan(body, (h0, o0), inputs)
    return outputs


def van_rossum_distance(spikes, target, tau):
    """Van Rossum distance between spike trains, time on the first axis.

    Each train is filtered with the causal exponential kernel
    `f[t] = sum_{s <= t} exp(-(t - s) / tau) x[s]` and the distance is
    `sum_t (f_spikes[t] - f_target[t]) ** 2 / tau`, so that one unmatched spike,
    far from the others, costs about 1/2 (exactly `1 / (tau (1 - exp(-2 / tau)))`
    over an unbounded time), and a spike `d` steps from its target costs less the
    smaller `d` is. Trains may be graded; ENU outputs are usually thresholded into
    0/1 spikes first (e.g. `ops.cast(output > 0.5, "float32")`).

    Args:
        spikes, target: `(T, ...)` tensors of the same shape (or broadcastable).
        tau: the kernel's time constant in steps (> 0).

    Returns:
        The distances, shaped like the trains without their time axis.
    """
    if not tau > 0:
        raise ValueError(f"`tau` must be positive, got {tau!r}.")
    diff = spikes - target
    steps = int(ops.shape(diff)[0])
    lag = np.arange(steps)[:, None] - np.arange(steps)[None, :]
    kernel = np.where(lag >= 0, np.exp(-np.maximum(lag, 0) / tau), 0.0)
    kernel = ops.convert_to_tensor(kernel, dtype=diff.dtype)
    filtered = ops.tensordot(kernel, diff, axes=1)
    return ops.sum(ops.square(filtered), axis=0) / tau


def _concatenate_flat(parts):
    """Weights as one genome `(n,)`."""
    return np.concatenate([p.ravel() for p in parts])


def _checked_flat(flat, num_params):
    flat = np.asarray(flat, dtype=np.float32)
    if flat.shape != (num_params,):
        raise ValueError(f"`flat` must have shape {(num_params,)}, got {flat.shape}.")
    return flat


@keras.saving.register_keras_serializable(package="keras_neuromod")
class ENUCell(keras.layers.Layer):
    """Evolvable neural unit as a Keras RNN cell (use it in `keras.layers.RNN`).

    The state is `[memory h, previous output o]`; the input vector is
    `[x, o_prev, h, 1]`; see the module docstring for the equations and the weight
    layout.

    Args:
        memory: number of memory channels `h` (official code: 32).
        channels: number of output channels `o` (official code: 16).
        kernel_initializer: initializer of the kernels (official: orthogonal).
        **kwargs: base `Layer` arguments.
    """

    def __init__(
        self,
        memory=32,
        channels=16,
        kernel_initializer="orthogonal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.memory = _check_positive_int("memory", memory)
        self.channels = _check_positive_int("channels", channels)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.state_size = [self.memory, self.channels]
        self.output_size = self.channels
        self.input_dim = None

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError("The last axis of the ENUCell's input must be known.")
        self.input_dim = int(input_dim)
        for name, shape in enu_weight_shapes(self.input_dim, self.memory, self.channels).items():
            setattr(
                self,
                name,
                self.add_weight(name=name, shape=shape, initializer=self.kernel_initializer),
            )

    @property
    def num_params(self):
        """Evolved parameters (known once built)."""
        if self.input_dim is None:
            raise ValueError("The ENUCell is not built yet: call it or `build` it first.")
        return enu_num_params(self.input_dim, self.memory, self.channels)

    def _weights_dict(self):
        return {name: getattr(self, name) for name in WEIGHT_NAMES}

    def call(self, inputs, states, training=False):
        h_new, o_new = enu_step(self._weights_dict(), inputs, states[0], states[1])
        return o_new, [h_new, o_new]

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, self.memory), dtype=self.compute_dtype),
            ops.zeros((batch_size, self.channels), dtype=self.compute_dtype),
        ]

    def get_flat_weights(self):
        """The genome `(num_params,)`: the kernels in genome order, flattened."""
        parts = [ops.convert_to_numpy(getattr(self, n)) for n in WEIGHT_NAMES]
        return _concatenate_flat(parts)

    def set_flat_weights(self, flat):
        """Load a genome of the shape `get_flat_weights` returns."""
        flat = _checked_flat(flat, self.num_params)
        for name, value in enu_unflatten(flat, self.input_dim, self.memory, self.channels).items():
            getattr(self, name).assign(value)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "memory": self.memory,
                "channels": self.channels,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


def _check_index_array(name, values, upper, upper_name):
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D array of indices.")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"`{name}` must hold integers, got {array.tolist()}.")
        array = array.astype(np.int64)
    if array.min() < 0 or array.max() >= upper:
        raise ValueError(
            f"`{name}` must hold indices in [0, {upper}) ({upper_name}), got "
            f"values from {array.min()} to {array.max()}."
        )
    return array.astype(np.int32)


def network_step(
    neuron_weights, synapse_weights, inputs, states, pre, post, mean_matrix, population=False
):
    """One step of a network of ENUs (functional; see `ENUNetwork`).

    Args:
        neuron_weights, synapse_weights: kernels of the neuron and synapse ENUs,
            with a leading population axis `P` when `population` is True.
        inputs: sensory node outputs `(*lead, B, num_inputs, channels)`, `lead` being
            `(P,)` with a population and `()` without.
        states: `(neuron_h, neuron_o, synapse_h, synapse_o)`, shaped
            `(*lead, B, N, memory)`, `(*lead, B, N, channels)`,
            `(*lead, B, S, memory)`, `(*lead, B, S, channels)`.
        pre: `(S,)` int, node of each synapse's presynaptic side; nodes are the
            sensory inputs `0 .. num_inputs - 1` followed by the neurons.
        post: `(S,)` int, neuron (`0 .. N - 1`) each synapse feeds.
        mean_matrix: `(N, S)` float, `1 / in-degree(n)` where synapse `s` feeds
            neuron `n`, else 0.
        population: whether the weights carry a population axis.

    Returns:
        The new states, in the order of `states`.
    """
    neuron_h, neuron_o, synapse_h, synapse_o = states
    nodes = ops.concatenate([inputs, neuron_o], axis=-2)
    syn_x = ops.concatenate(
        [ops.take(nodes, pre, axis=-2), ops.take(neuron_o, post, axis=-2)], axis=-1
    )
    lead = tuple(ops.shape(syn_x)[:1]) if population else ()
    block_shape = tuple(ops.shape(synapse_h))

    def rows(t):
        return ops.reshape(t, lead + (-1, ops.shape(t)[-1]))

    synapse_h, synapse_o = enu_step(synapse_weights, rows(syn_x), rows(synapse_h), rows(synapse_o))
    synapse_h = ops.reshape(synapse_h, block_shape)
    synapse_o = ops.reshape(synapse_o, block_shape[:-1] + (ops.shape(synapse_o)[-1],))
    neuron_x = ops.einsum("ns,...sc->...nc", mean_matrix, synapse_o)
    n_shape = tuple(ops.shape(neuron_h))
    neuron_h, neuron_o = enu_step(neuron_weights, rows(neuron_x), rows(neuron_h), rows(neuron_o))
    neuron_h = ops.reshape(neuron_h, n_shape)
    neuron_o = ops.reshape(neuron_o, n_shape[:-1] + (ops.shape(neuron_o)[-1],))
    return neuron_h, neuron_o, synapse_h, synapse_o


@keras.saving.register_keras_serializable(package="keras_neuromod")
class ENUNetwork(keras.layers.Layer):
    """A network of ENUs as a Keras RNN cell: neuron units and synapse units.

    All neurons share one ENU weight set and all synapses another; each unit keeps
    its own state. Sensory inputs are plain nodes whose output is given by the
    input; neurons follow them in the node numbering. At every step, first each
    synapse `s` reads `[output of node pre[s], output of neuron post[s]]` (both from
    the previous step, so the synapse sees pre- and post-synaptic activity and
    spike-timing rules can emerge), then each neuron reads the mean of the outputs
    of the synapses that feed it (zeros when none does). The paper's computation
    diagram sums them, with the same number of synapses per neuron; the mean is that
    sum scaled, and keeps a neuron's input in [0, 1] whatever its in-degree.

    Input per step: `(batch, num_inputs * channels)`, the sensory nodes' output
    channels, node-major. Output: `(batch, len(output_neurons) * channels)`. State:
    neuron memory and output, synapse memory and output, each flattened unit-major.

    Args:
        num_inputs: number of sensory nodes.
        num_neurons: number of neuron ENUs `N`.
        pre: presynaptic node of each synapse, indices in
            `[0, num_inputs + num_neurons)` (inputs first, then neurons).
        post: postsynaptic neuron of each synapse, indices in `[0, num_neurons)`.
        output_neurons: neurons whose outputs form the layer's output (default all).
        memory, channels: sizes of both kinds of ENU (neurons read `channels`
            inputs, synapses `2 * channels`).
        kernel_initializer: initializer of all kernels.
        **kwargs: base `Layer` arguments.
    """

    def __init__(
        self,
        num_inputs,
        num_neurons,
        pre,
        post,
        output_neurons=None,
        memory=32,
        channels=16,
        kernel_initializer="orthogonal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_inputs = _check_positive_int("num_inputs", num_inputs)
        self.num_neurons = _check_positive_int("num_neurons", num_neurons)
        self.pre = _check_index_array(
            "pre", pre, self.num_inputs + self.num_neurons, "num_inputs + num_neurons"
        )
        self.post = _check_index_array("post", post, self.num_neurons, "num_neurons")
        if self.pre.size != self.post.size:
            raise ValueError(
                f"`pre` and `post` must have one entry per synapse, got {self.pre.size} "
                f"and {self.post.size}."
            )
        if output_neurons is None:
            output_neurons = np.arange(self.num_neurons)
        self.output_neurons = _check_index_array(
            "output_neurons", output_neurons, self.num_neurons, "num_neurons"
        )
        self.num_synapses = int(self.pre.size)
        self.memory = _check_positive_int("memory", memory)
        self.channels = _check_positive_int("channels", channels)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.mean_matrix = self.build_mean_matrix(self.post, self.num_neurons)
        n, s, m, c = self.num_neurons, self.num_synapses, self.memory, self.channels
        self.state_size = [n * m, n * c, s * m, s * c]
        self.output_size = int(self.output_neurons.size) * c

    @staticmethod
    def build_mean_matrix(post, num_neurons):
        """`(N, S)` matrix averaging the synapses that feed each neuron."""
        post = np.asarray(post)
        matrix = np.zeros((num_neurons, post.size), dtype=np.float32)
        matrix[post, np.arange(post.size)] = 1.0
        degree = matrix.sum(axis=1, keepdims=True)
        return matrix / np.maximum(degree, 1.0)

    @property
    def neuron_shapes(self):
        return enu_weight_shapes(self.channels, self.memory, self.channels)

    @property
    def synapse_shapes(self):
        return enu_weight_shapes(2 * self.channels, self.memory, self.channels)

    @property
    def num_params(self):
        """Evolved parameters: neuron genome then synapse genome."""
        return enu_num_params(self.channels, self.memory, self.channels) + enu_num_params(
            2 * self.channels, self.memory, self.channels
        )

    def unflatten(self, flat):
        """Split genomes `(..., num_params)` into (neuron kernels, synapse kernels)."""
        n_neuron = enu_num_params(self.channels, self.memory, self.channels)
        neuron = enu_unflatten(flat[..., :n_neuron], self.channels, self.memory, self.channels)
        synapse = enu_unflatten(flat[..., n_neuron:], 2 * self.channels, self.memory, self.channels)
        return neuron, synapse

    def build(self, input_shape):
        expected = self.num_inputs * self.channels
        if input_shape[-1] is not None and input_shape[-1] != expected:
            raise ValueError(
                f"ENUNetwork expects inputs of size num_inputs * channels = {expected}, "
                f"got {input_shape[-1]}."
            )
        init = self.kernel_initializer
        self.neuron_kernels = {
            name: self.add_weight(name=f"neuron_{name}", shape=shape, initializer=init)
            for name, shape in self.neuron_shapes.items()
        }
        self.synapse_kernels = {
            name: self.add_weight(name=f"synapse_{name}", shape=shape, initializer=init)
            for name, shape in self.synapse_shapes.items()
        }

    def call(self, inputs, states, training=False):
        n, s, m, c = self.num_neurons, self.num_synapses, self.memory, self.channels
        shapes = [(n, m), (n, c), (s, m), (s, c)]
        blocks = tuple(ops.reshape(t, (-1,) + shp) for t, shp in zip(states, shapes))
        x = ops.reshape(inputs, (-1, self.num_inputs, c))
        new = network_step(
            self.neuron_kernels,
            self.synapse_kernels,
            x,
            blocks,
            self.pre,
            self.post,
            ops.convert_to_tensor(self.mean_matrix, dtype=inputs.dtype),
        )
        flat = [ops.reshape(t, (-1, size)) for t, size in zip(new, self.state_size)]
        output = ops.take(new[1], self.output_neurons, axis=-2)
        output = ops.reshape(output, (-1, self.output_size))
        return output, flat

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in self.state_size]

    def _kernel_list(self):
        return [self.neuron_kernels[k] for k in WEIGHT_NAMES] + [
            self.synapse_kernels[k] for k in WEIGHT_NAMES
        ]

    def get_flat_weights(self):
        """The genome: neuron kernels then synapse kernels, each in ENU order."""
        parts = [ops.convert_to_numpy(v) for v in self._kernel_list()]
        return _concatenate_flat(parts)

    def set_flat_weights(self, flat):
        """Load a genome of the shape `get_flat_weights` returns."""
        flat = _checked_flat(flat, self.num_params)
        neuron, synapse = self.unflatten(flat)
        for name in WEIGHT_NAMES:
            self.neuron_kernels[name].assign(neuron[name])
            self.synapse_kernels[name].assign(synapse[name])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_inputs": self.num_inputs,
                "num_neurons": self.num_neurons,
                "pre": self.pre.tolist(),
                "post": self.post.tolist(),
                "output_neurons": self.output_neurons.tolist(),
                "memory": self.memory,
                "channels": self.channels,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
