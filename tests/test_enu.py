"""Tests of the evolvable neural unit (ENU) cell and the network of ENUs."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_neuromod.layers.enu import ENUCell
from keras_neuromod.layers.enu import ENUNetwork
from keras_neuromod.layers.enu import enu_num_params
from keras_neuromod.layers.enu import enu_run
from keras_neuromod.layers.enu import enu_unflatten
from keras_neuromod.layers.enu import network_step


# ---------------------------------------------------------------- numpy reference
def np_sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def np_split(flat, input_dim, memory, channels):
    """The documented genome layout: W_r, W_z, W_c (rows [x, o, h, 1]), then W_o."""
    rows = input_dim + channels + memory + 1
    sizes = [rows * memory] * 3 + [(memory + 1) * channels]
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    w_r, w_z, w_c = (p.reshape(rows, memory) for p in parts[:3])
    w_o = parts[3].reshape(memory + 1, channels)
    return w_r, w_z, w_c, w_o


def np_enu_step(flat, x, h, o, input_dim, memory, channels):
    """One ENU step for one unit, written from the equations with explicit slices."""
    w_r, w_z, w_c, w_o = np_split(flat, input_dim, memory, channels)
    u = np.concatenate([x, o, h, [1.0]])
    r = np_sigmoid(3.0 * (u @ w_r - 1.0))
    z = np_sigmoid(3.0 * (u @ w_z))
    cand = np.tanh(3.0 * (np.concatenate([x, o, r * h, [1.0]]) @ w_c))
    h_new = (1.0 - z) * h + z * cand
    o_new = np.clip(np.concatenate([h_new, [1.0]]) @ w_o, 0.0, 1.0)
    return h_new, o_new


def np_enu_sequence(flat, xs, memory, channels):
    """Outputs `(T, channels)` of one unit from zero state."""
    h, o = np.zeros(memory), np.zeros(channels)
    outputs = []
    for x in xs:
        h, o = np_enu_step(flat, x, h, o, xs.shape[-1], memory, channels)
        outputs.append(o)
    return np.array(outputs)


def random_genome(rng, input_dim, memory, channels, scale=0.6):
    flat = rng.normal(0.0, scale, enu_num_params(input_dim, memory, channels))
    # Bias row of W_o at 0.5 keeps outputs inside (0, 1), away from the clip, so
    # that every unit passes information on.
    w_o_start = flat.size - (memory + 1) * channels
    w_o = flat[w_o_start:].reshape(memory + 1, channels)
    w_o[:-1] *= 0.3
    w_o[-1] = 0.5
    return flat.astype(np.float32)


# ---------------------------------------------------------------------- the cell
@settings(max_examples=6, deadline=None)
@given(
    input_dim=st.integers(1, 3),
    memory=st.integers(1, 5),
    channels=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_cell_matches_numpy(input_dim, memory, channels, seed):
    rng = np.random.default_rng(seed)
    cell = ENUCell(memory=memory, channels=channels)
    layer = keras.layers.RNN(cell, return_sequences=True)
    xs = rng.uniform(-1, 1, (3, 6, input_dim)).astype(np.float32)
    layer.build(xs.shape)
    flat = rng.normal(0.0, 0.7, cell.num_params).astype(np.float32)
    cell.set_flat_weights(flat)
    np.testing.assert_array_equal(cell.get_flat_weights(), flat)
    got = keras.ops.convert_to_numpy(layer(xs))
    want = np.stack([np_enu_sequence(flat.astype(np.float64), x, memory, channels) for x in xs])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_output_is_clipped_and_reaches_bounds():
    cell = ENUCell(memory=3, channels=2)
    layer = keras.layers.RNN(cell, return_sequences=True)
    layer.build((1, 4, 1))
    flat = np.zeros(cell.num_params, np.float32)
    w_o = flat[-(3 + 1) * 2 :].reshape(4, 2)
    w_o[-1] = [5.0, -5.0]  # bias row only: channel 0 saturates high, channel 1 low
    cell.set_flat_weights(flat)
    out = keras.ops.convert_to_numpy(layer(np.ones((1, 4, 1), np.float32)))
    np.testing.assert_array_equal(out[..., 0], 1.0)
    np.testing.assert_array_equal(out[..., 1], 0.0)


def test_weight_shapes_follow_input_order():
    cell = ENUCell(memory=5, channels=3)
    cell.build((None, 2))
    # rows: x (2) + o_prev (3) + h (5) + 1
    assert tuple(cell.reset_kernel.shape) == (11, 5)
    assert tuple(cell.update_kernel.shape) == (11, 5)
    assert tuple(cell.candidate_kernel.shape) == (11, 5)
    assert tuple(cell.output_kernel.shape) == (6, 3)
    assert cell.num_params == 3 * 11 * 5 + 6 * 3


def test_orthogonal_initialisation():
    cell = ENUCell(memory=4, channels=3)
    cell.build((None, 2))
    kernel = keras.ops.convert_to_numpy(cell.reset_kernel)  # (10, 4): orthonormal columns
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(4), atol=1e-5)


def test_functional_run_matches_rnn_layer():
    rng = np.random.default_rng(5)
    population, batch, steps, input_dim, memory, channels = 2, 3, 4, 1, 3, 2
    genomes = rng.normal(0, 0.7, (population, enu_num_params(input_dim, memory, channels)))
    genomes = genomes.astype(np.float32)
    xs = rng.uniform(0, 1, (steps, population, batch, input_dim)).astype(np.float32)
    weights = enu_unflatten(genomes, input_dim, memory, channels)
    got = keras.ops.convert_to_numpy(
        enu_run(weights, keras.ops.convert_to_tensor(xs), memory, channels)
    )
    assert got.shape == (steps, population, batch, channels)
    for i in range(population):
        for b in range(batch):
            want = np_enu_sequence(genomes[i].astype(np.float64), xs[:, i, b], memory, channels)
            np.testing.assert_allclose(got[:, i, b], want, rtol=1e-4, atol=1e-5)


def test_cell_config_and_model_round_trip(tmp_path):
    cell = ENUCell(memory=4, channels=3, name="enu")
    clone = ENUCell.from_config(cell.get_config())
    assert clone.get_config() == cell.get_config()
    inputs = keras.Input((5, 2))
    model = keras.Model(inputs, keras.layers.RNN(cell, return_sequences=True)(inputs))
    rng = np.random.default_rng(0)
    cell.set_flat_weights(rng.normal(0, 0.5, cell.num_params))
    xs = rng.uniform(0, 1, (4, 5, 2)).astype(np.float32)
    path = tmp_path / "enu.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(xs)), keras.ops.convert_to_numpy(model(xs))
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"memory": 0}, "memory"),
        ({"channels": 2.5}, "channels"),
        ({"memory": True}, "memory"),
        ({"channels": "2"}, "channels"),
    ],
)
def test_cell_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        ENUCell(**kwargs)


@pytest.mark.parametrize("layer", ["cell", "network"])
def test_the_layers_take_no_population_argument(layer):
    # A population of genomes is evaluated with the functional kernels
    # (enu_run, network_step) or keras_neuromod.evolution.enu_fitness.
    if layer == "cell":
        cls, made = ENUCell, ENUCell(memory=3, channels=2)
    else:
        cls, made = ENUNetwork, ENUNetwork(2, 3, pre=PRE, post=POST, memory=3, channels=2)
    config = made.get_config()
    assert "population" not in config
    assert cls.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="population"):
        cls(**{**config, "population": 4})


def test_set_flat_weights_checks_shape():
    cell = ENUCell(memory=2, channels=2)
    cell.build((None, 1))
    with pytest.raises(ValueError, match="`flat`"):
        cell.set_flat_weights(np.zeros(cell.num_params + 1))


# ------------------------------------------------------------------- the network
# A hand-built graph: sensory nodes 0, 1; neurons a, b, c are nodes 2, 3, 4.
#   s0: input 0 -> a,  s1: a -> b,  s2: input 1 -> c,  s3: c -> c (self loop),
#   s4: input 0 -> c.   Neuron a: {s0}, b: {s1}, c: {s2, s3, s4}.
PRE = [0, 2, 1, 4, 0]
POST = [0, 1, 2, 2, 2]


def np_network_sequence(neuron_flat, synapse_flat, xs, pre, post, num_neurons, memory, channels):
    """Explicit loops over units: xs `(T, num_inputs, channels)` -> outputs `(T, N, C)`."""
    n_h = np.zeros((num_neurons, memory))
    n_o = np.zeros((num_neurons, channels))
    s_h = np.zeros((len(pre), memory))
    s_o = np.zeros((len(pre), channels))
    outputs = []
    for x in xs:
        nodes = np.concatenate([x, n_o], axis=0)
        new_s_h, new_s_o = np.zeros_like(s_h), np.zeros_like(s_o)
        for s, (i, j) in enumerate(zip(pre, post)):
            syn_in = np.concatenate([nodes[i], n_o[j]])
            new_s_h[s], new_s_o[s] = np_enu_step(
                synapse_flat, syn_in, s_h[s], s_o[s], 2 * channels, memory, channels
            )
        s_h, s_o = new_s_h, new_s_o
        new_n_h, new_n_o = np.zeros_like(n_h), np.zeros_like(n_o)
        for n in range(num_neurons):
            incoming = [s for s, j in enumerate(post) if j == n]
            mean = s_o[incoming].mean(axis=0) if incoming else np.zeros(channels)
            new_n_h[n], new_n_o[n] = np_enu_step(
                neuron_flat, mean, n_h[n], n_o[n], channels, memory, channels
            )
        n_h, n_o = new_n_h, new_n_o
        outputs.append(n_o)
    return np.array(outputs)


def network_genomes(count, memory=3, channels=2, seed=0):
    """`count` genomes of a network: neuron genome then synapse genome."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            np.concatenate(
                [
                    random_genome(rng, channels, memory, channels),
                    random_genome(rng, 2 * channels, memory, channels),
                ]
            )
            for _ in range(count)
        ]
    )


