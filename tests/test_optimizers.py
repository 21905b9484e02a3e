"""Nm-SGD and Nm-Adam: exactness, the paper's step in numpy, robustness, saving."""

import json

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from helpers import adam_agent
from helpers import sgd_agent
from keras_neuromod import Genome
from keras_neuromod import NmAdam
from keras_neuromod import NmSGD
from keras_neuromod import datasets
from keras_neuromod import models
from keras_neuromod.optimizers import base as optimizer_base
from reference import ReferenceAGRN
from reference import hyperparameter
from reference import tensor_inputs

BACKEND = keras.backend.backend()
JIT = [False, True] if BACKEND == "tensorflow" else [True]


@pytest.fixture(scope="module")
def digits_small():
    (x, y), _, _ = datasets.digits()
    return x[:320], y[:320]


def small_model(seed=0):
    return models.build("mlp", (8, 8, 1), 10, hidden=(16,), seed=seed)


def fit_weights(optimizer, data, epochs=2, jit=False, seed=0, batch_size=10):
    x, y = data
    model = small_model(seed)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=jit)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0)
    return model.get_weights(), model


@pytest.mark.slow
@pytest.mark.parametrize("jit", JIT)
def test_fixed_ranges_reproduce_keras_sgd(digits_small, jit):
    lr, momentum = 0.05, 0.8
    nm = NmSGD(
        agent=sgd_agent(),
        ranges={"learning_rate": (lr, lr), "momentum": (momentum, momentum)},
    )
    got, model = fit_weights(nm, digits_small, jit=jit)
    expected, _ = fit_weights(keras.optimizers.SGD(lr, momentum=momentum), digits_small, jit=jit)
    assert int(nm.iterations) == 64  # 64 steps compared
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("jit", JIT)
def test_fixed_ranges_reproduce_keras_adam(digits_small, jit):
    values = {"learning_rate": 0.003, "beta_1": 0.85, "beta_2": 0.99, "epsilon": 1e-6}
    nm = NmAdam(agent=adam_agent(), ranges={k: (v, v) for k, v in values.items()})
    got, _ = fit_weights(nm, digits_small, jit=jit)
    expected, _ = fit_weights(keras.optimizers.Adam(**values), digits_small, jit=jit)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_modulation_changes_training(digits_small):
    """The agent really drives the update: two agents train differently."""
    a, _ = fit_weights(NmAdam(agent=adam_agent(1)), digits_small, epochs=1)
    b, _ = fit_weights(NmAdam(agent=adam_agent(2)), digits_small, epochs=1)
    assert not np.allclose(a[0], b[0])


