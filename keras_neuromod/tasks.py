"""A suite of named training tasks: data, models, loss and budget, all offline.

Optimizers (agents) are evolved over many tasks and judged on tasks they never
saw, so the suite spans six families of training problems:

* ``"images"``: the bundled 8x8 digits (an MLP, a small CNN, and a residual
  MLP with batch normalisation and dropout at batch 64), generated 12x12
  shapes, and CIFAR-10 where tensorflow-datasets has it prepared.
* ``"tabular"``: breast cancer and wine (bundled with scikit-learn), a
  generated ``make_classification`` problem, a larger one trained at batch
  256, and three interleaved spirals.
* ``"signals"``: generated 1-D signals, ``[n, length, 1]``: waveform shapes,
  and the number of bursts in noise.
* ``"sequences"``: generated ``[n, time, features]`` sequences for recurrent
  models: the majority symbol, the first symbol, the adding problem; and
  ``[n, time]`` token ids (as floats) for attention: the most frequent token
  (an embedding and one post-norm self-attention layer) and the symbol after a
  marker (a Transformer block).
* ``"regression"``: diabetes (bundled), Friedman #1, an ill-conditioned
  multi-output linear problem and a small noisy problem of heavy-tailed,
  correlated features, trained on the mean squared error.
* ``"forecasting"``: real series shipped with statsmodels (weekly Mauna Loa
  CO2, yearly sunspots, monthly El Nino temperatures), windows of the past to
  the next values, split in time, with a GRU and a causal Conv1D forecaster.
  The whole family is held out (`HELD_OUT_FAMILIES`); without statsmodels its
  data raise `datasets.DatasetUnavailableError`.

This registry (`get`, `names`) is the one to extend with new problems. The
other, `keras_neuromod.datasets.load`, holds only the core paper's data sets
by the names `FitnessTask` stores; the suite's digits and wine tasks read their
data from it. The suite's model builders (`MODELS`) are small models with a
linear output; its ``"mlp"`` (two hidden layers of 64 units) is not
``keras_neuromod.models.build("mlp", ...)`` (the paper's, one hidden layer of
128 units and a softmax) but is built by it, with the same seeded initializers
(`keras_neuromod.models.LayerInitializers`) as every builder here.

Tasks marked `held_out` are never used by evolution: they are the evidence that
an agent generalises. Besides forecasting, they include workloads unlike the
suite's: a residual CNN with batch normalisation (`shapes_resnet`; the suite's
residual model is an MLP), a pre-norm Transformer block with a position
embedding and a feed-forward part on token ids (`token_after_marker`; the
suite's attention model is one post-norm layer without positions), a digits
autoencoder at batch 256 and a dropout MLP trained over four times the steps
of the suite's longest training, at batch 8 (`hastie_dropout`).

Most tasks' training takes about a second with `model.fit` on two CPU cores;
the held-out workloads take up to a few seconds. Data are deterministic:
bundled data sets are always the same, generated ones are drawn from the
`seed` given.

    >>> task = tasks.get("digits_mlp")
    >>> splits = task.splits(seed=0)
    >>> model = task.build_model("mlp", seed=0)
    >>> task.compile(model, keras.optimizers.Adam())
    >>> model.fit(*splits.train, validation_data=splits.val,
    ...           epochs=task.epochs, batch_size=task.batch_size)

Users add tasks with `register` and model builders with `register_model`,
anywhere (a module, a script, a notebook): an evolution sends the definitions of
its suite's tasks to its worker processes (`definitions`, `install`).
"""

import collections
import dataclasses
import functools
import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
from keras import layers

from keras_neuromod import _fields
from keras_neuromod import datasets
from keras_neuromod import models as _models
from keras_neuromod.models import LayerInitializers

__all__ = [
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "LOSSES",
    "MODELS",
    "PositionEmbedding",
    "Splits",
    "TOKENS",
    "Task",
    "definitions",
    "get",
    "install",
    "names",
    "register",
    "register_model",
    "resizable",
]

FAMILIES = ("images", "tabular", "signals", "sequences", "regression", "forecasting")

# Families of which every task is held out: evolution never sees their kind of problem.
HELD_OUT_FAMILIES = ("forecasting",)

# loss name -> (metric, higher is better)
LOSSES = {
    "sparse_categorical_crossentropy": ("accuracy", True),
    "mean_squared_error": ("mse", False),
}


# --------------------------------------------------------------------------
# Splits and tasks
# --------------------------------------------------------------------------


class Splits(NamedTuple):
    """A task's training, validation and test arrays.

    The validation part is carved from the training data (stratified by class
    for classification), never from the test data.

    Attributes:
        train: ``(x, y)``, the training data minus the validation part.
        val: ``(x, y)``, the validation part.
        test: ``(x, y)``.
        num_classes: the class count; 0 for regression.
    """

    train: tuple
    val: tuple
    test: tuple
    num_classes: int

    @property
    def input_shape(self):
        """Shape of one example."""
        return tuple(self.train[0].shape[1:])

    @property
    def output_dim(self):
        """Units of the model's output: the class count, or the targets' width."""
        if self.num_classes:
            return int(self.num_classes)
        return int(self.train[1].shape[1])