def make_network(memory=3, channels=2, output_neurons=None, seed=0):
    net = ENUNetwork(
        2, 3, pre=PRE, post=POST, memory=memory, channels=channels, output_neurons=output_neurons
    )
    layer = keras.layers.RNN(net, return_sequences=True)
    layer.build((None, None, 2 * channels))
    genomes = network_genomes(1, memory, channels, seed)
    net.set_flat_weights(genomes[0])
    return net, layer, genomes


def test_network_matches_numpy_loops():
    memory, channels = 3, 2
    net, layer, genomes = make_network(memory=memory, channels=channels)
    n_neuron = enu_num_params(channels, memory, channels)
    rng = np.random.default_rng(1)
    xs = rng.uniform(0, 1, (2, 4, 2 * channels)).astype(np.float32)
    got = keras.ops.convert_to_numpy(layer(xs)).reshape(2, 4, 3, channels)
    for b in range(2):
        want = np_network_sequence(
            genomes[0, :n_neuron].astype(np.float64),
            genomes[0, n_neuron:].astype(np.float64),
            xs[b].reshape(4, 2, channels),
            PRE,
            POST,
            3,
            memory,
            channels,
        )
        np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-5)


def test_network_wiring_who_receives_whom():
    channels = 2
    net, layer, _ = make_network(channels=channels)
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, (1, 3, 2 * channels)).astype(np.float32)

    def neuron_outputs(xs):
        return keras.ops.convert_to_numpy(layer(xs)).reshape(3, 3, channels)

    ref = neuron_outputs(base)
    # Change sensory node 0 at step 0 only.
    moved0 = base.copy()
    moved0[0, 0, :channels] += 0.5
    diff0 = np.abs(neuron_outputs(moved0) - ref).max(axis=-1) > 1e-6  # (step, neuron)
    # Step 0: a and c read input 0 through s0 and s4; b does not.
    assert diff0[0].tolist() == [True, False, True]
    # Step 1: b now sees a's changed output through s1.
    assert diff0[1].tolist() == [True, True, True]
    # Change sensory node 1 at step 0 only: only c listens to it, and nobody listens to c.
    moved1 = base.copy()
    moved1[0, 0, channels:] += 0.5
    diff1 = np.abs(neuron_outputs(moved1) - ref).max(axis=-1) > 1e-6
    assert diff1[:, 0].tolist() == [False] * 3
    assert diff1[:, 1].tolist() == [False] * 3
    assert diff1[:, 2].tolist() == [True] * 3


