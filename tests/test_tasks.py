"""The task suite: data, splits, model builders, the registry, and a short fit of every task.

The cross-backend check builds every seeded model in a fresh process of the
other backend (JAX under TensorFlow, TensorFlow under JAX) and compares the
weights with this process's.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_neuromod import datasets
from keras_neuromod import models
from keras_neuromod import tasks
from keras_neuromod._keras_compat import flatten_layers

HERE = os.path.dirname(os.path.abspath(__file__))
CIFAR = "cifar10_conv"
OFFLINE = [name for name in tasks.names() if name != CIFAR]
BUNDLED = {
    "digits_mlp",
    "digits_conv",
    "digits_residual",
    "wine",
    "breast_cancer",
    "diabetes",
    "digits_autoencoder",
    "co2_forecast",
    "sunspots_forecast",
    "elnino_forecast",
}
PAIRS = [(name, model) for name in OFFLINE for model in tasks.get(name).models]
RECURRENT = {"simple_rnn", "lstm", "gru"}
TOKEN_MODELS = {"transformer", "attention"}  # their input: [n, time] token ids


def _rows(x, y):
    """Every example as bytes, for multiset comparisons."""
    x = np.ascontiguousarray(x).reshape(len(x), -1)
    y = np.ascontiguousarray(y).reshape(len(y), -1)
    return [a.tobytes() + b.tobytes() for a, b in zip(x, y)]


@pytest.mark.parametrize("name", OFFLINE)
def test_every_task_loads_deterministically_with_the_documented_types(name):
    task = tasks.get(name)
    (x_train, y_train), (x_test, y_test), num_classes = task.data(0)
    (x_again, y_again), (x_test_again, _), _ = task.data(0)
    np.testing.assert_array_equal(x_again, x_train)
    np.testing.assert_array_equal(y_again, y_train)
    np.testing.assert_array_equal(x_test_again, x_test)
    other = task.data(1)
    if name in BUNDLED:
        np.testing.assert_array_equal(other.train[0], x_train)
    else:
        assert not np.array_equal(other.train[0], x_train), "the seed picks the draw"
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert np.all(np.isfinite(x_train)) and np.all(np.isfinite(x_test))
    assert 100 <= len(x_train) <= 2000 and 50 <= len(x_test) <= 1000
    if task.loss == "mean_squared_error":
        assert num_classes == 0
        assert y_train.dtype == np.float32 and y_train.ndim == 2 and y_test.ndim == 2
    else:
        assert num_classes >= 2 and y_train.dtype == np.int32 and y_train.ndim == 1
        assert set(np.unique(y_train)) == set(range(num_classes))
        assert y_test.min() >= 0 and y_test.max() < num_classes
    family_rank = {
        "images": 3,
        "tabular": 1,
        "signals": 2,
        "sequences": 2,
        "regression": 1,
        "forecasting": 2,
    }
    tokens = set(task.models) <= TOKEN_MODELS  # [n, time] token ids
    assert x_train.ndim - 1 == family_rank[task.family] - tokens
    if task.family in ("signals", "forecasting"):
        assert x_train.shape[-1] == 1
    assert task.description.endswith(".")


@pytest.mark.parametrize("name", OFFLINE)
def test_validation_is_carved_from_the_training_data(name):
    task = tasks.get(name)
    (x_train, y_train), (x_test, y_test), num_classes = task.data(0)
    splits = task.splits(0)
    assert splits is task.splits(0), "cached per seed"
    assert splits.num_classes == num_classes
    (xt, yt), (xv, yv), (xs, ys) = splits.train, splits.val, splits.test
    np.testing.assert_array_equal(xs, x_test)
    np.testing.assert_array_equal(ys.reshape(y_test.shape), y_test)
    assert len(xt) + len(xv) == len(x_train)
    assert abs(len(xv) - task.validation_fraction * len(x_train)) <= max(num_classes, 1)
    # train + val is the original training data, as a multiset
    assert sorted(_rows(xt, yt) + _rows(xv, yv)) == sorted(_rows(x_train, y_train))
    # nothing of the test data is in the validation data (unless duplicated in train)
    train_rows, test_rows = set(_rows(x_train, y_train)), set(_rows(x_test, y_test))
    assert set(_rows(xv, yv)) & test_rows <= train_rows & test_rows
    assert splits.input_shape == x_train.shape[1:]
    for x, y in (splits.train, splits.val, splits.test):
        assert x.dtype == np.float32 and not x.flags.writeable and not y.flags.writeable
        if num_classes:
            assert y.dtype == np.int32 and y.ndim == 1
        else:
            assert y.dtype == np.float32 and y.shape[1] == splits.output_dim
    if num_classes:
        assert splits.output_dim == num_classes
        # stratified: every class in the validation part, in about its share
        val_share = np.bincount(yv, minlength=num_classes) / np.bincount(
            y_train, minlength=num_classes
        )
        assert np.all(np.bincount(yv, minlength=num_classes) > 0)
        assert np.all(np.abs(val_share - task.validation_fraction) < 0.06)


def test_validation_carve_follows_the_seed_and_generated_data_follow_it_too():
    digits = tasks.get("digits_mlp")
    a, b = digits.splits(0), digits.splits(1)
    np.testing.assert_array_equal(a.test[0], b.test[0])
    assert not np.array_equal(a.val[1], b.val[1])
    waves = tasks.get("waveforms")
    assert not np.array_equal(waves.splits(0).test[0], waves.splits(1).test[0])
    with pytest.raises(ValueError, match="seed"):
        digits.splits(-1)


def test_derived_fields():
    digits, diabetes = tasks.get("digits_mlp"), tasks.get("diabetes")
    assert (digits.metric, digits.higher_is_better) == ("accuracy", True)
    assert (diabetes.metric, diabetes.higher_is_better) == ("mse", False)
    loss = digits.loss_function()
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
    assert loss.get_config()["from_logits"] is True
    assert isinstance(diabetes.loss_function(), keras.losses.MeanSquaredError)
    assert tasks.get("linear_ill_conditioned").splits(0).output_dim == 3
    assert diabetes.splits(0).output_dim == 1


@pytest.mark.parametrize("name,model", PAIRS)
def test_every_model_builds_seeded_and_outputs_logits(name, model):
    task = tasks.get(name)
    splits = task.splits(0)
    net = task.build_model(model, seed=7)
    assert net.output_shape == (None, splits.output_dim)
    assert net.layers[-1].activation is keras.activations.linear
    again, other = task.build_model(model, seed=7), task.build_model(model, seed=8)
    for a, b in zip(net.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(net.get_weights()[0], other.get_weights()[0])
    fresh = task.build_model(model)
    assert fresh.output_shape == net.output_shape
    kernels = recurrent = 0
    # every layer, nested ones too (attention's projections, recurrent cells), once
    nested = {id(layer): layer for layer in flatten_layers(net) if layer is not net}
    nested.update({id(layer.cell): layer.cell for layer in net.layers if hasattr(layer, "cell")})
    for layer in nested.values():
        if hasattr(layer, "cell"):
            continue
        if hasattr(layer, "kernel"):
            assert isinstance(layer.kernel_initializer, models.SeededGlorotUniform)
            kernels += 1
        if hasattr(layer, "recurrent_kernel"):
            assert isinstance(layer.recurrent_initializer, models.SeededOrthogonal)
            recurrent += 1
        if getattr(layer, "bias", None) is not None:
            bias = keras.ops.convert_to_numpy(layer.bias)
            if isinstance(layer, keras.layers.LSTMCell):  # Keras's unit forget bias
                units = layer.units
                np.testing.assert_array_equal(bias[units : 2 * units], 1.0)
                bias = np.concatenate([bias[:units], bias[2 * units :]])
            assert not np.any(bias)
    assert kernels == sum(w.name == "kernel" for w in net.weights) >= 1
    assert (
        recurrent == sum(w.name == "recurrent_kernel" for w in net.weights) == (model in RECURRENT)
    )
    out = keras.ops.convert_to_numpy(net(splits.test[0][:8]))
    assert out.shape == (8, splits.output_dim) and np.all(np.isfinite(out))
    if splits.num_classes:
        assert not np.allclose(out.sum(-1), 1.0, atol=1e-3), "logits, not probabilities"
        assert out.min() < 0 or out.max() > 1


# one task of each model that can be resized
RESIZABLE = {model: name for name, model in reversed(PAIRS) if tasks.resizable(model) is not None}


def _sizes(net):
    """Each hidden layer's units, filters or features (the output layer's are the task's)."""
    sizes = {}
    for layer in net.layers:
        config = layer.get_config()
        size = config.get("units", config.get("filters"))
        if isinstance(layer, keras.layers.Embedding):
            size = config["output_dim"]
        if size is not None and layer.name != "output":
            sizes[layer.name] = size
    return sizes


