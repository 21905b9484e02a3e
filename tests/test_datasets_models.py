"""Data sets and the paper's models."""

import time

import keras
import numpy as np
import pytest

from keras_neuromod import datasets
from keras_neuromod import models


def test_digits_split_is_normalised_stratified_and_seeded():
    (x_train, y_train), (x_test, y_test), num_classes = datasets.digits()
    assert num_classes == 10
    assert x_train.shape[1:] == (8, 8, 1) and x_train.dtype == np.float32
    assert len(x_train) + len(x_test) == 1797
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and x_train.max() > 0.9
    assert y_train.dtype == np.int32
    # every class is in both splits, in about the same share
    test_share = np.bincount(y_test, minlength=10) / np.bincount(
        np.concatenate([y_train, y_test]), minlength=10
    )
    assert np.all(np.abs(test_share - 0.2) < 0.02)
    again = datasets.digits()
    np.testing.assert_array_equal(again.train[1], y_train)
    other = datasets.digits(seed=1)
    assert not np.array_equal(other.train[1], y_train)
    # no image is in both splits
    train_keys = {x.tobytes() for x in x_train}
    assert sum(x.tobytes() in train_keys for x in x_test) < 5  # exact duplicates exist
    assert datasets.load("digits").input_shape == (8, 8, 1)


def test_unknown_dataset_and_bad_fraction():
    with pytest.raises(ValueError, match="mnist"):
        datasets.load("mnist")
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.digits(test_fraction=1.5)


tfds = pytest.importorskip(
    "tensorflow_datasets", reason="the CIFAR loaders need the [datasets] extra"
)


def test_cifar_offline_fails_at_once_with_instructions(tmp_path, monkeypatch):
    # The network check is replaced: this machine may or may not reach the host.
    monkeypatch.setattr(datasets, "_network_reachable", lambda *a, **k: False)
    start = time.monotonic()
    with pytest.raises(datasets.DatasetUnavailableError) as error:
        datasets.cifar10(data_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "download_and_prepare" in message and "digits" in message
    assert not any(tmp_path.iterdir()), "nothing half-made is left behind"


def test_cifar_not_prepared_without_download_names_folder(tmp_path):
    with pytest.raises(datasets.DatasetUnavailableError, match=str(tmp_path)):
        datasets.cifar100(data_dir=str(tmp_path), download=False)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_plumbing_with_mock_data(tmp_path, monkeypatch, name, classes):
    # The download is the one thing that cannot exist here: tfds's mock_data
    # stands in for it (random examples of the right shapes), and the network
    # check is told the host is reachable.
    monkeypatch.setattr(datasets, "_network_reachable", lambda *a, **k: True)
    with tfds.testing.mock_data(num_examples=6):
        data = datasets.load(name, data_dir=str(tmp_path))
    (x_train, y_train), (x_test, y_test), num_classes = data
    assert num_classes == classes
    assert x_train.shape == (6, 32, 32, 3) and x_test.shape == (6, 32, 32, 3)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() <= x_train.max() <= 1.0
    assert y_train.dtype == np.int32 and y_train.max() < classes


@pytest.mark.slow
@pytest.mark.parametrize(
    "architecture,input_shape,n_conv,n_pool,n_dense",
    [
        ("A", (32, 32, 3), 4, 2, 2),
        ("B", (32, 32, 3), 5, 5, 3),
        ("C", (32, 32, 3), 4, 4, 3),
        ("A", (8, 8, 1), 4, 2, 2),
        ("B", (8, 8, 1), 5, 3, 3),
        ("C", (8, 8, 1), 4, 3, 3),
        ("mlp", (8, 8, 1), 0, 0, 2),
    ],
)
def test_architectures(architecture, input_shape, n_conv, n_pool, n_dense):
    model = models.build(architecture, input_shape, 10, width=0.125)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == n_conv
    assert kinds.count("MaxPooling2D") == n_pool
    assert kinds.count("Dense") == n_dense
    assert model.output_shape == (None, 10)
    out = model.predict(np.zeros((2,) + input_shape, "float32"), verbose=0)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_full_width_model_a_matches_the_paper():
    model = models.build("A", (32, 32, 3), 10)
    widths = [
        layer.units if hasattr(layer, "units") else layer.filters
        for layer in model.layers
        if hasattr(layer, "kernel")
    ]
    assert widths == [32, 32, 64, 64, 512, 10]


def test_seed_fixes_initial_weights():
    a = models.build("A", (8, 8, 1), 10, width=0.25, seed=3)
    b = models.build("A", (8, 8, 1), 10, width=0.25, seed=3)
    c = models.build("A", (8, 8, 1), 10, width=0.25, seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    # distinct layers get distinct initial kernels
    assert not np.array_equal(a.get_weights()[2][:, :, :1, :1], a.get_weights()[0][:, :, :1, :1])


def test_seeded_weights_are_glorot_uniform_drawn_by_numpy():
    """The same draws as an independent numpy computation, hence the same on every backend."""
    model = models.build("A", (8, 8, 1), 10, width=0.25, seed=3)
    layer_seeds = np.random.default_rng(3).integers(0, 2**31 - 1, size=64)
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    for seed, kernel in zip(layer_seeds, kernels):
        shape = tuple(kernel.shape)
        receptive = int(np.prod(shape[:-2]))
        limit = np.sqrt(6.0 / (shape[-2] * receptive + shape[-1] * receptive))
        expected = np.random.default_rng(int(seed)).uniform(-limit, limit, size=shape)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(kernel), expected.astype("float32")
        )
    biases = [layer.bias for layer in model.layers if hasattr(layer, "bias")]
    assert all(not np.any(keras.ops.convert_to_numpy(b)) for b in biases)


def test_seeded_initializer_round_trips_through_config_and_model_save(tmp_path):
    initializer = models.SeededGlorotUniform(seed=11)
    again = keras.initializers.deserialize(keras.initializers.serialize(initializer))
    assert isinstance(again, models.SeededGlorotUniform) and again.seed == 11
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again((3, 4))), keras.ops.convert_to_numpy(initializer((3, 4)))
    )
    model = models.build("mlp", (5,), 3, seed=2)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert isinstance(loaded.layers[-1].kernel_initializer, models.SeededGlorotUniform)
    with pytest.raises(ValueError, match="seed"):
        models.SeededGlorotUniform(seed=-1)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="Unknown architecture"):
        models.build("D", (8, 8, 1), 10)
    with pytest.raises(ValueError, match="height, width, channels"):
        models.build("A", (64,), 10)
    with pytest.raises(ValueError, match="num_classes"):
        models.build("mlp", (64,), 1)
    with pytest.raises(ValueError, match="width"):
        models.build("mlp", (64,), 10, width=0)


