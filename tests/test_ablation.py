"""The ablations of the modulation, against numpy; round trips; errors."""

import os

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from keras_neuromod import Genome
from keras_neuromod import NmAdam
from keras_neuromod import NmSGD
from keras_neuromod.callbacks import ModulationTracer
from keras_neuromod.optimizers.ablation import ablate
from keras_neuromod.optimizers.ablation import time_average


def _model(seed=0):
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _gradients(model, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [
        [rng.normal(0, 0.3, v.shape).astype("float32") for v in model.trainable_variables]
        for _ in range(steps)
    ]


def _apply(optimizer, model, gradients):
    for grads in gradients:
        optimizer.apply([ops.convert_to_tensor(g) for g in grads], model.trainable_variables)


def _adam(weights, gradients, table):
    """numpy Adam, per-tensor constant (learning rate, beta_1, beta_2, epsilon)."""
    result = []
    for t, w in enumerate(weights):
        lr, b1, b2, eps = (float(v) for v in table[t])
        w, m, v = w.astype(np.float64), 0.0, 0.0
        for step, grads in enumerate(gradients, start=1):
            g = grads[t].astype(np.float64)
            m = m + (1 - b1) * (g - m)
            v = v + (1 - b2) * (g**2 - v)
            w = w - lr * np.sqrt(1 - b2**step) / (1 - b1**step) * m / (np.sqrt(v) + eps)
        result.append(w)
    return result


def _to_space(table, scales):
    """x, log x or log(1 - x) per column, as each column's scale says."""
    scales = np.array(scales)
    with np.errstate(divide="ignore"):
        logged, complemented = np.log(table), np.log(1.0 - table)
    return np.where(
        scales == "log", logged, np.where(scales == "complement_log", complemented, table)
    )


def _from_space(mean, scales):
    scales = np.array(scales)
    return np.where(
        scales == "log",
        np.exp(mean),
        np.where(scales == "complement_log", 1.0 - np.exp(mean), mean),
    )


def _network_mean(table, scales):
    return _from_space(_to_space(table, scales).mean(axis=0), scales)


SCALES = {
    ("adam", "paper"): ["log", "linear", "linear", "log"],
    ("adam", "centred"): ["log", "complement_log", "complement_log", "log"],
    ("sgd", "paper"): ["log", "linear"],
    ("sgd", "centred"): ["log", "complement_log"],
}


AGENT = Genome.random(13, 8, 4, rng=3)


@pytest.mark.parametrize("outputs", ["paper", "centred"])
def test_network_mean_gives_every_tensor_the_mean_of_the_agents_choice(outputs):
    gradients = _gradients(_model(), 1)
    plain_model, plain = _model(), NmAdam(agent=AGENT, outputs=outputs)
    _apply(plain, plain_model, gradients)
    chosen = plain.modulation()["hyperparameters"].astype(np.float64)

    model = _model()
    pooled = ablate(NmAdam(agent=AGENT, outputs=outputs), "network_mean")
    assert pooled.output_set.name == outputs
    _apply(pooled, model, gradients)
    # geometric for learning rate and epsilon; of 1 - beta for the centred set's betas
    expected = _network_mean(chosen, SCALES["adam", outputs])
    used = pooled.modulation()["hyperparameters"]
    np.testing.assert_allclose(used, np.tile(expected, (len(used), 1)), rtol=1e-5)
    assert not np.allclose(chosen, expected)  # the agent itself does differ per tensor
    want = _adam(_model().get_weights(), gradients, np.tile(expected, (len(used), 1)))
    for got, w in zip(model.get_weights(), want):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6)