# (task name, seed) -> (task, splits), the most recently used last; a task
# re-registered under the same name is not equal to the cached one, so its
# splits are made again. At most _CACHE_SIZE entries are kept.
_SPLITS_CACHE = collections.OrderedDict()
_CACHE_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Task:
    """A named training problem: data, the models it trains, its loss and budget.

    Args:
        name: the registry key, e.g. ``"digits_mlp"``.
        family: one of `FAMILIES`.
        data: ``data(seed) -> ((x_train, y_train), (x_test, y_test), num_classes)``
            (a `datasets.Dataset` or a tuple like it): float32 inputs; int32
            class labels, or float32 targets shaped ``[n, k]`` with
            ``num_classes = 0`` for regression. `seed` picks generated data's
            draw (bundled data ignore it); the same seed must give the same arrays.
        models: names of the model builders in `MODELS` this task may train;
            the first is its default.
        loss: ``"sparse_categorical_crossentropy"`` (models output logits) or
            ``"mean_squared_error"``.
        epochs: training epochs of the task's budget (at least 1).
        batch_size: training batch size.
        validation_fraction: share of the training data carved off for
            validation, in (0, 1).
        held_out: True for tasks that evolution never uses (evidence only);
            must be True in a family of `HELD_OUT_FAMILIES`.
        description: what the task is, in one sentence.
    """

    name: str
    family: str
    data: Callable
    models: tuple
    loss: str
    epochs: int
    batch_size: int = 32
    validation_fraction: float = 0.2
    held_out: bool = False
    description: str = ""

    def __post_init__(self):
        where = f"Task {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Task field 'name' must be a non-empty string, got {self.name!r}.")
        if self.family not in FAMILIES:
            raise ValueError(
                f"{where}, field 'family': unknown family {self.family!r}; "
                f"choose one of {list(FAMILIES)}."
            )
        if not callable(self.data):
            raise ValueError(f"{where}, field 'data' must be callable: data(seed) -> Dataset.")
        models = self.models
        if isinstance(models, str) or not isinstance(models, (tuple, list)) or not models:
            raise ValueError(
                f"{where}, field 'models' must be a non-empty tuple of model names, got {models!r}."
            )
        if not all(isinstance(model, str) for model in models):
            raise ValueError(
                f"{where}, field 'models' must hold model names (strings), got {models!r}."
            )
        object.__setattr__(self, "models", tuple(models))
        if self.loss not in LOSSES:
            raise ValueError(
                f"{where}, field 'loss': unknown loss {self.loss!r}; choose one of {list(LOSSES)}."
            )
        _fields.integer(self.epochs, f"{where}, field 'epochs'", minimum=1)
        _fields.integer(self.batch_size, f"{where}, field 'batch_size'", minimum=1)
        fraction = _fields.number(self.validation_fraction, f"{where}, field 'validation_fraction'")
        if not 0.0 < fraction < 1.0:
            raise ValueError(
                f"{where}, field 'validation_fraction' must lie in (0, 1), got {fraction!r}."
            )
        if not isinstance(self.held_out, bool):
            raise ValueError(f"{where}, field 'held_out' must be a bool, got {self.held_out!r}.")
        if self.family in HELD_OUT_FAMILIES and not self.held_out:
            raise ValueError(
                f"{where}: every task of the family {self.family!r} is held out; "
                "pass held_out=True."
            )
        if not isinstance(self.description, str):
            raise ValueError(f"{where}, field 'description' must be a string.")

    @property
    def metric(self):
        """The Keras metric name: ``"accuracy"`` for classification, ``"mse"`` for regression."""
        return LOSSES[self.loss][0]

    @property
    def higher_is_better(self):
        """Whether a larger `metric` is better (accuracy) or worse (mse)."""
        return LOSSES[self.loss][1]

    def splits(self, seed=0):
        """The train, validation and test arrays for `seed`, cached in-process.

        `seed` picks the draw of generated data and the validation carve. The
        splits of the 64 most recently used (task, seed) pairs are kept; their
        arrays are read-only, as they are shared between callers.

        Args:
            seed: a non-negative int.

        Returns:
            A `Splits`.
        """
        seed = _fields.integer(seed, "seed", minimum=0)
        key = (self.name, seed)
        cached = _SPLITS_CACHE.get(key)
        if cached is not None and cached[0] == self:
            _SPLITS_CACHE.move_to_end(key)
            return cached[1]
        splits = _make_splits(self, seed)
        _SPLITS_CACHE[key] = (self, splits)
        _SPLITS_CACHE.move_to_end(key)
        while len(_SPLITS_CACHE) > _CACHE_SIZE:
            _SPLITS_CACHE.popitem(last=False)
        return splits

    def data_order(self, seed=0, epochs=None):
        """The order of the training split's examples in each epoch of a training from `seed`.

        Every training from one seed (an evolution's instance, a comparison's
        run) visits the examples in the same order, whatever its optimizer.
        A longer training's orders start with a shorter one's.

        Args:
            seed: a non-negative int.
            epochs: how many epochs (None: the task's `epochs`).

        Returns:
            An int array `[epochs, training examples]`, one permutation per epoch.
        """
        seed = _fields.integer(seed, "seed", minimum=0)
        epochs = self.epochs if epochs is None else _fields.integer(epochs, "epochs", minimum=1)
        order = np.random.default_rng(seed)
        n = len(self.splits(seed).train[0])
        return np.stack([order.permutation(n) for _ in range(epochs)])

    def build_model(self, model, seed=None, width=None, blocks=None):
        """An uncompiled model for this task.

        Classification models output logits (a linear layer of `num_classes`
        units); regression models output the targets' width in linear units.

        Args:
            model: one of the task's `models`.
            seed: None for Keras's fresh initialisation, or an int: numpy-drawn
                weights, the same on every backend.
            width: None (the model's standard size), or a positive factor on
                its hidden units, filters and features; the model must be
                `resizable`.
            blocks: None (the model's standard depth), or how many times its
                repeated block (a hidden layer, a convolution, a residual or
                attention block) is stacked, at least 1; the model must be
                `resizable`.

        Returns:
            A `keras.Model`.

        Raises:
            ValueError: the model is not one of the task's, or not registered,
                or cannot be resized as asked.
            TypeError: its builder returned something other than a `keras.Model`.
        """
        if model not in self.models:
            raise ValueError(
                f"Task {self.name!r} trains the models {list(self.models)}, not {model!r}."
            )
        if model not in MODELS:
            raise ValueError(f"Unknown model {model!r}; registered models: {sorted(MODELS)}.")
        if seed is not None:
            seed = _fields.integer(seed, "seed", minimum=0)
        size = {}
        if width is not None:
            size["width"] = _fields.number(width, "width")
            if not (math.isfinite(size["width"]) and size["width"] > 0):
                raise ValueError(f"width must be a positive number, got {width!r}.")
        if blocks is not None:
            size["blocks"] = _fields.integer(blocks, "blocks", minimum=1)
        if size and resizable(model) is None:
            raise ValueError(
                f"Model {model!r} cannot be resized: its builder takes no `width` and "
                "`blocks` keywords."
            )
        splits = self.splits(0)
        return _checked_model(
            model, MODELS[model](splits.input_shape, splits.output_dim, seed, **size)
        )

    def loss_function(self):
        """The loss: `SparseCategoricalCrossentropy(from_logits=True)` or `MeanSquaredError()`."""
        if self.loss == "sparse_categorical_crossentropy":
            return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return keras.losses.MeanSquaredError()

    def compile(self, model, optimizer, **kwargs):
        """Compile `model` with `optimizer`, the task's loss and its metric.

        Args:
            model: a model of this task (`build_model`).
            optimizer: a Keras optimizer.
            **kwargs: more arguments of `model.compile` (e.g. ``jit_compile``).
        """
        kwargs.setdefault("loss", self.loss_function())
        kwargs.setdefault("metrics", [self.metric])
        model.compile(optimizer=optimizer, **kwargs)
        return model


def _make_splits(task, seed):
    """Load `task`'s data for `seed`, check it and split a validation part off the train one."""
    (x_train, y_train), (x_test, y_test), num_classes = _unpacked_data(task, seed)
    classification = task.loss == "sparse_categorical_crossentropy"
    num_classes = _checked_num_classes(task, num_classes, classification)
    x_train, x_test = (np.asarray(x, "float32") for x in (x_train, x_test))
    if classification:
        y_train, y_test = (np.asarray(y, "int32").reshape(-1) for y in (y_train, y_test))
    else:
        y_train, y_test = (np.asarray(y, "float32") for y in (y_train, y_test))
        y_train, y_test = (y.reshape(len(y), -1) for y in (y_train, y_test))
    _check_examples(task, seed, x_train, y_train, x_test, y_test)
    if classification:
        _check_labels(task, num_classes, y_train, y_test)
    val_index = _validation_index(
        y_train if classification else None, len(y_train), task.validation_fraction, seed
    )
    val_mask = np.zeros(len(y_train), bool)
    val_mask[val_index] = True
    return Splits(
        train=(_frozen(x_train[~val_mask]), _frozen(y_train[~val_mask])),
        val=(_frozen(x_train[val_mask]), _frozen(y_train[val_mask])),
        test=(_frozen(x_test), _frozen(y_test)),
        num_classes=num_classes,
    )


def _unpacked_data(task, seed):
    """Call `task.data(seed)` and check that it unpacks into train, test and a class count."""
    loaded = task.data(seed)
    try:
        (x_train, y_train), (x_test, y_test), num_classes = loaded
    except (TypeError, ValueError):
        raise ValueError(
            f"Task {task.name!r}: data(seed) must return "
            "((x_train, y_train), (x_test, y_test), num_classes)."
        ) from None
    return (x_train, y_train), (x_test, y_test), num_classes


def _checked_num_classes(task, num_classes, classification):
    """The class count as an int: at least 2 for a classification, 0 for a regression."""
    num_classes = _fields.integer(num_classes, f"Task {task.name!r}: num_classes")
    if classification and num_classes < 2:
        raise ValueError(
            f"Task {task.name!r} is a classification task but has num_classes={num_classes}."
        )
    if not classification and num_classes != 0:
        raise ValueError(
            f"Task {task.name!r} is a regression task: num_classes must be 0, got {num_classes}."
        )
    return num_classes


def _check_examples(task, seed, x_train, y_train, x_test, y_test):
    """Check that inputs and targets pair up, are finite and are not too few."""
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"Task {task.name!r}: inputs and targets differ in length.")
    for label, array in (
        ("x_train", x_train),
        ("y_train", y_train),
        ("x_test", x_test),
        ("y_test", y_test),
    ):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(
                f"Task {task.name!r}: data(seed={seed}) gave {bad} NaN or infinite "
                f"value(s) in {label}; a training on them cannot be scored."
            )
    if len(y_train) < 2 or len(y_test) < 1:
        raise ValueError(f"Task {task.name!r}: data(seed) gave too few examples.")


def _check_labels(task, num_classes, y_train, y_test):
    """Check that every class label lies in [0, num_classes)."""
    labels = np.concatenate([y_train, y_test])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"Task {task.name!r}: labels must lie in [0, {num_classes}), "
            f"got [{labels.min()}, {labels.max()}]."
        )