@pytest.mark.parametrize("model", sorted(RESIZABLE))
def test_a_resized_model_is_wider_or_deeper_and_at_its_defaults_the_standard_one(model):
    task, standard = tasks.get(RESIZABLE[model]), tasks.resizable(model)
    splits = task.splits(0)
    net = task.build_model(model, seed=5)
    same = task.build_model(model, seed=5, width=1.0, blocks=standard)
    assert [w.path for w in same.weights] == [w.path for w in net.weights]
    for a, b in zip(same.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)
    sizes = _sizes(net)
    assert sizes
    wide, narrow = (task.build_model(model, seed=5, width=w) for w in (2.0, 0.5))
    assert _sizes(wide) == {name: 2 * size for name, size in sizes.items()}
    assert _sizes(narrow) == {name: max(1, round(size / 2)) for name, size in sizes.items()}
    deeper = task.build_model(model, seed=5, blocks=standard + 1)
    assert len(deeper.trainable_weights) > len(net.trainable_weights)
    assert {layer.name for layer in net.layers} < {layer.name for layer in deeper.layers}
    shapes = [wide, narrow, deeper]
    if standard > 1:
        shallower = task.build_model(model, seed=5, blocks=standard - 1)
        assert len(shallower.trainable_weights) < len(net.trainable_weights)
        shapes.append(shallower)
    # seeded at any size: one seed, one model; another seed, other weights
    builds = [
        task.build_model(model, seed=seed, width=2.0, blocks=standard + 1).get_weights()
        for seed in (5, 5, 6)
    ]
    assert all(np.array_equal(a, b) for a, b in zip(builds[0], builds[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(builds[0], builds[2]))
    for resized in shapes:
        out = keras.ops.convert_to_numpy(resized(splits.test[0][:4]))
        assert out.shape == (4, splits.output_dim) and np.all(np.isfinite(out))


def test_only_a_builder_with_width_and_blocks_is_resized_and_sizes_are_checked(clean_registry):
    task = tasks.get("breast_cancer")
    assert tasks.resizable("linear") is None and tasks.resizable("mlp") == 2
    with pytest.raises(ValueError, match="cannot be resized"):
        task.build_model("linear", seed=0, width=2.0)
    for size, match in (
        ({"width": 0}, "width"),
        ({"width": float("nan")}, "width"),
        ({"blocks": 0}, "blocks"),
        ({"blocks": 1.5}, "blocks"),
    ):
        with pytest.raises(ValueError, match=match):
            task.build_model("mlp", seed=0, **size)
    with pytest.raises(ValueError, match="Unknown model"):
        tasks.resizable("nope")

    def mine(input_shape, output_dim, seed=None):
        return tasks.linear(input_shape, output_dim, seed)

    tasks.register_model("mine", mine)
    assert tasks.resizable("mine") is None


def test_token_majority_labels_are_the_most_frequent_token_ties_to_the_least_id():
    task = tasks.get("token_majority")
    for seed in (0, 3):
        (x, y), (x_test, y_test), num_classes = task.data(seed)
        for tokens, labels in ((x, y), (x_test, y_test)):
            ids = tokens.astype(np.int64)
            np.testing.assert_array_equal(ids, tokens)
            assert ids.min() >= 1 and ids.max() <= num_classes < tasks.TOKENS
            counts = np.array([np.bincount(row, minlength=num_classes + 1) for row in ids])
            most = counts.max(1, keepdims=True)
            expected = [np.flatnonzero(row == top)[0] - 1 for row, top in zip(counts, most)]
            np.testing.assert_array_equal(labels, expected)
    # ties occur, and go to the least id: not to the first or last symbol seen
    assert np.mean((counts == most).sum(1) > 1) > 0.1


def test_the_residual_mlp_normalises_drops_out_and_adds_its_skips():
    task = tasks.get("digits_residual")
    net = task.build_model("residual_mlp", seed=0)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds.count("BatchNormalization") == 4 and kinds.count("Dropout") == 2
    assert kinds.count("Add") == 2 and kinds.count("Dense") == 6
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.momentum == 0.9
            assert not net.get_layer(layer.name.replace("_bn", "_dense")).use_bias

    def seeds(model):
        return [layer.seed for layer in model.layers if isinstance(layer, keras.layers.Dropout)]

    assert None not in seeds(net) and seeds(net) == seeds(task.build_model("residual_mlp", seed=0))
    assert seeds(net) != seeds(task.build_model("residual_mlp", seed=1))
    assert seeds(task.build_model("residual_mlp")) == [None, None]


def test_the_attention_model_reads_a_bag_of_float_or_int_ids_through_post_norm_attention():
    task = tasks.get("token_majority")
    net = task.build_model("attention", seed=0)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == [
        "InputLayer",
        "Embedding",
        "MultiHeadAttention",
        "Add",
        "LayerNormalization",
        "GlobalMaxPooling1D",
        "Dense",
    ]
    attention = net.get_layer("attention")
    query, key, value = (
        keras.ops.convert_to_numpy(p.kernel)
        for p in (attention.query_dense, attention.key_dense, attention.value_dense)
    )
    assert not np.array_equal(query, key) and not np.array_equal(query, value)
    x = task.splits(0).test[0][:16]
    out = keras.ops.convert_to_numpy(net(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(net(x.astype("int32"))), out, rtol=1e-6)
    # no positions: a shuffled sequence gives the same logits
    shuffled = x[:, np.random.default_rng(0).permutation(x.shape[1])]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(net(shuffled)), out, rtol=1e-5, atol=1e-6)


def test_seeded_recurrent_weights_are_the_numpy_draws():
    net = tasks.get("sequence_majority").build_model("lstm", seed=3)
    layer_seeds = np.random.default_rng(3).integers(0, 2**31 - 1, size=64).tolist()
    cell = net.get_layer("lstm").cell
    kernel, recurrent = (
        keras.ops.convert_to_numpy(w) for w in (cell.kernel, cell.recurrent_kernel)
    )
    features, units = kernel.shape[0], 32
    limit = np.sqrt(6.0 / (features + 4 * units))
    expected = np.random.default_rng(layer_seeds[0]).uniform(-limit, limit, (features, 4 * units))
    np.testing.assert_array_equal(kernel, expected.astype("float32"))
    np.testing.assert_array_equal(recurrent, _numpy_orthogonal(layer_seeds[1], (units, 4 * units)))
    output = keras.ops.convert_to_numpy(net.get_layer("output").kernel)
    limit = np.sqrt(6.0 / (units + 4))
    expected = np.random.default_rng(layer_seeds[2]).uniform(-limit, limit, (units, 4))
    np.testing.assert_array_equal(output, expected.astype("float32"))


def _numpy_orthogonal(seed, shape, gain=1.0):
    """Keras's Orthogonal, written again in numpy from its definition."""
    rows = int(np.prod(shape[:-1]))
    cols = shape[-1]
    a = np.random.default_rng(seed).standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q @ np.diag(np.sign(np.diag(r)))
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype("float32")


@pytest.mark.parametrize("shape", [(16, 16), (8, 24), (24, 8), (3, 4, 6), (32, 128)])
def test_seeded_orthogonal_is_orthogonal_and_the_numpy_draw(shape):
    values = keras.ops.convert_to_numpy(models.SeededOrthogonal(seed=5)(shape))
    assert values.shape == shape and values.dtype == np.float32
    np.testing.assert_array_equal(values, _numpy_orthogonal(5, shape))
    flat = values.reshape(-1, shape[-1]).astype("float64")
    small = min(flat.shape)
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-5)
    if flat.shape[0] == flat.shape[1]:
        np.testing.assert_allclose(flat @ flat.T, np.eye(small), atol=1e-5)
    # the sign fix: R's diagonal is positive, as for Keras's Orthogonal
    q = flat if flat.shape[0] >= flat.shape[1] else flat.T
    a = np.random.default_rng(5).standard_normal(q.shape)
    assert np.all(np.diag(q.T @ a) > 0)
    other = keras.ops.convert_to_numpy(models.SeededOrthogonal(seed=6)(shape))
    assert not np.allclose(other, values)
    doubled = keras.ops.convert_to_numpy(models.SeededOrthogonal(seed=5, gain=2.0)(shape))
    np.testing.assert_allclose(doubled, 2.0 * values, rtol=1e-6)


def test_seeded_orthogonal_config_round_trip_and_errors(tmp_path):
    initializer = models.SeededOrthogonal(seed=11, gain=0.5)
    assert initializer.get_config() == {"seed": 11, "gain": 0.5}
    again = keras.initializers.deserialize(keras.initializers.serialize(initializer))
    assert isinstance(again, models.SeededOrthogonal) and (again.seed, again.gain) == (11, 0.5)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again((6, 6))), keras.ops.convert_to_numpy(initializer((6, 6)))
    )
    net = tasks.get("sequence_majority").build_model("gru", seed=2)
    net.save(tmp_path / "gru.keras")
    loaded = keras.saving.load_model(tmp_path / "gru.keras")
    for a, b in zip(net.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert isinstance(loaded.get_layer("gru").cell.recurrent_initializer, models.SeededOrthogonal)
    with pytest.raises(ValueError, match="seed"):
        models.SeededOrthogonal(seed=-1)
    with pytest.raises(ValueError, match="gain"):
        models.SeededOrthogonal(seed=1, gain="big")
    with pytest.raises(ValueError, match="rank 2"):
        models.SeededOrthogonal(seed=1)((5,))


_OTHER_BACKEND_SCRIPT = """
import json, os, sys
import numpy as np
from keras_neuromod import tasks
pairs, out = json.loads(sys.argv[1]), sys.argv[2]
weights = {}
for name, model in pairs:
    for i, w in enumerate(tasks.get(name).build_model(model, seed=5).get_weights()):
        weights[f"{name}/{model}/{i}"] = w
np.savez(out, **weights)
import keras
print(keras.backend.backend())
"""


@pytest.mark.slow
def test_seeded_models_have_the_same_weights_under_the_other_backend(tmp_path):
    other = "tensorflow" if keras.backend.backend() == "jax" else "jax"
    out = tmp_path / "weights.npz"
    environment = dict(os.environ, KERAS_BACKEND=other, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_BACKEND_SCRIPT, json.dumps(PAIRS), str(out)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == other
    with np.load(out, allow_pickle=False) as theirs:
        for name, model in PAIRS:
            ours = tasks.get(name).build_model(model, seed=5).get_weights()
            for i, w in enumerate(ours):
                np.testing.assert_array_equal(
                    theirs[f"{name}/{model}/{i}"], w, err_msg=f"{name}/{model} weight {i}"
                )


def test_held_out_tasks_cover_four_families_a_recurrent_model_and_a_regression_loss():
    held_out = [tasks.get(name) for name in tasks.names(held_out=True)]
    assert len({task.family for task in held_out}) >= 4
    assert any(RECURRENT & set(task.models) for task in held_out)
    assert any(task.loss == "mean_squared_error" for task in held_out)
    used = [tasks.get(name) for name in tasks.names(held_out=False)]
    assert {task.family for task in used} == set(tasks.FAMILIES) - set(tasks.HELD_OUT_FAMILIES)
    assert set(tasks.names()) == set(tasks.names(held_out=True)) | set(tasks.names(held_out=False))
    assert tasks.names(family="images") == sorted(tasks.names(family="images"))
    assert all(tasks.get(name).family == "signals" for name in tasks.names(family="signals"))
    assert CIFAR in tasks.names() and CIFAR in tasks.names(family="images")
    assert set(tasks.MODELS) >= {"mlp", "conv2d", "conv1d", "simple_rnn", "lstm", "gru", "linear"}


def test_cifar_task_is_listed_but_raises_when_not_prepared(tmp_path, monkeypatch):
    original = datasets.cifar10
    monkeypatch.setattr(
        datasets, "cifar10", lambda **kwargs: original(**dict(kwargs, data_dir=str(tmp_path)))
    )
    task = tasks.get(CIFAR)
    assert task.held_out and task.models == ("conv2d",)
    with pytest.raises(datasets.DatasetUnavailableError, match="download_and_prepare"):
        task.splits(0)


def _task(**changes):
    fields = dict(
        name="user_task",
        family="tabular",
        data=_user_data,
        models=("mlp",),
        loss="sparse_categorical_crossentropy",
        epochs=1,
    )
    fields.update(changes)
    return tasks.Task(**fields)


def _user_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, 3)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    return (x[:150], y[:150]), (x[150:], y[150:]), 2


@pytest.fixture
def clean_registry():
    task_names, model_names = set(tasks.names()), set(tasks.MODELS)
    yield
    for name in set(tasks.names()) - task_names:
        del tasks._REGISTRY[name]
    for name in set(tasks.MODELS) - model_names:
        del tasks.MODELS[name]


def test_registry_errors(clean_registry):
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(_task(name="digits_mlp"))
    with pytest.raises(ValueError, match="family.*'pictures'"):
        tasks.register(_task(family="pictures"))
    with pytest.raises(ValueError, match="models.*'perceiver'"):
        tasks.register(_task(models=("mlp", "perceiver")))
    with pytest.raises(ValueError, match="models"):
        tasks.register(_task(models="mlp"))
    with pytest.raises(ValueError, match="loss.*'hinge'"):
        tasks.register(_task(loss="hinge"))
    with pytest.raises(ValueError, match="epochs"):
        tasks.register(_task(epochs=0))
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="validation_fraction"):
            tasks.register(_task(validation_fraction=fraction))
    with pytest.raises(ValueError, match="batch_size"):
        tasks.register(_task(batch_size=0))
    with pytest.raises(ValueError, match="register takes a Task"):
        tasks.register("user_task")
    with pytest.raises(ValueError, match="digits_mlp") as error:
        tasks.get("nonexistent")
    assert "Unknown task 'nonexistent'" in str(error.value) and "waveforms" in str(error.value)
    with pytest.raises(ValueError, match="Unknown family"):
        tasks.names(family="pictures")
    with pytest.raises(ValueError, match="already registered"):
        tasks.register_model("mlp", tasks.mlp)
    with pytest.raises(ValueError, match="callable"):
        tasks.register_model("thing", None)
    with pytest.raises(ValueError, match="trains the models"):
        tasks.get("digits_mlp").build_model("conv2d")
    with pytest.raises(ValueError, match="height, width, channels"):
        tasks.conv2d((13,), 3, seed=0)
    with pytest.raises(ValueError, match="time, features"):
        tasks.gru((13,), 3, seed=0)
    with pytest.raises(ValueError, match=r"'attention' model needs an input shape \(time,\)"):
        tasks.attention((16, 1), 3, seed=0)
    assert "user_task" not in tasks.names(), "nothing invalid was registered"