def test_frozen_keeps_each_tensors_values_through_training():
    table = np.array(
        [
            [1e-3, 0.9, 0.999, 1e-7],
            [3e-2, 0.5, 0.99, 1e-3],
            [1e-4, 0.0, 0.9, 1e-8],
            [5e-3, 0.99, 0.9999, 0.1],
        ]
    )
    gradients = _gradients(_model(), 3)
    model = _model()
    frozen = ablate(NmAdam(agent=AGENT), "frozen", hyperparameters=table)
    _apply(frozen, model, gradients)
    np.testing.assert_allclose(frozen.modulation()["hyperparameters"], table, rtol=1e-6)
    for got, want in zip(model.get_weights(), _adam(_model().get_weights(), gradients, table)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # new values without a new optimizer (a variable: no retrace), also after a reset
    frozen.set_hyperparameters(table[::-1])
    _apply(frozen, model, gradients[:1])
    np.testing.assert_allclose(frozen.modulation()["hyperparameters"], table[::-1], rtol=1e-6)
    frozen.reset_state()
    np.testing.assert_allclose(ops.convert_to_numpy(frozen.frozen_variable), table[::-1], rtol=1e-6)
    with pytest.raises(ValueError, match="keep the shape"):
        frozen.set_hyperparameters(table[:2])
    # values outside the ranges are clipped to them, as the agent's own
    wide = ablate(NmAdam(agent=AGENT), "frozen", hyperparameters=table * [[100, 1, 1, 1]])
    _apply(wide, _model(), gradients[:1])
    assert wide.modulation()["hyperparameters"][:, 0].max() == pytest.approx(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("outputs", ["paper", "centred"])
def test_time_average_of_a_traced_training_freezes_the_agent(outputs):
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 2, 64)
    optimizer = NmSGD(agent=Genome.random(13, 4, 3, rng=5), outputs=outputs)
    model = _model()
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    tracer = ModulationTracer(update_freq=1)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[tracer])
    recorded = tracer.hyperparameters.astype(np.float64)
    assert recorded.shape == (8, 4, 2)
    expected = _from_space(
        _to_space(recorded, SCALES["sgd", outputs]).mean(axis=0), SCALES["sgd", outputs]
    )
    average = time_average(tracer, optimizer)
    np.testing.assert_allclose(average, expected, rtol=1e-5)
    np.testing.assert_array_equal(
        average, time_average(tracer.hyperparameters, NmSGD, outputs=outputs)
    )

    frozen = ablate(optimizer, "frozen", hyperparameters=average)
    assert type(frozen).__name__ == "FrozenNmSGD" and isinstance(frozen, NmSGD)
    model = _model()
    model.compile(
        optimizer=frozen, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_allclose(frozen.modulation()["hyperparameters"], average, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ["network_mean", "frozen"])
def test_ablated_optimizers_round_trip_through_model_save(ablation, tmp_path):
    table = np.tile([[1e-2, 0.8, 0.99, 1e-6]], (4, 1))
    optimizer = ablate(
        NmAdam(agent=AGENT, warmup_steps=3),
        ablation,
        hyperparameters=table if ablation == "frozen" else None,
    )
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, 2)).astype("float32")
    model = _model()
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is type(optimizer) and loaded.optimizer.warmup_steps == 3
    if ablation == "frozen":
        np.testing.assert_array_equal(
            loaded.optimizer.frozen_hyperparameters, table.astype("float32")
        )
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # both continue exactly alike
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    again = ablate(optimizer, "network_mean")  # an ablated optimizer's agent and settings
    assert type(again).__name__ == "NetworkMeanNmAdam" and again.warmup_steps == 3


def test_bad_ablations_are_refused():
    with pytest.raises(TypeError, match="neuromodulated optimizer"):
        ablate(keras.optimizers.Adam(), "network_mean")
    with pytest.raises(ValueError, match="ablation must be one of"):
        ablate(NmAdam(agent=AGENT), "shuffle")
    with pytest.raises(ValueError, match="'frozen' ablation"):
        ablate(NmAdam(agent=AGENT), "frozen")
    with pytest.raises(ValueError, match="'frozen' ablation"):
        ablate(NmAdam(agent=AGENT), "network_mean", hyperparameters=np.ones((4, 4)))
    with pytest.raises(ValueError, match="finite"):
        ablate(NmAdam(agent=AGENT), "frozen", hyperparameters=np.full((4, 4), np.nan))
    wrong = ablate(NmAdam(agent=AGENT), "frozen", hyperparameters=np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        _apply(wrong, _model(), _gradients(_model(), 1))
    with pytest.raises(ValueError, match="steps >= 1"):
        time_average(np.zeros((0, 4, 4)), NmAdam)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_network_mean_is_one_row_inside_the_ranges(seed, scale):
    model = _model(seed)
    gradients = [[g * scale for g in step] for step in _gradients(model, 2, seed)]
    optimizer = ablate(NmAdam(agent=Genome.random(13, 8, 3, rng=seed)), "network_mean")
    _apply(optimizer, model, gradients)
    used = optimizer.modulation()["hyperparameters"]
    assert np.all(used == used[0])
    for h, name in enumerate(NmAdam.HYPERPARAMETERS):
        lo, hi = optimizer.ranges[name]
        assert lo <= used[0, h] <= hi