def _frozen(array):
    """A read-only C-ordered copy of `array` (the caller's arrays stay writeable)."""
    array = np.array(array, order="C", copy=True)
    array.flags.writeable = False
    return array


def _validation_index(labels, n, fraction, seed):
    """Indices of the validation part: a share of every class (at least one), or of all."""
    rng = np.random.default_rng([seed, 2718])
    if labels is None:
        size = min(n - 1, max(1, int(round(n * fraction))))
        return rng.permutation(n)[:size]
    chosen = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) >= 2:
            chosen.extend(
                members[: min(len(members) - 1, max(1, int(round(len(members) * fraction))))]
            )
    return np.asarray(chosen, dtype="int64")


# --------------------------------------------------------------------------
# Model builders: builder(input_shape, output_dim, seed) -> keras.Model
#
# A builder that also takes `width` (a factor on its hidden units, filters and
# features) and `blocks` (how many times its repeated block is stacked, its
# default the builder's standard) can be resized (`resizable`), which the
# suite's "shapes" augmentation draws per instance. At their defaults the
# model is exactly the builder's standard one, weight for weight.
# --------------------------------------------------------------------------


def _units(units, width):
    """`units` scaled by `width`, at least one."""
    return max(1, int(round(units * float(width))))


def _output(x, output_dim, init):
    return layers.Dense(int(output_dim), kernel_initializer=init.glorot(), name="output")(x)


def _rank(input_shape, rank, model):
    if len(input_shape) != rank:
        wanted = {2: "(time, features)", 3: "(height, width, channels)"}[rank]
        raise ValueError(f"The {model!r} model needs an input shape {wanted}, got {input_shape}.")


def mlp(input_shape, output_dim, seed=None, width=1.0, blocks=2):
    """Flatten, two Dense layers of 64 ReLU units, a linear output layer.

    `blocks` hidden layers of `64 * width` units.

    The suite's ``"mlp"``: `keras_neuromod.models.build` ``("mlp", ...,
    hidden=(64, 64), output_activation=None)``. It differs from
    ``models.build("mlp", ...)`` (the core paper's, which `FitnessTask` trains:
    one hidden layer of 128 units and a softmax output) by its layers and its
    linear output, which the suite's losses read as logits or as a
    regression's values.
    """
    return _models.build(
        "mlp",
        input_shape,
        output_dim,
        hidden=(_units(64, width),) * int(blocks),
        seed=seed,
        name="mlp",
        output_activation=None,
    )


def linear(input_shape, output_dim, seed=None):
    """Flatten and a linear output layer (a linear or logistic regression)."""
    init = LayerInitializers(seed)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = layers.Flatten(name="flatten")(inputs)
    return keras.Model(inputs, _output(x, output_dim, init), name="linear")


def conv2d(input_shape, output_dim, seed=None, width=1.0, blocks=2):
    """Two 3x3 ReLU convolutions (16 and 32 filters), each pooled where the image allows.

    `blocks` convolutions of `16 * 2**i * width` filters.
    """
    input_shape = tuple(input_shape)
    _rank(input_shape, 3, "conv2d")
    init = LayerInitializers(seed)
    inputs = keras.Input(shape=input_shape, name="input")
    x, size = inputs, min(input_shape[:2])
    for i in range(int(blocks)):
        x = _relu_conv(layers.Conv2D, _units(16 * 2**i, width), 3, init, f"conv_{i}")(x)
        if size >= 2:
            x = layers.MaxPooling2D(2, name=f"pool_{i}")(x)
            size //= 2
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _output(x, output_dim, init), name="conv2d")


def conv1d(input_shape, output_dim, seed=None, width=1.0, blocks=2):
    """Conv1D 16 (kernel 5), max-pooling, Conv1D 32 (kernel 5), global average pooling.

    `blocks` convolutions of `16 * 2**i * width` filters, each but the last
    pooled where the sequence allows.
    """
    input_shape = tuple(input_shape)
    _rank(input_shape, 2, "conv1d")
    init = LayerInitializers(seed)
    inputs = keras.Input(shape=input_shape, name="input")
    x, length = inputs, input_shape[0]
    for i in range(int(blocks)):
        if i and length >= 2:
            x = layers.MaxPooling1D(2, name=f"pool_{i - 1}")(x)
            length //= 2
        x = _relu_conv(layers.Conv1D, _units(16 * 2**i, width), 5, init, f"conv_{i}")(x)
    x = layers.GlobalAveragePooling1D(name="average")(x)
    return keras.Model(inputs, _output(x, output_dim, init), name="conv1d")


def _relu_conv(layer_class, filters, kernel_size, init, name, padding="same", **options):
    """A ReLU convolution of `layer_class` whose kernel `init` seeds."""
    return layer_class(
        filters,
        kernel_size,
        padding=padding,
        activation="relu",
        kernel_initializer=init.glorot(),
        name=name,
        **options,
    )


def _recurrent(layer_class, name):
    def builder(input_shape, output_dim, seed=None, width=1.0, blocks=1):
        input_shape = tuple(input_shape)
        _rank(input_shape, 2, name)
        init = LayerInitializers(seed)
        inputs = keras.Input(shape=input_shape, name="input")
        x = inputs
        for i in range(int(blocks)):
            last = i == int(blocks) - 1
            x = layer_class(
                _units(32, width),
                return_sequences=not last,
                kernel_initializer=init.glorot(),
                recurrent_initializer=init.orthogonal(),
                name=name if last else f"{name}_{i}",
            )(x)
        return keras.Model(inputs, _output(x, output_dim, init), name=name)

    builder.__name__ = name
    builder.__doc__ = (
        f"One {layer_class.__name__} layer of 32 units on (time, features) input, "
        "a linear output layer.\n\n"
        f"    `blocks` stacked layers of `32 * width` units."
    )
    return builder


simple_rnn = _recurrent(layers.SimpleRNN, "simple_rnn")
lstm = _recurrent(layers.LSTM, "lstm")
gru = _recurrent(layers.GRU, "gru")


def causal_conv1d(input_shape, output_dim, seed=None, width=1.0, blocks=4):
    """A forecaster: causal Conv1D 32 (kernel 3) dilated 1, 2, 4 and 8, the last step's features.

    `blocks` convolutions of `32 * width` filters, dilated `2**i`.
    """
    input_shape = tuple(input_shape)
    _rank(input_shape, 2, "causal_conv1d")
    init = LayerInitializers(seed)
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for i in range(int(blocks)):
        x = _relu_conv(
            layers.Conv1D, _units(32, width), 3, init, f"conv_{i}", "causal", dilation_rate=2**i
        )(x)
    x = layers.Cropping1D((input_shape[0] - 1, 0), name="last_step")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _output(x, output_dim, init), name="causal_conv1d")


def _conv_bn(x, filters, init, name, strides=1, kernel_size=3):
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=init.glorot(),
        name=f"{name}_conv",
    )(x)
    return layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)


