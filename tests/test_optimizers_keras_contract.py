"""Nm-SGD and Nm-Adam where Keras users run them.

Multi-device training, decoupled weight decay, sparse and missing gradients,
agents that carry their own ranges, naming and fixed ranges. Each test runs on
the backend of the session (TensorFlow by default; `tox -e jax` runs them
under JAX).
"""

import functools
import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from helpers import adam_agent
from helpers import fixed
from helpers import sgd_agent
from keras_neuromod import Genome
from keras_neuromod import NmAdam
from keras_neuromod import NmSGD
from keras_neuromod.optimizers import base as optimizer_base
from keras_neuromod.optimizers.base import _abs_stats

BACKEND = keras.backend.backend()
HERE = os.path.dirname(os.path.abspath(__file__))


def apply(optimizer, grads, variables, steps=1):
    for _ in range(steps):
        optimizer.apply_gradients(zip(grads, variables))
    return [ops.convert_to_numpy(v) for v in variables]


# -- multi-device training ----------------------------------------------------


def _jax_installed():
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _two_devices(backend):
    """tests/multi_device.py's measures for Nm-Adam and Nm-SGD, in one fresh process."""
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "multi_device.py"), backend],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend,optimizer",
    [("tensorflow", "adam"), ("tensorflow", "sgd"), ("jax", "adam"), ("jax", "sgd")],
)
def test_two_devices_train_like_one(backend, optimizer):
    """Two replicas at one global batch end where one device ends.

    A random agent with wide ranges (not collapsed to Keras's optimizers), an
    Embedding (sparse gradients, all-reduced with repeated rows) and weight
    decay; 8 steps. Runs in a fresh process (one per backend, for both
    optimizers), since the device count must be set before the backend starts.
    """
    if backend == "jax" and not _jax_installed():
        pytest.skip("JAX is not installed (pip install keras_neuromod[jax])")
    measured = _two_devices(backend)[optimizer]
    assert measured["replica_count"] == 2
    assert measured["weights"] < 1e-5, measured
    assert measured["optimizer"] < 1e-5, measured
    assert measured["replicas"] == 0.0, measured


# -- weight decay ---------------------------------------------------------------