def _two_layer_model():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", name="hidden"),
            keras.layers.Dense(2, name="head"),
        ]
    )
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.mark.parametrize(
    "block_size,outputs",
    [(1, "paper"), (2**20, "paper"), (2**20, "centred")],
    ids=["block-per-layer", "one-block", "one-block-centred"],
)
@pytest.mark.parametrize("optimizer_class", ["sgd", "adam"])
def test_one_step_matches_numpy(optimizer_class, block_size, outputs, monkeypatch):
    # with a block per layer, the hidden layer reads its next layer's
    # statistics from the other block
    monkeypatch.setattr(optimizer_base, "MODULATION_BLOCK_SIZE", block_size)
    model = _two_layer_model()
    variables = model.trainable_variables
    rng = np.random.default_rng(1)
    grads = [rng.normal(0, 0.3, v.shape).astype("float32") for v in variables]
    weights = [
        np.array(v.numpy() if hasattr(v, "numpy") else v, np.float64) for v in model.get_weights()
    ]
    genome = sgd_agent(4) if optimizer_class == "sgd" else adam_agent(4)
    optimizer = (NmSGD if optimizer_class == "sgd" else NmAdam)(
        agent=genome, warmup_steps=7, grn_steps_per_update=2, outputs=outputs
    )
    optimizer.apply([ops.convert_to_tensor(g) for g in grads], variables)

    # numpy: inputs of every tensor, one AGRN copy each, hyperparameters, update
    layers = [
        {"kernel": (weights[0], grads[0]), "bias": (weights[1], grads[1])},
        {"kernel": (weights[2], grads[2]), "bias": (weights[3], grads[3])},
    ]
    inputs = tensor_inputs(layers)
    order = [(0, "kernel"), (0, "bias"), (1, "kernel"), (1, "bias")]
    names = optimizer.HYPERPARAMETERS
    expected_inputs, expected_hparams, expected_weights = [], [], []
    for key, w, g in zip(order, weights, grads):
        grn = ReferenceAGRN(genome)
        for _ in range(7):
            grn.step()
        grn.set_inputs(inputs[key])
        for _ in range(2):
            grn.step()
        out = grn.outputs
        hp = {
            name: hyperparameter(
                out[2 * h],
                out[2 * h + 1],
                *optimizer.ranges[name],
                optimizer.scales[name],
            )
            for h, name in enumerate(names)
        }
        g = g.astype(np.float64)
        if optimizer_class == "sgd":
            m = -hp["learning_rate"] * g  # momentum starts at 0
            new = w + m
        else:
            m = (1 - hp["beta_1"]) * g
            v = (1 - hp["beta_2"]) * g**2
            alpha = hp["learning_rate"] * np.sqrt(1 - hp["beta_2"]) / (1 - hp["beta_1"])
            new = w - alpha * m / (np.sqrt(v) + hp["epsilon"])
        expected_inputs.append(inputs[key])
        expected_hparams.append([hp[n] for n in names])
        expected_weights.append(new)

    np.testing.assert_allclose(
        ops.convert_to_numpy(optimizer._grn_inputs), expected_inputs, atol=1e-6
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(optimizer._grn_hparams), expected_hparams, rtol=1e-4
    )
    for got, want in zip(model.get_weights(), expected_weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert len(optimizer._blocks) == (2 if block_size == 1 else 1)


@pytest.mark.slow
@pytest.mark.parametrize("cls,agent", [(NmSGD, sgd_agent), (NmAdam, adam_agent)])
def test_training_does_not_depend_on_the_blocks(digits_small, monkeypatch, cls, agent):
    """Blocks of one layer, of two, or one block: the same training."""
    runs = []
    for size in (1, 3, 2**20):
        monkeypatch.setattr(optimizer_base, "MODULATION_BLOCK_SIZE", size)
        x, y = digits_small
        model = models.build("mlp", (8, 8, 1), 10, hidden=(16, 16, 16), seed=0)
        optimizer = cls(agent=agent(3))
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
        runs.append((len(optimizer._blocks), model.get_weights(), optimizer.modulation()))
    assert [blocks for blocks, _, _ in runs] == [4, 2, 1]
    # equal up to float32 rounding (a reduction or product over fewer rows
    # may add in another order), within the tolerance of the Keras
    # equivalence tests after 20 steps
    (_, weights, modulation), others = runs[0], runs[1:]
    for _, other_weights, other_modulation in others:
        for a, b in zip(weights, other_weights):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for key in ("inputs", "hyperparameters"):
            np.testing.assert_allclose(modulation[key], other_modulation[key], rtol=1e-5, atol=1e-6)
        assert modulation["updates"] == other_modulation["updates"] == 20


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), max_size=25), st.integers(1, 9))
def test_blocks_are_whole_layers_of_at_least_the_block_size(layer_sizes, size):
    layer_of = [layer for layer, count in enumerate(layer_sizes) for _ in range(count)]
    blocks = optimizer_base._layer_blocks(layer_of, size)
    if not layer_of:
        assert blocks == []
        return
    # a partition of the tensors into consecutive ranges
    assert blocks[0][0] == 0 and blocks[-1][1] == len(layer_of)
    assert all(stop == start for (_, stop), (start, _) in zip(blocks, blocks[1:]))
    for start, stop in blocks:
        assert stop > start
        # whole layers only
        assert start == 0 or layer_of[start] != layer_of[start - 1]
    for start, stop in blocks[:-1]:
        # at least `size` tensors, and closed at the first layer end that allows it
        last_layer = layer_of[stop - 1]
        assert stop - start >= size
        assert stop - start - layer_of[start:stop].count(last_layer) < size


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="reads the dependencies of a TensorFlow graph")
@pytest.mark.parametrize("block_size", [2, 2**20])
def test_a_blocks_updates_wait_only_for_the_gradients_it_reads(monkeypatch, block_size):
    """The head's update does not wait for the first layer's gradient.

    With a block per layer, the last layer's tensors are updated as soon as
    their own gradients (and their statistics) are ready, while
    backpropagation still computes the first layer's gradient, as Keras's
    Adam does; with one block every update waits for every gradient.
    """
    import tensorflow as tf

    monkeypatch.setattr(optimizer_base, "MODULATION_BLOCK_SIZE", block_size)
    model = keras.Sequential(
        [keras.Input((5,))]
        + [keras.layers.Dense(5, activation="tanh") for _ in range(3)]
        + [keras.layers.Dense(1)]
    )
    variables = model.trainable_variables
    optimizer = NmAdam(agent=adam_agent())
    optimizer.build(variables)
    traced = {}

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        grads = tape.gradient(loss, variables)
        traced["first"] = grads[0].op
        optimizer.apply(grads, variables)

    graph = step.get_concrete_function(
        tf.TensorSpec((8, 5), tf.float32), tf.TensorSpec((8, 1), tf.float32)
    ).graph
    handles = {id(external): internal for external, internal in graph.captures}

    def writes(variable):
        handle = handles[id(variable.value.handle)]
        return [
            op
            for op in graph.get_operations()
            if op.type.startswith("Assign") and op.inputs and op.inputs[0] is handle
        ]

    def waits_for_first_gradient(op):
        seen, todo = set(), [op]
        while todo:
            node = todo.pop()
            for parent in [t.op for t in node.inputs] + list(node.control_inputs):
                if parent is traced["first"]:
                    return True
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return False

    head, first = writes(model.layers[-1].kernel), writes(model.layers[0].kernel)
    assert head and first
    assert all(waits_for_first_gradient(op) for op in first)
    assert any(waits_for_first_gradient(op) for op in head) == (block_size > 2**10)