def resnet_bn(input_shape, output_dim, seed=None, width=1.0, blocks=2):
    """A residual CNN: a conv-BN-ReLU stem of 16 filters, two residual blocks, global average
    pooling.

    Each block is conv-BN-ReLU-conv-BN plus its input, then ReLU; the second
    block has 32 filters and stride 2, its skip a strided 1x1 conv-BN. The
    batch normalisation's moving statistics follow the batches with momentum
    0.9, so that short trainings evaluate with settled statistics.

    `blocks` residual blocks; block `i` after the first has `16 * 2**i * width`
    filters and stride 2 while the feature map is at least 2 wide (the stem
    and the first block `16 * width`).
    """
    input_shape = tuple(input_shape)
    _rank(input_shape, 3, "resnet_bn")
    init = LayerInitializers(seed)
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.ReLU(name="stem_relu")(_conv_bn(inputs, _units(16, width), init, "stem"))
    size = min(input_shape[:2])
    for i in range(int(blocks)):
        filters, strides = _units(16 * 2**i, width), 2 if i and size >= 2 else 1
        size = -(-size // strides)
        skip = x
        x = layers.ReLU(name=f"block_{i}_relu")(_conv_bn(x, filters, init, f"block_{i}_a", strides))
        x = _conv_bn(x, filters, init, f"block_{i}_b")
        if strides != 1 or skip.shape[-1] != filters:
            skip = _conv_bn(skip, filters, init, f"block_{i}_skip", strides, kernel_size=1)
        x = layers.ReLU(name=f"block_{i}_out")(layers.Add(name=f"block_{i}_add")([x, skip]))
    x = layers.GlobalAveragePooling2D(name="average")(x)
    return keras.Model(inputs, _output(x, output_dim, init), name="resnet_bn")


@keras.saving.register_keras_serializable(package="keras_neuromod")
class PositionEmbedding(layers.Layer):
    """Adds a learned embedding of each position to a `[batch, time, features]` input.

    Args:
        initializer: the initializer of the `[time, features]` embedding.
        **kwargs: arguments of `keras.layers.Layer`.
    """

    def __init__(self, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=tuple(input_shape[-2:]), initializer=self.initializer, name="embeddings"
        )

    def call(self, inputs):
        return inputs + keras.ops.cast(self.embeddings, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config["initializer"] = keras.initializers.serialize(self.initializer)
        return config


TOKENS = 32  # token ids of the `transformer` and `attention` models lie in [0, TOKENS)


def _token_ids(input_shape, model):
    """`input_shape` as a tuple, checked to be `(time,)`."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 1:
        raise ValueError(
            f"The {model!r} model needs an input shape (time,) of token ids, got {input_shape}."
        )
    return input_shape


def _self_attention(x, init, name="attention"):
    """2-head self-attention (key size 16) on `x`, its four projections each seeded by `init`."""
    attention = layers.MultiHeadAttention(2, 16, kernel_initializer=init.glorot(), name=name)
    attended = attention(x, x)
    for projection in (
        attention.query_dense,
        attention.key_dense,
        attention.value_dense,
        attention.output_dense,
    ):  # each its own draw, not one seed for all four
        projection.kernel_initializer = init.glorot()
        projection.kernel.assign(projection.kernel_initializer(projection.kernel.shape))
    return attended


def transformer(input_shape, output_dim, seed=None, width=1.0, blocks=1):
    """One pre-norm Transformer encoder block on token ids, average pooling, a linear output layer.

    Embedding of `TOKENS` ids into 32 features plus a learned position
    embedding; then, each layer-normalised first and added to its input,
    2-head self-attention (key size 16) and a feed-forward part (64 ReLU
    units, 32 linear). The input is `[time]` token ids, as floats or ints.

    `blocks` encoder blocks, `32 * width` features and `64 * width`
    feed-forward units.
    """
    input_shape = _token_ids(input_shape, "transformer")
    init = LayerInitializers(seed)
    features = _units(32, width)
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Embedding(TOKENS, features, embeddings_initializer=init.glorot(), name="embedding")(
        inputs
    )
    x = PositionEmbedding(init.glorot(), name="position")(x)
    for i in range(int(blocks)):
        tag = f"_{i}" if i else ""  # the first block's names are the one-block model's
        normed = layers.LayerNormalization(name=f"attention_norm{tag}")(x)
        attended = _self_attention(normed, init, name=f"attention{tag}")
        x = layers.Add(name=f"attention_add{tag}")([x, attended])
        normed = layers.LayerNormalization(name=f"feed_norm{tag}")(x)
        hidden = layers.Dense(
            _units(64, width),
            activation="relu",
            kernel_initializer=init.glorot(),
            name=f"feed_0{tag}",
        )(normed)
        hidden = layers.Dense(features, kernel_initializer=init.glorot(), name=f"feed_1{tag}")(
            hidden
        )
        x = layers.Add(name=f"feed_add{tag}")([x, hidden])
    x = layers.GlobalAveragePooling1D(name="average")(x)
    return keras.Model(inputs, _output(x, output_dim, init), name="transformer")


def autoencoder(input_shape, output_dim, seed=None, width=1.0, blocks=1):
    """Flatten, Dense 32 ReLU, an 8-unit linear code, Dense 32 ReLU, a linear output
    (the input again).

    `blocks` encoder and `blocks` decoder layers of `32 * width` units, a code of
    `8 * width`.
    """
    init = LayerInitializers(seed)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = layers.Flatten(name="flatten")(inputs)
    # the first layer of each part has the name of the one-block model's
    for i in range(int(blocks)):
        x = _relu_dense(x, _units(32, width), init, f"encoder_{i}" if i else "encoder")
    x = layers.Dense(_units(8, width), kernel_initializer=init.glorot(), name="code")(x)
    for i in range(int(blocks)):
        x = _relu_dense(x, _units(32, width), init, f"decoder_{i}" if i else "decoder")
    return keras.Model(inputs, _output(x, output_dim, init), name="autoencoder")


def _relu_dense(x, units, init, name):
    """`x` through a ReLU Dense layer of `units` whose kernel `init` seeds."""
    return layers.Dense(units, activation="relu", kernel_initializer=init.glorot(), name=name)(x)


def dropout_mlp(input_shape, output_dim, seed=None, width=1.0, blocks=2):
    """Flatten, two Dense layers of 128 ReLU units each followed by Dropout 0.3, a linear output.

    With a `seed`, the dropout masks are seeded from it too (a seed fixes the
    training, given the batches). `blocks` such layers of `128 * width` units.
    """
    init = LayerInitializers(seed)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = layers.Flatten(name="flatten")(inputs)
    for i in range(int(blocks)):
        x = _relu_dense(x, _units(128, width), init, f"dense_{i}")
        x = layers.Dropout(0.3, seed=init.seed(), name=f"dropout_{i}")(x)
    return keras.Model(inputs, _output(x, output_dim, init), name="dropout_mlp")


def attention(input_shape, output_dim, seed=None, width=1.0, blocks=1):
    """Token ids, an embedding, one post-norm self-attention layer, max pooling, a linear output.

    Embedding of `TOKENS` ids into 32 features, without positions; 2-head
    self-attention (key size 16) added to its input and layer-normalised after
    the sum (post-norm); global max pooling over time. Unlike the held-out
    ``"transformer"`` (pre-norm, a position embedding and a feed-forward
    part), it reads a sequence as a bag of tokens in context. The input is
    `[time]` token ids, as floats or ints.

    `blocks` such layers, `32 * width` features.
    """
    input_shape = _token_ids(input_shape, "attention")
    init = LayerInitializers(seed)
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Embedding(
        TOKENS, _units(32, width), embeddings_initializer=init.glorot(), name="embedding"
    )(inputs)
    for i in range(int(blocks)):
        tag = f"_{i}" if i else ""  # the first layer's names are the one-layer model's
        attended = _self_attention(x, init, name=f"attention{tag}")
        x = layers.Add(name=f"attention_add{tag}")([x, attended])
        x = layers.LayerNormalization(name=f"attention_norm{tag}")(x)
    x = layers.GlobalMaxPooling1D(name="max")(x)
    return keras.Model(inputs, _output(x, output_dim, init), name="attention")


def _dense_bn(x, units, init, name):
    x = layers.Dense(units, use_bias=False, kernel_initializer=init.glorot(), name=f"{name}_dense")(
        x
    )
    return layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)


def residual_mlp(input_shape, output_dim, seed=None, width=1.0, blocks=2):
    """Flatten, a Dense stem of 64 ReLU units, two residual blocks, a linear output layer.

    Each block is Dense-BN-ReLU-Dropout 0.1-Dense-BN plus its input, then
    ReLU (64 units throughout). The batch normalisation's moving statistics
    follow the batches with momentum 0.9, so that short trainings evaluate
    with settled statistics; with a `seed`, the dropout masks are seeded from
    it too (a seed fixes the training, given the batches). `blocks` residual
    blocks, `64 * width` units.
    """
    init = LayerInitializers(seed)
    units = _units(64, width)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(units, activation="relu", kernel_initializer=init.glorot(), name="stem")(x)
    for i in range(int(blocks)):
        skip = x
        x = layers.ReLU(name=f"block_{i}_relu")(_dense_bn(x, units, init, f"block_{i}_a"))
        x = layers.Dropout(0.1, seed=init.seed(), name=f"block_{i}_dropout")(x)
        x = _dense_bn(x, units, init, f"block_{i}_b")
        x = layers.ReLU(name=f"block_{i}_out")(layers.Add(name=f"block_{i}_add")([x, skip]))
    return keras.Model(inputs, _output(x, output_dim, init), name="residual_mlp")


MODELS = {
    "mlp": mlp,
    "conv2d": conv2d,
    "conv1d": conv1d,
    "simple_rnn": simple_rnn,
    "lstm": lstm,
    "gru": gru,
    "linear": linear,
    "causal_conv1d": causal_conv1d,
    "resnet_bn": resnet_bn,
    "transformer": transformer,
    "autoencoder": autoencoder,
    "dropout_mlp": dropout_mlp,
    "residual_mlp": residual_mlp,
    "attention": attention,
}


def _checked_model(name, built):
    """`built` if it is a `keras.Model`, else a TypeError naming the model.

    Args:
        name: the model's name in `MODELS`.
        built: what its builder returned.
    """
    if not isinstance(built, keras.Model):
        builder = getattr(MODELS.get(name), "__qualname__", repr(MODELS.get(name)))
        raise TypeError(
            f"The builder {builder} of model {name!r} returned {type(built).__name__} "
            f"({built!r:.80}); a builder must be "
            "builder(input_shape, output_dim, seed) -> keras.Model (wrap a layer in "
            "keras.Model(inputs, outputs))."
        )
    return built


def resizable(model):
    """The standard `blocks` of `model` if its builder can be resized, else None.

    A resizable builder takes the keywords `width` (a factor on its hidden
    units, filters and features) and `blocks` (how many times its repeated
    block is stacked), whose default is its standard depth. Every builder of
    `MODELS` but ``"linear"`` is.

    Args:
        model: a name in `MODELS`.
    """
    if model not in MODELS:
        raise ValueError(f"Unknown model {model!r}; registered models: {sorted(MODELS)}.")
    try:
        parameters = inspect.signature(MODELS[model]).parameters
    except (TypeError, ValueError):  # a callable without a signature
        return None
    if "width" not in parameters or "blocks" not in parameters:
        return None
    return int(parameters["blocks"].default)


def register_model(name, builder, overwrite=False):
    """Add a model builder to `MODELS`.

    Args:
        name: the model's name, for `Task.models`.
        builder: ``builder(input_shape, output_dim, seed) -> keras.Model``, an
            uncompiled model whose output is logits (classification) or the
            targets (regression); `seed` is None or an int fixing its weights.
            `Task.build_model` raises a TypeError if it returns anything else.
        overwrite: replace a builder of the same name.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A model's name must be a non-empty string, got {name!r}.")
    if not callable(builder):
        raise ValueError(f"The builder of model {name!r} must be callable.")
    if name in MODELS and not overwrite:
        raise ValueError(
            f"A model named {name!r} is already registered; pass overwrite=True to replace it."
        )
    MODELS[name] = builder
    return builder


# --------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------

_REGISTRY = {}


def register(task, overwrite=False):
    """Add a `Task` to the registry.

    Args:
        task: a `Task`; every name in its `models` must be in `MODELS`.
        overwrite: replace a task of the same name.

    Returns:
        The task.
    """
    if not isinstance(task, Task):
        raise ValueError(f"register takes a Task, got {type(task).__name__}.")
    unknown = [model for model in task.models if model not in MODELS]
    if unknown:
        raise ValueError(
            f"Task {task.name!r}, field 'models': unknown model(s) {unknown}; "
            f"registered models: {sorted(MODELS)} (add one with register_model)."
        )
    if task.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A task named {task.name!r} is already registered; pass overwrite=True to replace it."
        )
    _REGISTRY[task.name] = task
    for key in [key for key in _SPLITS_CACHE if key[0] == task.name]:
        del _SPLITS_CACHE[key]
    return task


def get(name):
    """The registered task named `name`."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown task {name!r}; registered tasks: {sorted(_REGISTRY)}.") from None


def definitions(task_names):
    """The registered definitions of `task_names`: the tasks and the model builders they train.

    What worker processes need to evaluate those tasks when they were
    registered in this process only (in a notebook, a `python -c` command or
    inside a script's main guard): evolution backends send it to their
    workers, which `install` it.

    Args:
        task_names: names of registered tasks.

    Returns:
        ``{"tasks": [Task, ...], "models": {name: builder, ...}}``.
    """
    found = [get(name) for name in task_names]
    models = {model: MODELS[model] for task in found for model in task.models if model in MODELS}
    return {"tasks": found, "models": models}


def install(found):
    """Register `definitions(...)`'s tasks and models here, replacing same-named ones."""
    for name, builder in found["models"].items():
        register_model(name, builder, overwrite=True)
    for task in found["tasks"]:
        if _REGISTRY.get(task.name) != task:
            register(task, overwrite=True)


def names(family=None, held_out=None):
    """Sorted names of the registered tasks, of one family and held out or not when given."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; choose one of {list(FAMILIES)}.")
    return sorted(
        name
        for name, task in _REGISTRY.items()
        if (family is None or task.family == family)
        and (held_out is None or task.held_out == bool(held_out))
    )


# --------------------------------------------------------------------------
# Data of the bundled tasks
# --------------------------------------------------------------------------


def _sklearn(loader):
    try:
        import sklearn.datasets
    except ImportError:
        raise ImportError(
            "The bundled tasks use scikit-learn, a dependency of keras_neuromod that is "
            "missing here: `pip install scikit-learn`."
        ) from None
    return getattr(sklearn.datasets, loader)


def _standardised(train, test):
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return ((train - mean) / std).astype("float32"), ((test - mean) / std).astype("float32")


def _split_rows(n, test_fraction, labels=None, seed=0):
    if labels is not None:
        return datasets.stratified_split(labels, test_fraction, seed)
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _digits(seed):
    """`datasets.digits()`: always the same split."""
    return datasets.digits()


def _wine(seed):
    """`datasets.wine()`: always the same split."""
    return datasets.wine()


def _breast_cancer(seed):
    """Breast cancer, a fixed stratified 70/30 split, standardised with the train statistics."""
    bunch = _sklearn("load_breast_cancer")()
    x, y = bunch.data.astype("float64"), bunch.target.astype("int32")
    train, test = _split_rows(len(y), 0.3, labels=y)
    x_train, x_test = _standardised(x[train], x[test])
    return datasets.Dataset((x_train, y[train]), (x_test, y[test]), 2)


def _diabetes(seed):
    """Diabetes, a fixed 70/30 split, inputs and target standardised with the train statistics."""
    bunch = _sklearn("load_diabetes")()
    x, y = bunch.data.astype("float64"), bunch.target.astype("float64")[:, None]
    train, test = _split_rows(len(y), 0.3)
    x_train, x_test = _standardised(x[train], x[test])
    y_train, y_test = _standardised(y[train], y[test])
    return datasets.Dataset((x_train, y_train), (x_test, y_test), 0)


def _classification(n_train, n_test, random_state, **shape):
    """make_classification of `shape` (its features and classes, 2 clusters per class),
    standardised with the train statistics."""
    x, y = _sklearn("make_classification")(
        n_samples=n_train + n_test,
        n_clusters_per_class=2,
        class_sep=1.0,
        random_state=random_state,
        **shape,
    )
    x_train, x_test = _standardised(x[:n_train], x[n_train:])
    y = y.astype("int32")
    return datasets.Dataset((x_train, y[:n_train]), (x_test, y[n_train:]), shape["n_classes"])


def _tabular_synthetic(seed, n_train=1000, n_test=500):
    """make_classification drawn from `seed` (10 features, 4 classes), standardised with the
    train statistics."""
    return _classification(
        n_train, n_test, seed, n_features=10, n_informative=6, n_redundant=2, n_classes=4
    )


def _tabular_large(seed, n_train=2000, n_test=1000):
    """A larger make_classification drawn from `seed` (20 features, 5 classes of 2 clusters),
    standardised with the train statistics."""
    return _classification(
        n_train,
        n_test,
        np.random.RandomState([seed, 21]),
        n_features=20,
        n_informative=10,
        n_redundant=4,
        n_classes=5,
    )


def _spirals(seed, n_train=900, n_test=450, arms=3, noise=0.08):
    """Points on `arms` interleaved spiral arms with Gaussian noise; the class is the arm."""
    rng = np.random.default_rng([seed, 11])
    n = n_train + n_test
    y = rng.integers(0, arms, n).astype("int32")
    radius = rng.uniform(0.15, 1.0, n)
    angle = 2.5 * np.pi * radius + 2 * np.pi * y / arms
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    x = (x + noise * rng.standard_normal(x.shape)) * 2.0
    x = x.astype("float32")
    return datasets.Dataset((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), arms)


def _shapes(seed, n_train=1200, n_test=400, size=12):
    """12x12 images of a horizontal bar, a vertical bar, a filled block or a hollow frame."""
    rng = np.random.default_rng([seed, 12])
    n = n_train + n_test
    y = rng.integers(0, 4, n).astype("int32")
    images = np.zeros((n, size, size), "float64")
    for i, label in enumerate(y):
        brightness = rng.uniform(0.6, 1.0)
        if label in (0, 1):
            length, thick = rng.integers(5, 10), rng.integers(1, 3)
            h, w = (thick, length) if label == 0 else (length, thick)
        else:
            h = w = rng.integers(4, 8)
        top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        images[i, top : top + h, left : left + w] = brightness
        if label == 3:
            images[i, top + 1 : top + h - 1, left + 1 : left + w - 1] = 0.0
    images += 0.15 * rng.standard_normal(images.shape)
    x = np.clip(images, 0.0, 1.0).astype("float32")[..., None]
    return datasets.Dataset((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), 4)


def _waveforms(seed, n_train=1200, n_test=400, length=64, noise=0.2):
    """Sine, square, sawtooth or triangle waves of random frequency, phase and amplitude,
    in noise."""
    rng = np.random.default_rng([seed, 13])
    n = n_train + n_test
    y = rng.integers(0, 4, n).astype("int32")
    cycles = rng.uniform(1.5, 5.0, (n, 1))
    phase = rng.uniform(0.0, 1.0, (n, 1))
    amplitude = rng.uniform(0.7, 1.3, (n, 1))
    u = np.mod(cycles * np.arange(length)[None] / length + phase, 1.0)
    waves = np.stack(
        [
            np.sin(2 * np.pi * u),
            np.where(u < 0.5, 1.0, -1.0),
            2 * u - 1,
            1 - 4 * np.abs(u - 0.5),
        ]
    )
    x = amplitude * waves[y, np.arange(n)] + noise * rng.standard_normal((n, length))
    x = x.astype("float32")[..., None]
    return datasets.Dataset((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), 4)


def _signal_bursts(seed, n_train=1200, n_test=400, length=80, burst=10):
    """The number (0 to 3) of short high-frequency bursts in noise over a slow drift."""
    rng = np.random.default_rng([seed, 14])
    n = n_train + n_test
    y = rng.integers(0, 4, n).astype("int32")
    t = np.arange(length)
    drift = rng.uniform(0.2, 0.8, (n, 1)) * np.sin(
        2 * np.pi * (rng.uniform(0.3, 1.5, (n, 1)) * t / length + rng.uniform(0, 1, (n, 1)))
    )
    x = drift + 0.25 * rng.standard_normal((n, length))
    window = np.hanning(burst)
    slots = length // burst
    for i, count in enumerate(y):
        for slot in rng.choice(slots, size=count, replace=False):
            start = slot * burst
            frequency = rng.uniform(0.2, 0.35)
            x[i, start : start + burst] += (
                rng.uniform(1.0, 1.6)
                * window
                * np.sin(2 * np.pi * frequency * np.arange(burst) + rng.uniform(0, 2 * np.pi))
            )
    x = x.astype("float32")[..., None]
    return datasets.Dataset((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), 4)


def _one_hot(symbols, depth):
    return np.eye(depth, dtype="float32")[symbols]


def _sequence_majority(seed, n_train=1200, n_test=400, steps=12, symbols=4):
    """One-hot symbol sequences; the class is the symbol that occurs most often (ties redrawn)."""
    rng = np.random.default_rng([seed, 15])
    n = n_train + n_test
    kept = []
    while sum(len(k) for k in kept) < n:
        draw = rng.integers(0, symbols, (2 * n, steps))
        counts = np.stack([(draw == s).sum(1) for s in range(symbols)], 1)
        top = np.sort(counts, 1)
        kept.append(draw[top[:, -1] > top[:, -2]])
    draw = np.concatenate(kept)[:n]
    counts = np.stack([(draw == s).sum(1) for s in range(symbols)], 1)
    y = counts.argmax(1).astype("int32")
    x = _one_hot(draw, symbols)
    return datasets.Dataset((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), symbols)


def _sequence_first(seed, n_train=1200, n_test=400, steps=8, symbols=4, p=0.3):
    """Sparse one-hot symbols after a few blank steps; the class is the first symbol seen."""
    rng = np.random.default_rng([seed, 16])
    n = n_train + n_test
    draw = rng.integers(0, symbols, (n, steps))
    present = rng.uniform(size=(n, steps)) < p
    start = rng.integers(0, 3, n)
    present[np.arange(steps)[None] < start[:, None]] = False
    present[np.arange(n), start] = True
    y = draw[np.arange(n), start].astype("int32")
    x = _one_hot(draw, symbols) * present[..., None]
    x = x + 0.05 * rng.standard_normal(x.shape)
    x = x.astype("float32")
    return datasets.Dataset((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), symbols)


def _adding_problem(seed, n_train=1200, n_test=400, steps=12):
    """Random values with two marked steps; the target is the (centred) sum of the marked values."""
    rng = np.random.default_rng([seed, 17])
    n = n_train + n_test
    values = rng.uniform(0.0, 1.0, (n, steps))
    first = rng.integers(0, steps // 2, n)
    second = rng.integers(steps // 2, steps, n)
    markers = np.zeros((n, steps))
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    target = (values * markers).sum(1, keepdims=True) - 1.0
    x = np.stack([values, markers], -1).astype("float32")
    y = (target / np.sqrt(1 / 6)).astype("float32")  # unit variance
    return datasets.Dataset((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), 0)


def _friedman1(seed, n_train=1000, n_test=500):
    """make_friedman1 drawn from `seed`, inputs and target standardised with the train
    statistics."""
    x, y = _sklearn("make_friedman1")(
        n_samples=n_train + n_test, n_features=10, noise=1.0, random_state=seed
    )
    x_train, x_test = _standardised(x[:n_train], x[n_train:])
    y_train, y_test = _standardised(y[:n_train, None], y[n_train:, None])
    return datasets.Dataset((x_train, y_train), (x_test, y_test), 0)


def _linear_ill_conditioned(
    seed, n_train=1000, n_test=500, n_features=100, effective_rank=10, n_targets=3
):
    """Correlated features of a decaying spectrum (as make_regression's effective_rank),
    linear targets."""
    rng = np.random.default_rng([seed, 18])
    n = n_train + n_test
    i = np.arange(n_features)
    spectrum = 0.7 * np.exp(-((i / effective_rank) ** 2)) + 0.3 * np.exp(-0.1 * i / effective_rank)
    basis, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
    x = (rng.standard_normal((n, n_features)) * spectrum) @ basis.T
    informative = rng.uniform(size=(n_features, 1)) < 0.5
    y = x @ (rng.standard_normal((n_features, n_targets)) * informative)
    y = y + 0.2 * y.std(0) * rng.standard_normal(y.shape)
    x_train, x_test = _standardised(x[:n_train], x[n_train:])
    y_train, y_test = _standardised(y[:n_train], y[n_train:])
    return datasets.Dataset((x_train, y_train), (x_test, y_test), 0)


def _cifar10(seed):
    return _cifar10_subset()


@functools.lru_cache(maxsize=1)
def _cifar10_subset(n_train=2000, n_test=1000):
    """A fixed class-balanced subset of CIFAR-10, where tensorflow-datasets has it prepared."""
    try:
        full = datasets.cifar10(download=False)
    except ImportError as error:
        raise datasets.DatasetUnavailableError(str(error)) from None
    (x_train, y_train), (x_test, y_test), num_classes = full

    def subset(y, count):
        rng = np.random.default_rng(0)
        per_class = count // num_classes
        index = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(num_classes)]
        return np.sort(np.concatenate(index))

    train, test = subset(y_train, n_train), subset(y_test, n_test)
    return datasets.Dataset(
        (x_train[train], y_train[train]), (x_test[test], y_test[test]), num_classes
    )


def _noisy_regression(seed, n_train=360, n_test=240, n_features=10):
    """A small, noisy tabular regression whose features are heavy-tailed and correlated.

    The draw's seed also draws the data's character: the features' tails (a
    Student-t of 2.5 to 10 degrees of freedom), how correlated they are (mixed by
    a matrix whose columns decay at a drawn rate) and the noise (0.3 to 1 times
    the signal's scale). The target is linear in the features plus an
    interaction and a saturating term; inputs and target are standardised
    with the train statistics.
    """
    rng = np.random.default_rng([seed, 32])
    n = n_train + n_test
    dof = rng.uniform(2.5, 10.0)
    decay = rng.uniform(1.0, 5.0)
    noise = rng.uniform(0.3, 1.0)
    mixing = rng.standard_normal((n_features, n_features)) * np.exp(-np.arange(n_features) / decay)
    x = rng.standard_t(dof, size=(n, n_features)) @ mixing
    z = (x - x[:n_train].mean(0)) / x[:n_train].std(0)
    y = (
        z @ (rng.standard_normal((n_features, 1)) / np.sqrt(n_features))
        + 0.5 * np.tanh(z[:, :1] * z[:, 1:2])
        + 0.3 * np.tanh(2.0 * z[:, 2:3])
    )
    y = y + noise * y[:n_train].std() * rng.standard_t(dof, size=y.shape)
    x_train, x_test = _standardised(x[:n_train], x[n_train:])
    y_train, y_test = _standardised(y[:n_train], y[n_train:])
    return datasets.Dataset((x_train, y_train), (x_test, y_test), 0)


def _hastie(seed, n_train=1000, n_test=500):
    """make_hastie_10_2 drawn from `seed`: 10 Gaussian features, class 1 where their squares
    sum past 9.34."""
    x, y = _sklearn("make_hastie_10_2")(n_samples=n_train + n_test, random_state=seed)
    x_train, x_test = _standardised(x[:n_train], x[n_train:])
    y = (y > 0).astype("int32")
    return datasets.Dataset((x_train, y[:n_train]), (x_test, y[n_train:]), 2)


def _digits_reconstruction(seed):
    """`datasets.digits()` images as inputs, the same pixels flattened to 64 as the targets."""
    (x_train, _), (x_test, _), _ = datasets.digits()
    return datasets.Dataset(
        (x_train, x_train.reshape(len(x_train), -1)), (x_test, x_test.reshape(len(x_test), -1)), 0
    )


def _token_after_marker(seed, n_train=1200, n_test=400, symbols=4, copies=2, marker=1):
    """Token ids: each of `symbols` symbols `copies` times, shuffled, and one marker not at the end.

    The class is the symbol right after the marker. Every sequence holds every
    symbol equally often, so that a bag of its tokens says nothing of the class:
    a model must relate the positions. Symbols have ids 2 to ``symbols + 1``;
    ids are stored as float32.
    """
    rng = np.random.default_rng([seed, 19])
    n = n_train + n_test
    tokens = np.tile(np.repeat(np.arange(symbols) + marker + 1, copies), (n, 1))
    tokens = rng.permuted(tokens, axis=1)
    where = rng.integers(0, tokens.shape[1], n)  # the marker goes before this symbol
    x = np.array([np.insert(row, i, marker) for row, i in zip(tokens, where)], "float32")
    y = (tokens[np.arange(n), where] - marker - 1).astype("int32")
    return datasets.Dataset((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), symbols)


def _token_majority(seed, n_train=1200, n_test=400, steps=16, symbols=5):
    """Token ids of `symbols` symbols drawn uniformly; the class is the most frequent one.

    Ties go to the symbol of least id. Symbol ``s`` has the id ``s + 1`` (0,
    as a padding id, never occurs); ids are stored as float32.
    """
    rng = np.random.default_rng([seed, 20])
    n = n_train + n_test
    draw = rng.integers(0, symbols, (n, steps))
    counts = np.stack([(draw == s).sum(1) for s in range(symbols)], 1)
    y = counts.argmax(1).astype("int32")  # the first of the most frequent
    x = (draw + 1).astype("float32")
    return datasets.Dataset((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), symbols)


@functools.cache
def _statsmodels_series(name):
    """A statsmodels data set as a float64 array (read-only), from the files inside its wheel."""
    try:
        import statsmodels.datasets
    except ImportError:
        raise datasets.DatasetUnavailableError(
            f"The {name!r} time series ships with statsmodels: "
            "`pip install keras_neuromod[examples]` "
            "(or `pip install statsmodels`)."
        ) from None
    frame = getattr(statsmodels.datasets, name).load_pandas().data
    if name == "co2":  # weekly, with gaps: linear interpolation between the neighbours
        values = frame["co2"].interpolate(method="linear", limit_direction="both").to_numpy()
    elif name == "sunspots":  # yearly
        values = frame["SUNACTIVITY"].to_numpy()
    elif name == "elnino":  # one row a year of 12 monthly sea surface temperatures
        values = frame.drop(columns="YEAR").to_numpy().reshape(-1)
    else:
        raise ValueError(
            f"Unknown statsmodels series {name!r}; choose 'co2', 'sunspots' or 'elnino'."
        )
    values = np.asarray(values, "float64")
    values.flags.writeable = False
    return values


def _forecast_windows(series, window, horizon, test_fraction, relative=False):
    """Windows of the past (inputs) and the next values (targets), split in time.

    The last `test_fraction` of the series are the test targets (their
    windows may reach back into the training part); training windows and
    targets lie wholly before. With `relative`, inputs and targets are taken
    less the window's last value (for a trending series). Inputs are
    standardised with one mean and deviation of the training windows, targets
    with each column's over the training windows: test data play no part.

    Args:
        series: a 1-D array.
        window: steps of the past in each input.
        horizon: next values to forecast.
        test_fraction: share of the series whose values are test targets.
        relative: subtract each window's last value.

    Returns:
        A `datasets.Dataset`: inputs `[n, window, 1]`, targets `[n, horizon]`.
    """
    series = np.asarray(series, "float64")
    split = len(series) - int(round(len(series) * test_fraction))
    if not window <= split <= len(series) - horizon:
        raise ValueError(
            f"A series of {len(series)} values is too short for windows of {window} "
            f"and {horizon} test values."
        )
    starts = np.arange(window, len(series) - horizon + 1)
    past = series[starts[:, None] + np.arange(-window, 0)]
    future = series[starts[:, None] + np.arange(horizon)]
    if relative:
        past, future = past - past[:, -1:], future - past[:, -1:]
    train, test = starts + horizon <= split, starts >= split
    mean, std = past[train].mean(), past[train].std()  # one scale for every step of the past
    x_train, x_test = (((x - mean) / std).astype("float32") for x in (past[train], past[test]))
    y_train, y_test = _standardised(future[train], future[test])
    return datasets.Dataset((x_train[..., None], y_train), (x_test[..., None], y_test), 0)


def _co2(seed):
    """Mauna Loa CO2, weekly: the next 4 weeks from the past 26, relative to the last;
    always the same."""
    return _forecast_windows(_statsmodels_series("co2"), 26, 4, 0.25, relative=True)


def _sunspots(seed):
    """Yearly sunspot activity: the next year from the past 20; always the same."""
    return _forecast_windows(_statsmodels_series("sunspots"), 20, 1, 0.3)


def _elnino(seed):
    """Monthly El Nino sea surface temperature: the next 3 months from the past 24;
    always the same."""
    return _forecast_windows(_statsmodels_series("elnino"), 24, 3, 0.25)


_CROSSENTROPY = "sparse_categorical_crossentropy"
_MSE = "mean_squared_error"

_BUNDLED = (
    # images
    Task(
        "digits_mlp",
        "images",
        _digits,
        ("mlp",),
        _CROSSENTROPY,
        epochs=5,
        description="scikit-learn's 8x8 handwritten digits (10 classes) with an MLP.",
    ),
    Task(
        "digits_conv",
        "images",
        _digits,
        ("conv2d",),
        _CROSSENTROPY,
        epochs=4,
        description="scikit-learn's 8x8 handwritten digits (10 classes) with a small CNN.",
    ),
    Task(
        "digits_residual",
        "images",
        _digits,
        ("residual_mlp",),
        _CROSSENTROPY,
        epochs=6,
        batch_size=64,
        description="scikit-learn's 8x8 handwritten digits (10 classes) with a residual MLP "
        "with batch normalisation and dropout.",
    ),
    Task(
        "shapes",
        "images",
        _shapes,
        ("conv2d", "mlp"),
        _CROSSENTROPY,
        epochs=5,
        held_out=True,
        description="Generated noisy 12x12 images of a horizontal bar, a vertical bar, a block "
        "or a hollow frame at random places and sizes (4 classes).",
    ),
    Task(
        "cifar10_conv",
        "images",
        _cifar10,
        ("conv2d",),
        _CROSSENTROPY,
        epochs=5,
        held_out=True,
        description="A class-balanced 2,000-image subset of CIFAR-10 with a small CNN; needs "
        "CIFAR-10 prepared by tensorflow-datasets (DatasetUnavailableError otherwise).",
    ),
    # tabular
    Task(
        "breast_cancer",
        "tabular",
        _breast_cancer,
        ("mlp", "linear"),
        _CROSSENTROPY,
        epochs=5,
        batch_size=16,
        description="scikit-learn's Wisconsin breast cancer data (30 standardised features, "
        "2 classes).",
    ),
    Task(
        "tabular_synthetic",
        "tabular",
        _tabular_synthetic,
        ("mlp",),
        _CROSSENTROPY,
        epochs=5,
        batch_size=16,
        description="scikit-learn's make_classification: 10 features, "
        "4 classes of 2 clusters each.",
    ),
    Task(
        "tabular_large_batch",
        "tabular",
        _tabular_large,
        ("mlp",),
        _CROSSENTROPY,
        epochs=20,
        batch_size=256,
        description="A larger make_classification (3,000 rows, 20 features, 5 classes of 2 "
        "clusters each) trained at batch size 256.",
    ),
    Task(
        "spirals",
        "tabular",
        _spirals,
        ("mlp",),
        _CROSSENTROPY,
        epochs=10,
        description="Three interleaved noisy 2-D spiral arms (3 classes).",
    ),
    Task(
        "wine",
        "tabular",
        _wine,
        ("mlp",),
        _CROSSENTROPY,
        epochs=10,
        batch_size=16,
        held_out=True,
        description="scikit-learn's wine recognition data (13 standardised features, 3 classes).",
    ),
    # signals
    Task(
        "waveforms",
        "signals",
        _waveforms,
        ("conv1d", "mlp"),
        _CROSSENTROPY,
        epochs=8,
        description="Noisy 64-sample sine, square, sawtooth or triangle waves of random "
        "frequency, phase and amplitude (4 classes).",
    ),
    Task(
        "signal_bursts",
        "signals",
        _signal_bursts,
        ("conv1d",),
        _CROSSENTROPY,
        epochs=8,
        held_out=True,
        description="The number (0 to 3) of short high-frequency bursts in a noisy, drifting "
        "80-sample signal (4 classes).",
    ),
    # sequences
    Task(
        "sequence_majority",
        "sequences",
        _sequence_majority,
        ("gru", "lstm", "simple_rnn"),
        _CROSSENTROPY,
        epochs=5,
        description="Which of 4 one-hot symbols occurs most often in a 12-step sequence.",
    ),
    Task(
        "sequence_first",
        "sequences",
        _sequence_first,
        ("gru", "lstm", "simple_rnn"),
        _CROSSENTROPY,
        epochs=6,
        description="Which of 4 symbols comes first in a noisy 8-step sequence of sparse "
        "symbols after up to 2 blank steps.",
    ),
    Task(
        "token_majority",
        "sequences",
        _token_majority,
        ("attention",),
        _CROSSENTROPY,
        epochs=6,
        description="Which of 5 symbols occurs most often (ties to the least id) in a 16-token "
        "sequence of token ids, with an embedding and a self-attention layer.",
    ),
    Task(
        "adding_problem",
        "sequences",
        _adding_problem,
        ("gru", "lstm"),
        _MSE,
        epochs=8,
        held_out=True,
        description="The adding problem: the sum of the two marked values of a 12-step "
        "sequence, as a standardised regression.",
    ),
    # regression
    Task(
        "friedman1",
        "regression",
        _friedman1,
        ("mlp",),
        _MSE,
        epochs=6,
        description="scikit-learn's make_friedman1 (10 features, 5 of them irrelevant, "
        "noise 1), standardised.",
    ),
    Task(
        "linear_ill_conditioned",
        "regression",
        _linear_ill_conditioned,
        ("linear", "mlp"),
        _MSE,
        epochs=5,
        batch_size=16,
        description="An ill-conditioned linear regression: 100 correlated features of effective "
        "rank 10 (as make_regression's), 3 noisy linear targets, standardised.",
    ),
    Task(
        "noisy_regression",
        "regression",
        _noisy_regression,
        ("mlp", "linear"),
        _MSE,
        epochs=8,
        batch_size=16,
        description="A small noisy tabular regression (360 training rows): 10 heavy-tailed, "
        "correlated features, a partly nonlinear target; every seed draws how "
        "heavy the tails, how correlated the features and how loud the noise.",
    ),
    Task(
        "diabetes",
        "regression",
        _diabetes,
        ("mlp", "linear"),
        _MSE,
        epochs=8,
        batch_size=16,
        held_out=True,
        description="scikit-learn's diabetes data: disease progression from 10 standardised "
        "features, standardised.",
    ),
)

# Held-out workloads of the kinds users train, unlike the suite's: a residual CNN with
# batch normalisation, a pre-norm Transformer block, forecasting of real series,
# reconstruction, and a long training with dropout at batch 8.
_HELD_OUT_WORKLOADS = (
    Task(
        "shapes_resnet",
        "images",
        _shapes,
        ("resnet_bn",),
        _CROSSENTROPY,
        epochs=4,
        batch_size=64,
        held_out=True,
        description="The generated 12x12 shapes (4 classes) with a residual CNN with batch "
        "normalisation.",
    ),
    Task(
        "digits_autoencoder",
        "images",
        _digits_reconstruction,
        ("autoencoder",),
        _MSE,
        epochs=30,
        batch_size=256,
        held_out=True,
        description="Reconstruction of scikit-learn's 8x8 digits through an 8-unit code "
        "(the target is the input, 64 pixels).",
    ),
    Task(
        "hastie_dropout",
        "tabular",
        _hastie,
        ("dropout_mlp",),
        _CROSSENTROPY,
        epochs=11,
        batch_size=8,
        held_out=True,
        description="scikit-learn's make_hastie_10_2 (10 Gaussian features, 2 classes split by "
        "a sphere) with a dropout MLP, trained long: 1,100 steps of 8 examples.",
    ),
    Task(
        "token_after_marker",
        "sequences",
        _token_after_marker,
        ("transformer",),
        _CROSSENTROPY,
        epochs=12,
        batch_size=32,
        held_out=True,
        description="Which of 4 symbols follows the marker in a 9-token sequence holding every "
        "symbol twice (a bag of its tokens tells nothing), with a Transformer block.",
    ),
    Task(
        "co2_forecast",
        "forecasting",
        _co2,
        ("gru", "causal_conv1d"),
        _MSE,
        epochs=4,
        batch_size=32,
        held_out=True,
        description="The next 4 weeks of the Mauna Loa CO2 record (statsmodels, weekly 1958-2001, "
        "gaps interpolated) from the past 26, relative to the last week, the last 25% "
        "of the weeks as test.",
    ),
    Task(
        "sunspots_forecast",
        "forecasting",
        _sunspots,
        ("causal_conv1d", "gru"),
        _MSE,
        epochs=15,
        batch_size=16,
        held_out=True,
        description="The next year's sunspot activity (statsmodels, yearly 1700-2008) from the "
        "past 20 years, the last 30% of the years as test.",
    ),
    Task(
        "elnino_forecast",
        "forecasting",
        _elnino,
        ("gru", "causal_conv1d"),
        _MSE,
        epochs=10,
        batch_size=32,
        held_out=True,
        description="The next 3 months of El Nino sea surface temperature (statsmodels, monthly "
        "1950-2010) from the past 24, the last 25% of the months as test.",
    ),
)

for _task in _BUNDLED + _HELD_OUT_WORKLOADS:
    register(_task)
del _task
