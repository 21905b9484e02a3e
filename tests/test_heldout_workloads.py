"""The held-out workloads: a residual CNN with batch normalisation, a Transformer on
tokens, forecasting of real series (statsmodels), an autoencoder and a long dropout
training. Never drawn by evolution; their data are deterministic; their models seeded.

Runs under either backend: ``KERAS_BACKEND=jax python -m pytest tests/test_heldout_workloads.py``.
"""

import csv
import importlib.util
import math
import os
import sys

import keras
import numpy as np
import pytest

from keras_neuromod import datasets
from keras_neuromod import models
from keras_neuromod import tasks

WORKLOADS = {
    "shapes_resnet": "resnet_bn",
    "token_after_marker": "transformer",
    "digits_autoencoder": "autoencoder",
    "hastie_dropout": "dropout_mlp",
    "co2_forecast": "gru",
    "sunspots_forecast": "causal_conv1d",
    "elnino_forecast": "gru",
}
FORECASTS = {  # task -> (statsmodels data set, window, horizon, test fraction, relative)
    "co2_forecast": ("co2", 26, 4, 0.25, True),
    "sunspots_forecast": ("sunspots", 20, 1, 0.3, False),
    "elnino_forecast": ("elnino", 24, 3, 0.25, False),
}
GENERATED = {"shapes_resnet", "token_after_marker", "hastie_dropout"}
PAIRS = [(name, model) for name in WORKLOADS for model in tasks.get(name).models]


def _steps(task):
    """Optimizer steps of one training of the task's budget."""
    return task.epochs * math.ceil(len(task.splits(0).train[0]) / task.batch_size)


def test_every_workload_is_held_out_and_never_drawn_by_evolution():
    from keras_neuromod.evolution import SuiteTask

    for name, model in WORKLOADS.items():
        task = tasks.get(name)
        assert task.held_out and model in task.models
        assert task.description.endswith(".") and task.description.count(". ") == 0
    suite = SuiteTask()
    assert not set(suite.tasks) & set(WORKLOADS)
    drawn = {name for seed in range(40) for name, _, _ in suite.draw(seed)}
    assert drawn and not drawn & set(WORKLOADS)


def test_forecasting_is_a_family_of_held_out_tasks_only():
    assert "forecasting" in tasks.FAMILIES and "forecasting" in tasks.HELD_OUT_FAMILIES
    assert set(tasks.names(family="forecasting")) == set(FORECASTS)
    assert tasks.names(family="forecasting", held_out=False) == []
    assert not set(tasks.HELD_OUT_FAMILIES) & {
        tasks.get(n).family for n in tasks.names(held_out=False)
    }
    with pytest.raises(ValueError, match="family 'forecasting' is held out"):
        tasks.Task("mine", "forecasting", tasks._sunspots, ("gru",), "mean_squared_error", epochs=1)


def test_the_long_training_is_four_times_the_suites_longest_and_batches_span_8_to_256():
    longest = max(_steps(tasks.get(name)) for name in tasks.names(held_out=False))
    long = tasks.get("hastie_dropout")
    assert _steps(long) >= 4 * longest
    assert "dropout_mlp" in long.models
    assert not set(tasks.names(held_out=False)) & {"hastie_dropout"}
    batches = {tasks.get(name).batch_size for name in WORKLOADS}
    assert min(batches) == 8 and max(batches) == 256


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_data_are_finite_and_deterministic_per_seed(name):
    task = tasks.get(name)
    first, again, other = task.data(0), task.data(0), task.data(1)
    for a, b in zip(first.train + first.test, again.train + again.test):
        np.testing.assert_array_equal(a, b)
    assert np.array_equal(first.train[0], other.train[0]) != (name in GENERATED)
    for x in first.train + first.test:
        assert np.all(np.isfinite(x))
    splits = task.splits(0)
    if task.loss == "mean_squared_error":
        assert splits.num_classes == 0 and splits.train[1].ndim == 2
    else:
        assert set(np.unique(splits.train[1])) == set(range(splits.num_classes))


def test_the_autoencoders_target_is_its_input():
    (x, y), (x_test, y_test), num_classes = tasks.get("digits_autoencoder").data(0)
    assert num_classes == 0 and x.shape[1:] == (8, 8, 1) and y.shape[1:] == (64,)
    np.testing.assert_array_equal(y, x.reshape(len(x), 64))
    np.testing.assert_array_equal(y_test, x_test.reshape(len(x_test), 64))
    np.testing.assert_array_equal(x, datasets.digits().train[0])