def test_inputs_describe_location_size_and_next_layer():
    model = models.build("A", (8, 8, 1), 10, width=0.25, seed=0)
    optimizer = NmAdam(agent=adam_agent())
    optimizer.build(model.trainable_variables)
    static = optimizer._static_inputs
    # 6 layers with weights (4 conv, 1 dense, 1 output), kernel and bias each
    np.testing.assert_allclose(static[::2, 0], np.linspace(0, 1, 6))
    np.testing.assert_allclose(static[::2, 0], static[1::2, 0])
    assert static[:, 1].max() == 1.0
    assert list(optimizer._next_index) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, -1, -1]
    assert optimizer.tensor_kinds[:2] == ["kernel", "bias"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e30])
def test_non_finite_gradients_never_make_non_finite_hyperparameters(bad):
    model = _two_layer_model()
    variables = model.trainable_variables
    for optimizer in (NmSGD(agent=sgd_agent()), NmAdam(agent=adam_agent())):
        grads = [np.full(v.shape, bad, "float32") for v in variables]
        optimizer.apply([ops.convert_to_tensor(g) for g in grads], variables)
        hparams = ops.convert_to_numpy(optimizer._grn_hparams)
        inputs = ops.convert_to_numpy(optimizer._grn_inputs)
        assert np.all(np.isfinite(hparams)) and np.all(np.isfinite(inputs))
        assert inputs.min() >= 0 and inputs.max() <= 1
        for h, name in enumerate(optimizer.HYPERPARAMETERS):
            lo, hi = optimizer.ranges[name]
            assert np.all((hparams[:, h] >= lo * (1 - 1e-6)) & (hparams[:, h] <= hi * (1 + 1e-6)))


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    scale=st.floats(1e-8, 1e8),
    n_regulatory=st.integers(0, 8),
    adam=st.booleans(),
)
def test_hyperparameters_stay_in_their_ranges(seed, scale, n_regulatory, adam):
    model = _two_layer_model()
    variables = model.trainable_variables
    genome = Genome.random(13, 8 if adam else 4, n_regulatory, rng=seed)
    optimizer = (NmAdam if adam else NmSGD)(agent=genome)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        grads = [
            ops.convert_to_tensor((rng.normal(size=v.shape) * scale).astype("float32"))
            for v in variables
        ]
        optimizer.apply(grads, variables)
        hparams = ops.convert_to_numpy(optimizer._grn_hparams)
        assert np.all(np.isfinite(hparams))
        for h, name in enumerate(optimizer.HYPERPARAMETERS):
            lo, hi = optimizer.ranges[name]
            assert hparams[:, h].min() >= lo * (1 - 1e-6)
            assert hparams[:, h].max() <= hi * (1 + 1e-6)


@pytest.mark.slow
def test_save_and_load_continue_exactly(digits_small, tmp_path):
    x, y = digits_small
    optimizer = NmAdam(agent=adam_agent(5))
    _, model = fit_weights(optimizer, digits_small, epochs=1)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.optimizer, NmAdam)
    assert restored.optimizer.genome == optimizer.genome
    np.testing.assert_array_equal(
        ops.convert_to_numpy(restored.optimizer._grn_state),
        ops.convert_to_numpy(optimizer._grn_state),
    )
    model.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    restored.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    straight, _ = fit_weights(NmAdam(agent=adam_agent(5)), digits_small, epochs=2)
    for a, b, c in zip(restored.get_weights(), model.get_weights(), straight):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls,agent", [(NmSGD, sgd_agent), (NmAdam, adam_agent)])