@pytest.mark.parametrize("returned", ["layer", "none"])
def test_a_builder_that_returns_no_model_fails_clearly_at_build_model(clean_registry, returned):
    def not_a_model(input_shape, output_dim, seed):
        return keras.layers.Dense(output_dim) if returned == "layer" else None

    tasks.register_model("not_a_model", not_a_model)
    task = tasks.register(_task(models=("not_a_model",)))
    with pytest.raises(TypeError) as error:
        task.build_model("not_a_model", seed=0)
    message = str(error.value)
    assert "'not_a_model'" in message and "not_a_model" in message.split("'not_a_model'")[0]
    assert ("Dense" if returned == "layer" else "NoneType") in message
    assert "builder(input_shape, output_dim, seed) -> keras.Model" in message


def test_user_task_and_model_end_to_end(clean_registry):
    def tiny(input_shape, output_dim, seed):
        init = (
            models.SeededGlorotUniform(seed)
            if seed is not None
            else keras.initializers.GlorotUniform()
        )
        inputs = keras.Input(shape=input_shape)
        outputs = keras.layers.Dense(output_dim, kernel_initializer=init, name="output")(inputs)
        return keras.Model(inputs, outputs, name="tiny")

    tasks.register_model("tiny", tiny)
    task = tasks.register(_task(models=("tiny", "mlp"), description="A user's task."))
    assert tasks.get("user_task") is task and "user_task" in tasks.names(family="tabular")
    splits = task.splits(3)
    assert len(splits.val[1]) == 30 and set(np.unique(splits.val[1])) == {0, 1}
    model = task.build_model("tiny", seed=1)
    task.compile(model, keras.optimizers.Adam(0.05))
    history = model.fit(
        *splits.train,
        validation_data=splits.val,
        epochs=task.epochs,
        batch_size=task.batch_size,
        verbose=0,
    )
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert np.isfinite(history.history["loss"][-1])
    # re-registering under the same name needs overwrite, and drops the cached splits
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(_task())
    regression = tasks.register(
        _task(
            loss="mean_squared_error",
            family="regression",
            data=lambda seed: (
                (np.ones((40, 2), "float32"), np.zeros((40, 2), "float32")),
                (np.ones((10, 2), "float32"), np.zeros((10, 2), "float32")),
                0,
            ),
        ),
        overwrite=True,
    )
    assert tasks.get("user_task") is regression
    assert regression.splits(3).num_classes == 0 and regression.splits(3).output_dim == 2
    model = regression.build_model("mlp", seed=0)
    regression.compile(model, keras.optimizers.SGD(0.01))
    result = model.evaluate(*regression.splits(3).test, verbose=0, return_dict=True)
    assert "mse" in result


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFLINE)
def test_every_task_fits_one_epoch_with_adam(name):
    task = tasks.get(name)
    splits = task.splits(0)
    model = task.build_model(task.models[0], seed=0)
    task.compile(model, keras.optimizers.Adam())
    (x, y), (xv, yv) = splits.train, splits.val
    history = model.fit(
        x[:256],
        y[:256],
        validation_data=(xv[:64], yv[:64]),
        epochs=1,
        batch_size=task.batch_size,
        verbose=0,
    )
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(history.history[f"val_{task.metric}"][0])