def test_wine_is_standardised_on_the_train_split():
    (x_train, y_train), (x_test, y_test), num_classes = datasets.load("wine")
    assert num_classes == 3 and x_train.shape[1:] == (13,) and x_train.dtype == np.float32
    assert len(x_train) + len(x_test) == 178
    np.testing.assert_allclose(x_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(0), 1.0, atol=1e-4)
    assert set(np.unique(y_test)) == {0, 1, 2}
    model = models.build("mlp", (13,), 3, seed=0)
    assert model.output_shape == (None, 3)


def test_stratified_split_holds_out_each_class_s_share():
    y = np.repeat(np.arange(3), [10, 20, 40]).astype("int32")
    train, test = datasets.stratified_split(y, 0.25, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
    assert np.bincount(y[test]).tolist() == [2, 5, 10]  # round(count * 0.25)
    assert test.tolist() == sorted(test.tolist())
    again = datasets.stratified_split(y, 0.25, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, test), again))
    assert not np.array_equal(test, datasets.stratified_split(y, 0.25, seed=1)[1])


def test_the_two_mlps_are_one_builder_with_different_layers_and_outputs():
    from keras_neuromod import tasks

    paper = models.build("mlp", (8, 8, 1), 10, seed=0)
    suite = tasks.mlp((8, 8, 1), 10, seed=0)
    assert [layer.units for layer in paper.layers if hasattr(layer, "units")] == [128, 10]
    assert [layer.units for layer in suite.layers if hasattr(layer, "units")] == [64, 64, 10]
    assert paper.layers[-1].activation is keras.activations.softmax
    assert suite.layers[-1].activation is keras.activations.linear
    same = models.build(
        "mlp", (8, 8, 1), 10, hidden=(64, 64), seed=0, name="mlp", output_activation=None
    )
    assert suite.name == same.name == "mlp"
    for a, b in zip(suite.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(a, b)
    # logits may have one unit (a regression's output); a softmax needs two
    assert models.build("mlp", (5,), 1, output_activation=None).output_shape == (None, 1)
    with pytest.raises(ValueError, match="num_classes"):
        models.build("mlp", (5,), 1)


def test_layer_initializers_draw_one_seed_per_layer_from_the_model_seed():
    init = models.LayerInitializers(7)
    seeds = np.random.default_rng(7).integers(0, 2**31 - 1, size=64).tolist()
    drawn = [init.glorot(), init.orthogonal(), init.seed()]
    assert isinstance(drawn[0], models.SeededGlorotUniform) and drawn[0].seed == seeds[0]
    assert isinstance(drawn[1], models.SeededOrthogonal) and drawn[1].seed == seeds[1]
    assert drawn[2] == seeds[2]
    fresh = models.LayerInitializers(None)
    assert isinstance(fresh.glorot(), keras.initializers.GlorotUniform) and fresh.seed() is None