def test_network_mean_matrix():
    matrix = ENUNetwork.build_mean_matrix(np.array(POST), 4)
    want = np.array(
        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1 / 3, 1 / 3, 1 / 3], [0, 0, 0, 0, 0]], np.float32
    )
    np.testing.assert_allclose(matrix, want)


def test_network_step_with_a_population_equals_the_layer_per_individual():
    # `network_step(population=True)`, one weight set per individual, is how a
    # population of network genomes is evaluated at once (the T-maze example).
    memory, channels, population, batch, steps = 3, 2, 3, 2, 4
    net, layer, _ = make_network(memory=memory, channels=channels)
    genomes = network_genomes(population, memory, channels, seed=7)
    rng = np.random.default_rng(4)
    xs = rng.uniform(0, 1, (population, batch, steps, 2, channels)).astype(np.float32)
    neuron_w, synapse_w = net.unflatten(keras.ops.convert_to_tensor(genomes))
    n, s = net.num_neurons, net.num_synapses
    states = tuple(
        keras.ops.zeros((population, batch, units, size))
        for units, size in ((n, memory), (n, channels), (s, memory), (s, channels))
    )
    mean_matrix = keras.ops.convert_to_tensor(net.mean_matrix)
    got = []
    for t in range(steps):
        states = network_step(
            neuron_w,
            synapse_w,
            keras.ops.convert_to_tensor(xs[:, :, t]),
            states,
            net.pre,
            net.post,
            mean_matrix,
            population=True,
        )
        got.append(keras.ops.convert_to_numpy(states[1]))
    got = np.stack(got, axis=2)  # (population, batch, steps, neurons, channels)
    for i in range(population):
        net.set_flat_weights(genomes[i])
        want = keras.ops.convert_to_numpy(layer(xs[i].reshape(batch, steps, -1)))
        np.testing.assert_allclose(got[i].reshape(want.shape), want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0], got[1])  # the individuals really differ