def test_noisy_regression_has_heavy_tailed_correlated_features_drawn_per_seed():
    task = tasks.get("noisy_regression")
    kurtosis, correlation = [], []
    for seed in range(6):
        x = task.data(seed).train[0].astype(np.float64)
        z = (x - x.mean(0)) / x.std(0)
        kurtosis.append(np.mean(z**4, axis=0).mean())
        c = np.corrcoef(x, rowvar=False)
        correlation.append(np.abs(c[~np.eye(len(c), dtype=bool)]).mean())
    # Gaussian features: kurtosis 3; independent ones: |correlation| about 0.04 at 360 rows
    assert np.median(kurtosis) > 3.5
    assert np.median(correlation) > 0.15
    assert np.ptp(kurtosis) > 0.5 and np.ptp(correlation) > 0.05, "the seed draws the character"


@pytest.mark.parametrize("name", ["digits_mlp", "noisy_regression"])
def test_data_order_is_one_permutation_of_the_training_split_per_epoch(name):
    task = tasks.get(name)
    order = task.data_order(3)
    n = len(task.splits(3).train[0])
    assert order.shape == (task.epochs, n)
    for epoch in order:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
    assert not np.array_equal(order[0], order[1]), "each epoch its own order"
    np.testing.assert_array_equal(task.data_order(3), order)
    assert not np.array_equal(task.data_order(4)[0][: min(n, 50)], order[0][: min(n, 50)])
    with pytest.raises(ValueError, match="seed"):
        task.data_order(-1)


@pytest.mark.parametrize("where", ["x_train", "y_train", "x_test", "y_test"])
def test_data_with_nan_or_inf_are_refused_where_the_task_is_built(where):
    def data(seed):
        rng = np.random.default_rng(seed)
        arrays = {
            "x_train": rng.normal(size=(20, 3)),
            "y_train": rng.normal(size=(20, 1)),
            "x_test": rng.normal(size=(8, 3)),
            "y_test": rng.normal(size=(8, 1)),
        }
        arrays[where][1, 0] = np.nan
        arrays[where][2, 0] = np.inf
        return ((arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"]), 0)

    task = tasks.Task("with_nan", "regression", data, ("linear",), "mean_squared_error", epochs=1)
    with pytest.raises(ValueError, match=f"2 NaN or infinite value.* in {where}"):
        task.splits(0)
