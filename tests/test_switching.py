"""Weight-space task switching: transforms, layers, flat form, training, saving."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_neuromod.switching import FlatSwitchableMLP
from keras_neuromod.switching import SwitchableConv2D
from keras_neuromod.switching import SwitchableDense
from keras_neuromod.switching import TaskInput
from keras_neuromod.switching import draw_modulation
from keras_neuromod.switching import fit_alternating
from keras_neuromod.switching import get_task
from keras_neuromod.switching import inverse_transform
from keras_neuromod.switching import set_task
from keras_neuromod.switching import task_layers
from keras_neuromod.switching import transform


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _weights(layer):
    return (
        _np(layer.kernel),
        _np(layer.bias),
        _np(layer.modulation_matrix),
        _np(layer.modulation_bias),
    )


# --- the fixed transform -------------------------------------------------------


def test_draw_modulation_follows_the_documented_formulas():
    n, seed = 5, 7
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, n))
    v = rng.standard_normal(n)
    m, vec = draw_modulation(n, "identity_gaussian", scale=0.5, bias_scale=2.0, seed=seed)
    np.testing.assert_allclose(m, np.eye(n) + 0.5 * g / np.sqrt(n), rtol=1e-6)
    np.testing.assert_allclose(vec, 2.0 * v, rtol=1e-6)
    m, _ = draw_modulation(n, "gaussian", scale=3.0, seed=seed)
    np.testing.assert_allclose(m, 3.0 * g / np.sqrt(n), rtol=1e-6)
    q, _ = draw_modulation(n, "orthogonal", seed=seed)
    np.testing.assert_allclose(q @ q.T, np.eye(n), atol=1e-5)
    # One seed, one transform; another seed, another.
    a, _ = draw_modulation(n, seed=3)
    b, _ = draw_modulation(n, seed=3)
    c, _ = draw_modulation(n, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    units=st.integers(1, 6),
    kind=st.sampled_from(["identity_gaussian", "orthogonal"]),
    seed=st.integers(0, 2**20),
)
def test_transform_and_inverse_round_trip(shape, units, kind, seed):
    m, v = draw_modulation(units, kind, scale=0.5, seed=seed)
    rng = np.random.default_rng(seed + 1)
    kernel = rng.standard_normal(tuple(shape) + (units,))
    bias = rng.standard_normal(units)
    new_kernel, new_bias = transform(kernel, bias, m, v)
    # W' = M W with W the transposed Keras kernel, entry by entry.
    expected = np.einsum("...i,ji->...j", kernel, m.astype("float64"))
    np.testing.assert_allclose(new_kernel, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(new_bias, bias + v, rtol=1e-12)
    back_kernel, back_bias = inverse_transform(new_kernel, new_bias, m, v)
    scale = np.linalg.cond(m.astype("float64"))
    np.testing.assert_allclose(back_kernel, kernel, atol=1e-10 * scale)
    np.testing.assert_allclose(back_bias, bias, atol=1e-10)


def test_inverse_of_singular_matrix_is_a_clear_error():
    with pytest.raises(ValueError, match="singular"):
        inverse_transform(np.ones((3, 2)), None, np.zeros((2, 2)), None)


# --- per-layer layers ----------------------------------------------------------


def _dense_pair(mode="reparametrize", **kwargs):
    layer = SwitchableDense(3, activation="tanh", modulation_seed=11, mode=mode, **kwargs)
    layer.build((None, 4))
    layer.bias.assign(np.linspace(-0.5, 0.5, 3).astype("float32"))
    return layer


def test_dense_outputs_match_ordinary_dense_in_both_states():
    layer = _dense_pair()
    kernel, bias, m, v = _weights(layer)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype("float32")
    plain = keras.layers.Dense(3, activation="tanh")
    plain.build((None, 4))
    plain.set_weights([kernel, bias])
    np.testing.assert_allclose(_np(layer(x)), _np(plain(x)), atol=1e-6)
    layer.set_task(1)
    plain.set_weights([kernel @ m.T, bias + v])
    np.testing.assert_allclose(_np(layer(x)), _np(plain(x)), atol=1e-5)
    np.testing.assert_allclose(_np(layer(x)), np.tanh(x @ kernel @ m.T + bias + v), atol=1e-5)
    layer.set_task(0)
    np.testing.assert_allclose(_np(layer(x)), np.tanh(x @ kernel + bias), atol=1e-6)


def test_conv_outputs_match_ordinary_conv_in_state_one():
    layer = SwitchableConv2D(4, 3, padding="same", activation="relu", modulation_seed=5)
    x = np.random.default_rng(1).standard_normal((2, 6, 6, 3)).astype("float32")
    layer(x)
    layer.bias.assign(np.arange(4, dtype="float32") / 10)
    kernel, bias, m, v = _weights(layer)
    plain = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    plain.build((None, 6, 6, 3))
    plain.set_weights([kernel, bias])
    np.testing.assert_allclose(_np(layer(x)), _np(plain(x)), atol=1e-5)
    layer.set_task(1)
    plain.set_weights([np.einsum("hwio,po->hwip", kernel, m), bias + v])
    np.testing.assert_allclose(_np(layer(x)), _np(plain(x)), atol=1e-4)


@pytest.mark.parametrize("layer_class", [SwitchableDense, FlatSwitchableMLP])
def test_in_place_mode_rewrites_weights_and_round_trips(layer_class):
    args = ([3],) if layer_class is FlatSwitchableMLP else (3,)
    kwargs = dict(modulation_seed=2, modulation="orthogonal")
    in_place = layer_class(*args, mode="in_place", **kwargs)
    reparam = layer_class(*args, **kwargs)
    x = np.random.default_rng(2).standard_normal((4, 5)).astype("float32")
    in_place(x)
    reparam(x)
    reparam.set_weights(in_place.get_weights())
    before = [w.copy() for w in in_place.get_weights()]
    for layer in (in_place, reparam):
        layer.set_task(1)
    np.testing.assert_allclose(_np(in_place(x)), _np(reparam(x)), atol=1e-5)
    kernel, bias = reparam.transformed_weights()
    np.testing.assert_allclose(_np(in_place.kernel), kernel, atol=1e-5)
    np.testing.assert_allclose(_np(in_place.bias), bias, atol=1e-6)
    np.testing.assert_allclose(in_place.base_weights()[0], before[0], atol=1e-5)
    in_place.set_task(0)
    for now, then in zip(in_place.get_weights(), before):
        np.testing.assert_allclose(now, then, atol=1e-5)


@pytest.mark.parametrize("task", [0, 1])
def test_gradients_reach_the_underlying_weights(task):
    """One SGD step on a linear layer, checked against the numpy gradient."""
    inputs = keras.Input((4,))
    layer = SwitchableDense(3, modulation_seed=9)
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    set_task(model, task)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4)).astype("float32")
    t = rng.standard_normal((6, 3)).astype("float32")
    kernel, bias, m, v = (w.astype("float64") for w in _weights(layer))
    a = m.T if task else np.eye(3)
    y = x @ kernel @ a + bias + task * v
    grad_y = 2 * (y - t) / y.size
    grad_kernel = x.T @ grad_y @ a.T
    grad_bias = grad_y.sum(0)
    model.train_on_batch(x, t)
    np.testing.assert_allclose(_np(layer.kernel), kernel - 0.1 * grad_kernel, atol=1e-5)
    np.testing.assert_allclose(_np(layer.bias), bias - 0.1 * grad_bias, atol=1e-5)
    # M, v and the state are not trained.
    np.testing.assert_array_equal(_np(layer.modulation_matrix), m.astype("float32"))
    assert layer.task == task
    assert {w.name for w in layer.trainable_weights} == {"kernel", "bias"}


# --- flat form -----------------------------------------------------------------


def test_flat_form_matches_an_ordinary_mlp_with_transformed_weights():
    inputs = keras.Input((2,))
    flat = FlatSwitchableMLP(
        [4, 1],
        activation="relu",
        output_activation="sigmoid",
        modulation_seed=3,
        bias_modulation_scale=0.5,
    )
    model = keras.Model(inputs, flat(inputs))
    assert flat.kernel.shape == (2 * 4 + 4 * 1,)
    assert flat.modulation_matrix.shape == (12, 12)
    w, b, m, v = (a.astype("float64") for a in _weights(flat))
    set_task(model, 1)
    w1, b1 = m @ w, b + v

    def mlp(x, w, b):
        h = np.maximum(x @ w[:8].reshape(2, 4) + b[:4], 0)
        return 1 / (1 + np.exp(-(h @ w[8:].reshape(4, 1) + b[4:])))

    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32")
    np.testing.assert_allclose(_np(model(x)), mlp(x, w1, b1), atol=1e-5)
    plain = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(4, "relu"), keras.layers.Dense(1, "sigmoid")]
    )
    plain.set_weights([w1[:8].reshape(2, 4), b1[:4], w1[8:].reshape(4, 1), b1[4:]])
    np.testing.assert_allclose(_np(model(x)), _np(plain(x)), atol=1e-5)
    set_task(model, 0)
    np.testing.assert_allclose(_np(model(x)), mlp(x, w, b), atol=1e-5)


def test_flat_form_draws_each_layer_block_independently():
    flat = FlatSwitchableMLP([3, 3], kernel_initializer=keras.initializers.RandomNormal(seed=1))
    flat.build((None, 3))
    first, second = np.split(_np(flat.kernel), 2)
    assert not np.allclose(first, second)


def test_flat_form_refuses_large_models_and_states_the_limit():
    flat = FlatSwitchableMLP([100, 10], max_flat_weights=4096)
    with pytest.raises(ValueError, match=r"79400 x 79400.*max_flat_weights=4096"):
        flat.build((None, 784))
    assert FlatSwitchableMLP.flat_size(784, [100, 10]) == 79400


# --- model-level helpers, baseline, training -----------------------------------


def test_task_input_appends_the_one_hot_task():
    layer = TaskInput(num_tasks=3)
    x = np.ones((2, 4, 4, 1), "float32")
    out = _np(layer(x))
    assert out.shape == (2, 4, 4, 4)
    np.testing.assert_array_equal(out[..., 1:], np.broadcast_to([1, 0, 0], (2, 4, 4, 3)))
    layer.set_task(2)
    np.testing.assert_array_equal(_np(layer(x))[..., 1:], np.broadcast_to([0, 0, 1], (2, 4, 4, 3)))
    with pytest.raises(ValueError, match="task must be an int"):
        layer.set_task(3)


def _gate_model(seed=0):
    inputs = keras.Input((2,))
    hidden = SwitchableDense(
        8, "tanh", modulation_seed=seed, kernel_initializer=keras.initializers.GlorotUniform(seed)
    )
    out = SwitchableDense(
        1,
        "sigmoid",
        modulation_seed=seed + 1,
        kernel_initializer=keras.initializers.GlorotUniform(seed + 1),
    )
    return keras.Model(inputs, out(hidden(inputs)))


def test_set_task_and_get_task_cover_every_layer():
    model = _gate_model()
    assert len(task_layers(model)) == 2
    assert set_task(model, 1) == 2
    assert get_task(model) == 1
    task_layers(model)[0].set_task(0)
    with pytest.raises(ValueError, match="mixed states"):
        get_task(model)
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="no switchable layer"):
        set_task(plain, 1)


@pytest.mark.slow
def test_fit_alternating_switches_tasks_and_learns_both_gates():
    x = np.tile(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32"), (10, 1))
    y_and = np.tile(np.array([[0], [0], [0], [1]], "float32"), (10, 1))
    y_or = np.tile(np.array([[0], [1], [1], [1]], "float32"), (10, 1))
    model = _gate_model(seed=4)
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy", metrics=["accuracy"])
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append((epoch, get_task(self.model)))

    history = fit_alternating(
        model,
        [
            {"x": x, "y": y_and, "name": "and", "eval_data": (x[:4], y_and[:4])},
            {"x": x, "y": y_or, "name": "or", "eval_data": (x[:4], y_or[:4])},
        ],
        period=1,
        cycles=8,
        batch_size=4,
        shuffle=False,
        callbacks=[Record()],
    )
    # Algorithm 1's schedule: task A in state 0, task B in state 1, in turn,
    # with the epochs counted across the fits.
    assert seen == [(e, e % 2) for e in range(16)]
    assert [row["task"] for row in history.epochs] == ["and", "or"] * 8
    assert len(history.cycles) == 8 and get_task(model) == 0
    assert history.cycles[-1]["and_eval_accuracy"] == 1.0
    assert history.cycles[-1]["or_eval_accuracy"] == 1.0
    assert history.task_series("and", "loss")[-1] < history.task_series("and", "loss")[0]
    # Switching reuses the compiled train function: no recompile per switch.
    compiled = model.train_function
    fit_alternating(model, [(x, y_and), (x, y_or)], period=1, cycles=1, batch_size=4)
    assert model.train_function is compiled


def test_fit_alternating_rejects_bad_arguments():
    model = _gate_model()
    x, y = np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32")
    with pytest.raises(ValueError, match="Compile"):
        fit_alternating(model, [(x, y), (x, y)], 1, 1)
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="period"):
        fit_alternating(model, [(x, y), (x, y)], 0, 1)
    with pytest.raises(ValueError, match="cycles"):
        fit_alternating(model, [(x, y), (x, y)], 1, 2.5)
    with pytest.raises(ValueError, match="at least two"):
        fit_alternating(model, [(x, y)], 1, 1)
    with pytest.raises(ValueError, match=r"tasks\[1\]"):
        fit_alternating(model, [(x, y), {"x": x, "label": y}], 1, 1)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SwitchableDense(0), "units"),
        (lambda: SwitchableDense(2, modulation="random"), "modulation"),
        (lambda: SwitchableDense(2, mode="swap"), "mode"),
        (lambda: SwitchableDense(2, modulation_scale=-1.0), "modulation_scale"),
        (lambda: SwitchableDense(2, modulation_seed=-3), "modulation_seed"),
        (lambda: SwitchableConv2D(2, (3, 0)), "kernel_size"),
        (lambda: SwitchableConv2D(2, 3, padding="full"), "padding"),
        (lambda: FlatSwitchableMLP([]), "units"),
        (lambda: FlatSwitchableMLP([2], max_flat_weights=0), "max_flat_weights"),
        (lambda: TaskInput(num_tasks=1), "num_tasks"),
    ],
)
def test_bad_arguments_give_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_set_task_errors():
    layer = SwitchableDense(2)
    with pytest.raises(ValueError, match="not built"):
        layer.set_task(1)
    layer.build((None, 3))
    for bad in (2, -1, 0.5, True):
        with pytest.raises(ValueError, match="task must be an integer"):
            layer.set_task(bad)


# --- serialization -------------------------------------------------------------


def test_config_round_trip_keeps_the_transform():
    for layer in (
        SwitchableDense(3, modulation="orthogonal", bias_modulation_scale=0.3),
        SwitchableConv2D(3, 2, modulation="gaussian", modulation_scale=2.0),
        FlatSwitchableMLP([3, 2], modulation_seed=8),
    ):
        shape = (None, 5, 5, 2) if isinstance(layer, SwitchableConv2D) else (None, 4)
        layer.build(shape)
        config = layer.get_config()
        clone = type(layer).from_config(config)
        clone.build(shape)
        assert clone.get_config() == config
        np.testing.assert_array_equal(_np(clone.modulation_matrix), _np(layer.modulation_matrix))
        np.testing.assert_array_equal(_np(clone.modulation_bias), _np(layer.modulation_bias))


@pytest.mark.parametrize("mode", ["reparametrize", "in_place"])
def test_model_save_round_trip_keeps_transform_and_state(tmp_path, mode):
    inputs = keras.Input((6, 6, 1))
    h = TaskInput()(inputs)
    h = SwitchableConv2D(3, 3, activation="relu", mode=mode)(h)
    h = keras.layers.Flatten()(h)
    h = FlatSwitchableMLP([4, 2], mode=mode)(h)
    outputs = SwitchableDense(2, mode=mode)(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")
    x = np.random.default_rng(4).random((3, 6, 6, 1)).astype("float32")
    model.fit(x, np.zeros((3, 2), "float32"), epochs=1, verbose=0)
    set_task(model, 1)
    expected = _np(model(x))
    path = tmp_path / "switching.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert get_task(loaded) == 1
    np.testing.assert_allclose(_np(loaded(x)), expected, atol=1e-6)
    for old, new in zip(task_layers(model), task_layers(loaded)):
        if hasattr(old, "modulation_matrix"):
            np.testing.assert_array_equal(_np(new.modulation_matrix), _np(old.modulation_matrix))
            np.testing.assert_array_equal(_np(new.modulation_bias), _np(old.modulation_bias))
            assert new.modulation_seed == old.modulation_seed and new.mode == mode
    set_task(loaded, 0)
    set_task(model, 0)
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), atol=1e-5)


def test_public_names_keep_their_import_paths_and_registered_names():
    import keras_neuromod.layers

    assert keras_neuromod.layers.SwitchableDense is SwitchableDense
    assert keras_neuromod.layers.SwitchableConv2D is SwitchableConv2D
    for cls in (SwitchableDense, SwitchableConv2D, FlatSwitchableMLP, TaskInput):
        assert keras.saving.get_registered_name(cls) == f"keras_neuromod>{cls.__name__}"


def test_model_saved_under_the_earlier_module_paths_loads(tmp_path):
    """Files written when the layers lived in keras_neuromod.layers.switching (a
    module since removed) and keras_neuromod.switching (a module, not a package)
    load by registered name."""
    import json
    import zipfile

    inputs = keras.Input((4,))
    h = TaskInput()(inputs)
    h = FlatSwitchableMLP([3], modulation_seed=1)(h)
    model = keras.Model(inputs, SwitchableDense(2, mode="in_place", modulation_seed=2)(h))
    set_task(model, 1)
    x = np.random.default_rng(6).random((3, 4)).astype("float32")
    path, old = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(path)
    earlier = {
        "TaskInput": "keras_neuromod.switching",
        "FlatSwitchableMLP": "keras_neuromod.switching",
        "SwitchableDense": "keras_neuromod.layers.switching",
    }
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] in earlier:
                        assert layer["module"] == "keras_neuromod.switching.layers"
                        layer["module"] = earlier[layer["class_name"]]
                data = json.dumps(config).encode()
            target.writestr(item, data)
    loaded = keras.models.load_model(old)
    assert get_task(loaded) == 1
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), atol=1e-6)


def test_flat_form_takes_regularizers_like_the_per_layer_form():
    flat = FlatSwitchableMLP(
        [3, 1],
        kernel_regularizer=keras.regularizers.L2(0.1),
        bias_regularizer=keras.regularizers.L1(0.5),
    )
    flat.build((None, 2))
    flat.bias.assign(np.arange(4, dtype="float32") - 1.5)
    w, b = _np(flat.kernel).astype("float64"), _np(flat.bias).astype("float64")
    np.testing.assert_allclose(
        sum(float(_np(loss)) for loss in flat.losses),
        0.1 * np.sum(w**2) + 0.5 * np.sum(np.abs(b)),
        rtol=1e-5,
    )
    clone = FlatSwitchableMLP.from_config(flat.get_config())
    assert clone.get_config() == flat.get_config()