def test_the_token_task_needs_positions_not_a_bag_of_tokens():
    (x, y), _, num_classes = tasks.get("token_after_marker").data(0)
    tokens = x.astype(int)
    assert np.array_equal(tokens, x) and tokens.max() < tasks.TOKENS
    marker = tokens == 1
    assert np.all(marker.sum(1) == 1) and not np.any(marker[:, -1])
    for symbol in range(num_classes):  # every symbol twice in every sequence
        assert np.all((tokens == symbol + 2).sum(1) == 2)
    after = tokens[np.arange(len(tokens)), np.argmax(marker, 1) + 1]
    np.testing.assert_array_equal(after - 2, y)


def _statsmodels_csv(name):
    """An independent read of the CSV file that statsmodels ships (not through statsmodels)."""
    spec = importlib.util.find_spec("statsmodels")
    if spec is None:
        pytest.skip("statsmodels is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", name, f"{name}.csv")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    if name == "co2":  # weekly, gaps left empty: interpolate between the neighbours
        values = np.array([float(row[1]) if row[1] else np.nan for row in rows])
        known = np.flatnonzero(np.isfinite(values))
        return np.interp(np.arange(len(values)), known, values[known])
    if name == "sunspots":
        return np.array([float(row[1]) for row in rows])
    return np.array([[float(v) for v in row[1:13]] for row in rows]).reshape(-1)


def _affine_residual(standardised, raw):
    """The largest residual of fitting `standardised` as `a * raw + b` (a > 0), and `a`."""
    design = np.stack([raw.reshape(-1), np.ones(raw.size)], 1)
    (a, b), *_ = np.linalg.lstsq(design, standardised.reshape(-1).astype(np.float64), rcond=None)
    return np.max(np.abs(design @ (a, b) - standardised.reshape(-1))), a


@pytest.mark.parametrize("name", sorted(FORECASTS))
def test_forecasting_data_are_the_statsmodels_series_split_in_time(name):
    source, window, horizon, test_fraction, relative = FORECASTS[name]
    series = _statsmodels_csv(source)
    assert len(series) == {"co2": 2284, "sunspots": 309, "elnino": 732}[source]
    (x, y), (x_test, y_test), num_classes = tasks.get(name).data(0)
    assert num_classes == 0 and x.shape[1:] == (window, 1) and y.shape[1] == horizon
    split = len(series) - int(round(len(series) * test_fraction))
    starts = np.arange(window, len(series) - horizon + 1)
    train, test = starts[starts + horizon <= split], starts[starts >= split]
    assert (len(x), len(x_test)) == (len(train), len(test))
    assert test[0] == split and series.size - horizon == test[-1], "the test targets are the end"

    def windows(at):
        past = series[at[:, None] + np.arange(-window, 0)]
        future = series[at[:, None] + np.arange(horizon)]
        if relative:
            past, future = past - past[:, -1:], future - past[:, -1:]
        return past, future

    (past, future), (past_test, future_test) = windows(train), windows(test)
    # standardised with the training windows' statistics only: one affine map for
    # all inputs, one per target column, the same for train and test
    residual, scale = _affine_residual(
        np.concatenate([x[..., 0], x_test[..., 0]]), np.concatenate([past, past_test])
    )
    assert scale > 0 and residual < 1e-4
    np.testing.assert_allclose(x[..., 0].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[..., 0].std(), 1.0, atol=1e-5)
    for column in range(horizon):
        residual, scale = _affine_residual(
            np.concatenate([y[:, column], y_test[:, column]]),
            np.concatenate([future[:, column], future_test[:, column]]),
        )
        assert scale > 0 and residual < 1e-4
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(0), 1.0, atol=1e-5)


def test_forecasting_data_say_what_to_install_without_statsmodels(monkeypatch):
    tasks._statsmodels_series.cache_clear()
    try:
        monkeypatch.setitem(sys.modules, "statsmodels", None)
        monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)
        for name in FORECASTS:
            with pytest.raises(datasets.DatasetUnavailableError, match="pip install statsmodels"):
                tasks.get(name).data(0)
    finally:
        tasks._statsmodels_series.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("name,model", PAIRS)
def test_models_build_seeded_output_the_right_shape_and_learn(name, model):
    task = tasks.get(name)
    splits = task.splits(0)
    net = task.build_model(model, seed=3)
    for a, b in zip(net.get_weights(), task.build_model(model, seed=3).get_weights()):
        np.testing.assert_array_equal(a, b)
    assert net.output_shape == (None, splits.output_dim)
    x, y = (a[:256] for a in splits.train)
    loss = task.loss_function()

    def training_loss():
        out = net(x, training=False)
        return float(keras.ops.convert_to_numpy(loss(y, out))), out

    before, out = training_loss()
    assert out.shape == (len(x), splits.output_dim) and np.all(np.isfinite(out))
    # for a few steps, TensorFlow's graph alone is quicker than XLA; JAX needs its jit
    task.compile(net, keras.optimizers.Adam(3e-3), jit_compile=keras.backend.backend() == "jax")
    net.fit(x, y, epochs=3, batch_size=32, shuffle=False, verbose=0)
    assert training_loss()[0] < before