def test_network_output_neurons_and_round_trip(tmp_path):
    channels = 2
    net = ENUNetwork(
        2, 3, pre=PRE, post=POST, memory=3, channels=channels, output_neurons=[2], name="net"
    )
    clone = ENUNetwork.from_config(net.get_config())
    assert clone.get_config() == net.get_config()
    inputs = keras.Input((4, 2 * channels))
    model = keras.Model(inputs, keras.layers.RNN(net, return_sequences=True)(inputs))
    xs = np.random.default_rng(0).uniform(0, 1, (2, 4, 2 * channels)).astype(np.float32)
    assert model(xs).shape == (2, 4, channels)
    path = tmp_path / "net.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(xs)), keras.ops.convert_to_numpy(model(xs))
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"pre": [0, 5]}, "pre"),
        ({"post": [0, 3]}, "post"),
        ({"pre": [0]}, "pre"),
        ({"output_neurons": [4]}, "output_neurons"),
        ({"num_neurons": 0}, "num_neurons"),
    ],
)
def test_network_bad_arguments(kwargs, name):
    args = {"num_inputs": 2, "num_neurons": 3, "pre": [0, 1], "post": [0, 1]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        ENUNetwork(**args)


# ------------------------------------------------------------ spike-train distance
def np_van_rossum(a, b, tau):
    """The filtered trains by the recursion f[t] = exp(-1/tau) f[t-1] + x[t]."""
    decay, fa, fb, total = np.exp(-1.0 / tau), 0.0, 0.0, 0.0
    for xa, xb in zip(a, b):
        fa, fb = decay * fa + xa, decay * fb + xb
        total += (fa - fb) ** 2
    return total / tau


@settings(max_examples=25, deadline=None)
@given(steps=st.integers(1, 40), tau=st.floats(0.3, 20.0), seed=st.integers(0, 2**16))
def test_van_rossum_matches_numpy(steps, tau, seed):
    from keras_neuromod.layers.enu import van_rossum_distance

    rng = np.random.default_rng(seed)
    a = (rng.random((steps, 3, 2)) < 0.3).astype(np.float32)
    b = rng.random((steps, 3, 2)).astype(np.float32)  # graded trains too
    got = keras.ops.convert_to_numpy(van_rossum_distance(a, b, tau))
    expected = np.array(
        [[np_van_rossum(a[:, i, j], b[:, i, j], tau) for j in range(2)] for i in range(3)]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(van_rossum_distance(a, a, tau)), 0.0)


def test_van_rossum_prices_timing():
    from keras_neuromod.layers.enu import van_rossum_distance

    target = np.zeros((200, 1), np.float32)
    target[50] = 1.0
    costs = []
    for shift in (1, 3, 10):
        moved = np.roll(target, shift, axis=0)
        costs.append(float(keras.ops.convert_to_numpy(van_rossum_distance(moved, target, 5.0))[0]))
    silent = float(
        keras.ops.convert_to_numpy(van_rossum_distance(np.zeros_like(target), target, 5.0))[0]
    )
    np.testing.assert_allclose(silent, 1.0 / (5.0 * (1.0 - np.exp(-2.0 / 5.0))), rtol=1e-5)
    assert costs[0] < costs[1] < costs[2] < 2 * silent  # nearer misses cost less
    with pytest.raises(ValueError, match="tau"):
        van_rossum_distance(target, target, 0.0)