def test_config_round_trip(cls, agent):
    optimizer = cls(
        agent=agent(3, n_regulatory=2),
        ranges={"learning_rate": (1e-3, 1e-2)},
        warmup_steps=5,
        grn_steps_per_update=2,
        max_regulatory=6,
        clipnorm=1.0,
    )
    config = json.loads(json.dumps(optimizer.get_config()))
    again = cls.from_config(config)
    assert again.genome == optimizer.genome
    assert again.ranges == optimizer.ranges
    assert (again.warmup_steps, again.grn_steps_per_update, again.max_regulatory) == (5, 2, 6)
    assert again.clipnorm == 1.0
    serialized = keras.optimizers.serialize(optimizer)
    revived = keras.optimizers.deserialize(json.loads(json.dumps(serialized)))
    assert type(revived) is cls and revived.genome == optimizer.genome


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs",
    [
        {"clipnorm": 0.5},
        {"weight_decay": 0.01},
        {"global_clipnorm": 1.0},
        {"use_ema": True, "ema_momentum": 0.9},
        {"gradient_accumulation_steps": 2},
    ],
)
def test_base_optimizer_options_keep_working(digits_small, kwargs):
    optimizer = NmAdam(agent=adam_agent(), **kwargs)
    weights, _ = fit_weights(optimizer, digits_small, epochs=1)
    assert all(np.all(np.isfinite(w)) for w in weights)
    # `iterations` counts applied updates: one per accumulation window
    every = kwargs.get("gradient_accumulation_steps", 1)
    assert int(optimizer.iterations) == 32 // every
    assert int(ops.convert_to_numpy(optimizer._grn_updates)) == 32 // every


@pytest.mark.slow
def test_weight_decay_is_applied(digits_small):
    plain, _ = fit_weights(NmSGD(agent=sgd_agent()), digits_small, epochs=1)
    decayed, _ = fit_weights(NmSGD(agent=sgd_agent(), weight_decay=0.5), digits_small, epochs=1)
    assert np.linalg.norm(decayed[0]) < np.linalg.norm(plain[0])


@pytest.mark.slow
def test_set_genome_swaps_agents_without_retracing(digits_small):
    x, y = digits_small
    first, second = adam_agent(7), adam_agent(8)
    model = small_model(0)
    initial = model.get_weights()
    optimizer = NmAdam(agent=first, max_regulatory=8)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    train_function = model.train_function
    model.set_weights(initial)
    optimizer.set_genome(second)
    model.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    assert model.train_function is train_function
    if hasattr(train_function, "experimental_get_tracing_count"):
        assert train_function.experimental_get_tracing_count() == 1
    fresh, _ = fit_weights(NmAdam(agent=second, max_regulatory=8), digits_small, epochs=1)
    # equal up to float reassociation between two compiled functions (XLA under
    # JAX reorders sums differently in the two programs)
    for a, b in zip(model.get_weights(), fresh):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="capacity"):
        optimizer.set_genome(adam_agent(9, n_regulatory=9))


def test_agent_from_file_and_clear_errors(tmp_path):
    path = tmp_path / "agent.json"
    path.write_text(adam_agent().to_json())
    assert NmAdam(agent=str(path)).genome == adam_agent()
    with pytest.raises(ValueError, match="made for NmSGD"):
        NmAdam(agent=sgd_agent())
    with pytest.raises(ValueError, match="made for NmAdam"):
        NmSGD(agent=str(path))
    with pytest.raises(ValueError, match="neither a genome JSON file"):
        NmAdam(agent="no-such-agent")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        NmAdam(agent=str(bad))
    with pytest.raises(TypeError):
        NmAdam(agent=3)


@pytest.mark.parametrize(
    "ranges,match",
    [
        ({"lr": (0.1, 0.2)}, "Unknown hyperparameter"),
        ({"learning_rate": (0.2, 0.1)}, "lo <= hi"),
        ({"learning_rate": (0.0, 0.1)}, "log space"),
        ({"beta_1": (0.5, 1.5)}, "valid interval"),
        ({"epsilon": (1e-8, float("nan"))}, "finite"),
        ({"beta_2": "high"}, "pair"),
    ],
)
def test_bad_ranges_are_refused(ranges, match):
    with pytest.raises(ValueError, match=match):
        NmAdam(agent=adam_agent(), ranges=ranges)