def test_the_transformer_reads_float_or_int_ids_and_its_projections_differ(tmp_path):
    task = tasks.get("token_after_marker")
    net = task.build_model("transformer", seed=0)
    x = task.splits(0).test[0][:16]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(net(x)),
        keras.ops.convert_to_numpy(net(x.astype("int32"))),
        rtol=1e-6,
    )
    attention = net.get_layer("attention")
    projections = [
        keras.ops.convert_to_numpy(p.kernel)
        for p in (attention.query_dense, attention.key_dense, attention.value_dense)
    ]
    assert not np.array_equal(projections[0], projections[1])
    assert not np.array_equal(projections[0], projections[2])
    for layer in (
        attention.query_dense,
        attention.output_dense,
        net.get_layer("position"),
        net.get_layer("feed_0"),
    ):
        initializer = getattr(layer, "kernel_initializer", None) or layer.initializer
        assert isinstance(initializer, models.SeededGlorotUniform)
    assert isinstance(net.get_layer("embedding").embeddings_initializer, models.SeededGlorotUniform)
    net.save(tmp_path / "transformer.keras")  # the position embedding is serialisable
    loaded = keras.saving.load_model(tmp_path / "transformer.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(net(x)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert isinstance(loaded.get_layer("position"), tasks.PositionEmbedding)
    with pytest.raises(ValueError, match=r"\(time,\) of token ids"):
        tasks.transformer((9, 1), 4, seed=0)


def test_the_residual_cnn_normalises_its_batches_and_adds_its_skips():
    net = tasks.get("shapes_resnet").build_model("resnet_bn", seed=0)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds.count("BatchNormalization") == kinds.count("Conv2D") == 6
    assert kinds.count("Add") == 2 and "GlobalAveragePooling2D" in kinds
    assert all(
        layer.momentum == 0.9
        for layer in net.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert all(not layer.use_bias for layer in net.layers if isinstance(layer, keras.layers.Conv2D))
    with pytest.raises(ValueError, match="height, width, channels"):
        tasks.resnet_bn((12, 12), 4, seed=0)


def test_dropout_is_seeded_by_the_builders_seed_so_a_seed_fixes_the_training():
    task = tasks.get("hastie_dropout")

    def seeds(net):
        return [layer.seed for layer in net.layers if isinstance(layer, keras.layers.Dropout)]

    assert len(seeds(task.build_model("dropout_mlp", seed=1))) == 2
    assert seeds(task.build_model("dropout_mlp", seed=1)) == seeds(
        task.build_model("dropout_mlp", seed=1)
    )
    assert seeds(task.build_model("dropout_mlp", seed=1)) != seeds(
        task.build_model("dropout_mlp", seed=2)
    )
    assert seeds(task.build_model("dropout_mlp")) == [None, None]
    x, y = (a[:96] for a in task.splits(0).train)

    def trained(seed):
        net = task.build_model("dropout_mlp", seed=seed)
        task.compile(net, keras.optimizers.SGD(0.1))
        net.fit(x, y, epochs=1, batch_size=task.batch_size, shuffle=False, verbose=0)
        return net.get_weights()

    first, second = trained(1), trained(1)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # the same initial weights, other dropout masks (the seed of another build): another training
    net = task.build_model("dropout_mlp", seed=2)
    net.set_weights(task.build_model("dropout_mlp", seed=1).get_weights())
    task.compile(net, keras.optimizers.SGD(0.1))
    net.fit(x, y, epochs=1, batch_size=task.batch_size, shuffle=False, verbose=0)
    assert not np.allclose(net.get_weights()[0], first[0])


def test_the_causal_forecaster_sees_its_whole_window_and_only_the_past():
    net = tasks.get("co2_forecast").build_model("causal_conv1d", seed=0)
    convolutions = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv1D)]
    assert [layer.padding for layer in convolutions] == ["causal"] * 4
    receptive = 1 + sum(
        (layer.kernel_size[0] - 1) * layer.dilation_rate[0] for layer in convolutions
    )
    window = net.input_shape[1]
    assert receptive >= window == 26
    x = np.random.default_rng(0).standard_normal((4, window, 1)).astype("float32")
    changed = x.copy()
    changed[:, 0] += 3.0  # the oldest step still moves the forecast
    assert not np.allclose(
        keras.ops.convert_to_numpy(net(x)), keras.ops.convert_to_numpy(net(changed))
    )
    with pytest.raises(ValueError, match="time, features"):
        tasks.causal_conv1d((20,), 1, seed=0)