@pytest.mark.parametrize("multiplier", [1.0, 0.5])
def test_fixed_ranges_decay_like_keras_adam(multiplier):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(5)]
    values = {"learning_rate": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    nm = NmAdam(
        agent=adam_agent(), ranges=fixed(**values), weight_decay=0.004, learning_rate=multiplier
    )
    keras_adam = keras.optimizers.Adam(
        learning_rate=0.01 * multiplier,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        weight_decay=0.004,
    )
    ours, theirs = keras.Variable(start), keras.Variable(start)
    for g in grads:
        nm.apply_gradients([(ops.convert_to_tensor(g), ours)])
        keras_adam.apply_gradients([(ops.convert_to_tensor(g), theirs)])
    np.testing.assert_allclose(ops.convert_to_numpy(ours), ops.convert_to_numpy(theirs), atol=1e-6)


def test_fixed_ranges_decay_like_keras_sgd_and_honour_exclusions():
    zero = ops.zeros(())
    nm = NmSGD(
        agent=sgd_agent(), ranges=fixed(learning_rate=0.01, momentum=0.5), weight_decay=0.004
    )
    nm.exclude_from_weight_decay(var_names=["exclude"])
    decayed, excluded = keras.Variable(2.0), keras.Variable(2.0, name="exclude")
    got = apply(nm, [zero, zero], [decayed, excluded], steps=3)
    np.testing.assert_allclose(got[0], 2.0 * (1 - 0.004 * 0.01) ** 3, rtol=1e-7)
    assert got[1] == 2.0
    # the number quoted for Keras's Adam(0.01, weight_decay=0.004) on w = 2
    adam = NmAdam(agent=adam_agent(), ranges=fixed(learning_rate=0.01), weight_decay=0.004)
    w = keras.Variable(2.0)
    np.testing.assert_allclose(apply(adam, [zero], [w])[0], 1.99992, rtol=1e-7)


def test_decay_uses_each_tensors_modulated_learning_rate():
    """With a zero gradient Adam's step is 0, so only the decay moves w."""
    rng = np.random.default_rng(1)
    starts = [rng.normal(size=shape).astype("float32") for shape in ((4, 3), (3,), (3, 2))]
    variables = [keras.Variable(s) for s in starts]
    optimizer = NmAdam(
        agent=adam_agent(5),
        ranges={"learning_rate": (1e-3, 0.5)},
        weight_decay=0.1,
        learning_rate=0.7,
    )
    got = apply(optimizer, [ops.zeros(s.shape) for s in starts], variables)
    rates = ops.convert_to_numpy(optimizer._grn_hparams)[:, 0]
    assert np.ptp(rates) > 0  # the agent gives the tensors different rates
    for start, new, rate in zip(starts, got, rates):
        np.testing.assert_allclose(new, start * (1 - 0.1 * 0.7 * rate), rtol=1e-6, atol=1e-7)


# -- sparse and missing gradients ----------------------------------------------


def _sparse(values, indices, shape):
    """A backend's sparse gradient: rows `indices` of a `shape` table."""
    values = np.asarray(values, "float32")
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.IndexedSlices(
            tf.constant(values), tf.constant(indices, tf.int64), tf.constant(shape, tf.int64)
        )
    if BACKEND == "jax":
        from jax.experimental import sparse

        return sparse.BCOO((values, np.asarray(indices, "int32")[:, None]), shape=tuple(shape))
    pytest.skip(f"sparse gradients are not defined for the {BACKEND} backend")


@settings(max_examples=25, deadline=None)
@given(
    indices=st.lists(st.integers(0, 5), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_gradient_statistics_of_sparse_gradients_equal_the_dense_ones(indices, seed):
    """Repeated rows add up, as in the dense gradient they stand for."""
    values = np.random.default_rng(seed).normal(size=(len(indices), 3)).astype("float32")
    dense = np.zeros((6, 3), np.float32)
    np.add.at(dense, indices, values)
    got = ops.convert_to_numpy(_abs_stats([_sparse(values, indices, (6, 3))], [18]))[0]
    magnitude = np.abs(dense)
    expected = [magnitude.mean(), np.sqrt(max((dense**2).mean() - magnitude.mean() ** 2, 0))]
    expected = np.clip(expected, 0.0, 1.0)  # AGRN inputs are clipped to [0, 1]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _numpy_abs_stats(dense):
    """Mean and standard deviation of |x| in float64, clipped to [0, 1] as AGRN inputs."""
    magnitude = np.abs(np.asarray(dense, np.float64))
    mean = magnitude.mean()
    return np.clip([mean, np.sqrt(max((magnitude**2).mean() - mean**2, 0.0))], 0.0, 1.0)


# shapes drawn from a few, so that several tensors share a shape (stacked together)
_SHAPES = [(), (1,), (3,), (4,), (2, 3), (3, 2), (2, 2, 2), (5, 4), (4, 5), (6, 3)]


@settings(max_examples=30, deadline=None)
@given(
    picks=st.lists(
        st.tuples(st.integers(0, len(_SHAPES) - 1), st.sampled_from(["dense", "none", "sparse"])),
        min_size=1,
        max_size=14,
    ),
    largest_grouped=st.sampled_from([0, 4, 12, 1 << 16]),
    seed=st.integers(0, 2**16),
)
def test_statistics_of_many_tensors_equal_each_tensors_own(picks, largest_grouped, seed):
    """Small tensors stacked by shape, large, sparse and missing ones alone: same numbers.

    `largest_grouped` moves the size bound of the stacked tensors, so that
    the same shapes are reduced in groups, alone, or both in one call.
    """
    rng = np.random.default_rng(seed)
    tensors, expected, sizes = [], [], []
    for shape_index, kind in picks:
        shape = _SHAPES[shape_index]
        size = int(np.prod(shape))
        sizes.append(size)
        scale = rng.choice([1e-3, 0.3, 3.0])  # |x| beyond 1 is clipped to 1
        if kind == "none":
            tensors.append(None)
            expected.append([0.0, 0.0])
        elif kind == "sparse" and len(shape) == 2 and BACKEND in ("tensorflow", "jax"):
            indices = rng.integers(0, shape[0], 1 + rng.integers(0, 4)).tolist()
            values = (rng.normal(size=(len(indices), shape[1])) * scale).astype("float32")
            dense = np.zeros(shape, np.float32)
            np.add.at(dense, indices, values)
            tensors.append(_sparse(values, indices, shape))
            expected.append(_numpy_abs_stats(dense))
        else:
            value = (rng.normal(size=shape) * scale).astype("float32")
            tensors.append(ops.convert_to_tensor(value))
            expected.append(_numpy_abs_stats(value))
    bound = optimizer_base.GROUPED_STATISTICS_MAX_SIZE
    optimizer_base.GROUPED_STATISTICS_MAX_SIZE = largest_grouped
    try:
        got = ops.convert_to_numpy(_abs_stats(tensors, sizes))
    finally:
        optimizer_base.GROUPED_STATISTICS_MAX_SIZE = bound
    assert got.shape == (len(tensors), 2)
    # the standard deviation comes from E[x^2] - E[|x|]^2 in float32: for a
    # nearly constant |x| it carries an error of about sqrt(eps) * mean
    np.testing.assert_allclose(got[:, 0], np.asarray(expected)[:, 0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got[:, 1], np.asarray(expected)[:, 1], rtol=1e-3, atol=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="counts the operations of a TensorFlow graph")
def test_the_step_adds_no_more_operations_per_tensor_than_keras_adam(monkeypatch):
    """The modulation's operations do not grow with the number of tensors.

    Keras's Adam dispatches a fixed set of operations per tensor. Within one
    block of tensors, Nm-Adam's step (the statistics, the AGRN, the
    per-tensor values) adds a fixed number to the whole block, not to each
    tensor; and a block, at least `MODULATION_BLOCK_SIZE` tensors, adds no
    more than the modulation of a whole small model does.
    """
    import tensorflow as tf

    def operations(make, count):
        shapes = [(3, 5), (5,), (5, 2), (2,)] * (count // 4)
        variables = [keras.Variable(np.ones(shape, "float32") / 2) for shape in shapes]
        grads = [tf.constant(np.full(shape, 0.1, "float32")) for shape in shapes]
        optimizer = make()
        optimizer.build(variables)
        step = tf.function(lambda: optimizer.apply(grads, variables))
        return len(step.get_concrete_function().graph.get_operations()), optimizer

    def growth(make):
        return operations(make, 64)[0] - operations(make, 8)[0]

    pairs = [
        (lambda: NmAdam(agent=adam_agent()), keras.optimizers.Adam),
        (lambda: NmSGD(agent=sgd_agent()), lambda: keras.optimizers.SGD(0.01, momentum=0.9)),
    ]
    monkeypatch.setattr(optimizer_base, "MODULATION_BLOCK_SIZE", 2**20)
    for modulated, plain in pairs:
        assert growth(modulated) <= growth(plain)
    monkeypatch.setattr(optimizer_base, "MODULATION_BLOCK_SIZE", 32)
    for modulated, plain in pairs:
        small, optimizer = operations(modulated, 8)
        large, blocked = operations(modulated, 64)
        assert (len(optimizer._blocks), len(blocked._blocks)) == (1, 2)
        added_small = small - operations(plain, 8)[0]
        assert large - operations(plain, 64)[0] <= 2 * added_small


class _SparseWrites:
    """Wrap an optimizer's `assign_sub` to see whether sparse values reach it."""

    def __init__(self, optimizer):
        self.sparse_values = 0
        original = optimizer.assign_sub

        def assign_sub(variable, value):
            if type(value).__name__ in ("IndexedSlices", "BCOO"):
                self.sparse_values += 1
            return original(variable, value)

        optimizer.assign_sub = assign_sub


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True] if BACKEND == "tensorflow" else [True])
def test_sgd_without_momentum_updates_only_the_rows_looked_up(jit):
    """An Embedding trained by NmSGD (momentum fixed at 0) as by Keras's SGD."""

    def train(optimizer):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((3,), dtype="int32"),
                keras.layers.Embedding(50, 4),
                keras.layers.Flatten(),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
        before = model.get_weights()[0]
        x = np.array([[1, 2, 3], [2, 5, 7]] * 4, "int32")
        model.fit(x, np.ones((8, 1)), batch_size=4, epochs=2, verbose=0, shuffle=False)
        return before, model.get_weights()

    nm = NmSGD(agent=sgd_agent(), ranges=fixed(learning_rate=0.1, momentum=0.0))
    writes = _SparseWrites(nm)
    before, ours = train(nm)
    _, theirs = train(keras.optimizers.SGD(0.1))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    untouched = np.setdiff1d(np.arange(50), [1, 2, 3, 5, 7])
    np.testing.assert_array_equal(ours[0][untouched], before[untouched])
    assert nm.momentums == []  # no momentum state to keep
    if BACKEND == "tensorflow":
        assert writes.sparse_values > 0  # the table is updated row by row


@pytest.mark.parametrize("cls,agent", [(NmSGD, sgd_agent), (NmAdam, adam_agent)])
def test_sparse_gradient_updates_like_its_dense_value(cls, agent):
    """A sparse gradient with a repeated row moves the weights as its dense sum."""
    values, indices = [[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]], [0, 3, 0]
    dense = np.zeros((5, 2), np.float32)
    np.add.at(dense, indices, np.asarray(values, np.float32))
    got, want = keras.Variable(np.ones((5, 2))), keras.Variable(np.ones((5, 2)))
    sparse_optimizer, dense_optimizer = cls(agent=agent(2)), cls(agent=agent(2))
    for _ in range(3):
        sparse_optimizer.apply_gradients([(_sparse(values, indices, (5, 2)), got)])
        dense_optimizer.apply_gradients([(ops.convert_to_tensor(dense), want)])
    np.testing.assert_allclose(ops.convert_to_numpy(got), ops.convert_to_numpy(want), rtol=1e-6)


@pytest.mark.parametrize("cls,agent", [(NmSGD, sgd_agent), (NmAdam, adam_agent)])
def test_a_variable_without_gradient_is_skipped(cls, agent):
    first, second = keras.Variable(np.ones((2, 2))), keras.Variable(np.ones((3,)))
    optimizer = cls(agent=agent())
    optimizer.build([first, second])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer.apply_gradients([(ops.ones((2, 2)), first), (None, second)])
    assert any("Gradients do not exist" in str(w.message) for w in caught)
    np.testing.assert_array_equal(ops.convert_to_numpy(second), np.ones(3))
    assert not np.allclose(ops.convert_to_numpy(first), 1.0)
    inputs = ops.convert_to_numpy(optimizer._grn_inputs)
    np.testing.assert_array_equal(inputs[1, 4:6], [0.0, 0.0])  # no gradient: statistics 0
    assert np.all(inputs[0, 4:6] >= 0) and inputs[0, 4] > 0


# -- agents that carry their ranges ------------------------------------------------


def _zoo_style_agent(genome, ranges, warmup_steps=10):
    return {
        "format": "keras_neuromod.agent/1",
        "name": "carried",
        "base": "adam",
        "genome": genome.to_dict(),
        "ranges": {k: list(v) for k, v in ranges.items()},
        "settings": {"warmup_steps": warmup_steps, "grn_steps_per_update": 1},
    }


def test_set_genome_applies_an_agents_ranges_before_build_and_refuses_after():
    carried = _zoo_style_agent(adam_agent(3), {"learning_rate": (1e-4, 1e-3)})
    optimizer = NmAdam(agent=adam_agent(2))
    optimizer.set_genome(carried)
    assert optimizer.ranges["learning_rate"] == (1e-4, 1e-3)
    assert optimizer.warmup_steps == 10
    assert optimizer.genome == adam_agent(3)

    built = NmAdam(agent=adam_agent(2))
    w = keras.Variable(np.ones((2,)))
    apply(built, [ops.ones((2,))], [w])
    with pytest.raises(ValueError, match=r"agent\.genome") as error:
        built.set_genome(carried)
    assert "learning_rate" in str(error.value) or "ranges" in str(error.value)
    assert built.genome == adam_agent(2)  # refused: nothing changed
    built.set_genome(adam_agent(3))  # a bare genome keeps the optimizer's ranges
    assert built.genome == adam_agent(3)
    same = _zoo_style_agent(adam_agent(4), built.ranges, warmup_steps=built.warmup_steps)
    built.set_genome(same)  # equal ranges and settings: accepted
    assert built.genome == adam_agent(4)


# -- naming and fixed values ----------------------------------------------------------


def test_optimizers_are_numbered_like_keras_optimizers():
    first, second = NmAdam(agent=adam_agent()), NmAdam(agent=adam_agent())
    assert first.name.startswith("nm_adam") and second.name.startswith("nm_adam")
    assert first.name != second.name
    sgd_1, sgd_2 = NmSGD(agent=sgd_agent()), NmSGD(agent=sgd_agent())
    assert sgd_1.name.startswith("nm_sgd") and sgd_1.name != sgd_2.name
    assert NmAdam(agent=adam_agent(), name="mine").name == "mine"
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(second))
    assert revived.name == second.name


def test_a_zero_learning_rate_is_legal_and_changes_nothing():
    optimizer = NmSGD(agent=sgd_agent(), ranges=fixed(learning_rate=0.0, momentum=0.9))
    w = keras.Variable(np.arange(3.0))
    np.testing.assert_array_equal(
        apply(optimizer, [ops.ones((3,))], [w], steps=2)[0], np.arange(3.0)
    )
    adam = NmAdam(agent=adam_agent(), ranges=fixed(learning_rate=0.0))
    np.testing.assert_array_equal(apply(adam, [ops.ones((3,))], [w])[0], np.arange(3.0))
    with pytest.raises(ValueError, match="log space"):
        NmSGD(agent=sgd_agent(), ranges={"learning_rate": (0.0, 0.1)})


@pytest.mark.parametrize("weight_decay", [None, 0.05])
def test_adam_on_a_sparse_gradient_with_repeated_rows_is_adam_on_its_dense_gradient(weight_decay):
    """An Embedding's gradient repeats rows; Nm-Adam squares the summed gradient, as Adam defines.

    Checked against an independent numpy Adam step on the dense gradient. (Keras's
    own Adam on TensorFlow squares each repeated row's slice before adding them,
    `ops.square` of an `IndexedSlices`, so its second moment differs from this
    where rows repeat; on JAX, whose gradients are dense, Keras's Adam agrees.)
    """
    values = np.array([[0.5, -1.0], [0.25, 2.0], [-0.5, 0.5]], "float32")
    indices = [1, 1, 3]  # row 1 twice
    table = keras.Variable(np.full((4, 2), 0.3, "float32"))
    ranges = {
        "learning_rate": (1e-2, 1e-2),
        "beta_1": (0.9, 0.9),
        "beta_2": (0.999, 0.999),
        "epsilon": (1e-7, 1e-7),
    }
    optimizer = NmAdam(
        agent=Genome.random(13, 8, 2, rng=0), ranges=ranges, weight_decay=weight_decay
    )
    optimizer.build([table])
    optimizer.apply([_sparse(values, indices, (4, 2))], [table])
    dense = np.zeros((4, 2))
    np.add.at(dense, indices, values)
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-7, weight_decay or 0.0
    m, v = (1 - b1) * dense, (1 - b2) * dense**2
    alpha = lr * np.sqrt(1 - b2) / (1 - b1)
    expected = 0.3 * (1 - wd * lr) - alpha * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(ops.convert_to_numpy(table), expected, rtol=1e-5, atol=1e-7)
