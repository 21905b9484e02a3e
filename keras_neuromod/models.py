"""The core paper's models, for any input shape and class count.

This module builds the models of the core paper's experiments, by the names
`keras_neuromod.evolution.FitnessTask` stores (`architecture`) and the
`keras-neuromod compare` command takes. The task suite (`keras_neuromod.tasks`)
has its own, smaller model builders, registered by name per task; its ``"mlp"``
is built here too (see below).

The paper (Wilson et al., "Neuromodulated Learning in Deep Neural Networks",
2018) evolves and tests its agents on three CIFAR-10 architectures (conv layers
are 3x3 with ReLU and `same` padding). Its table of them has lost its column
headers and has cells shifted between columns; the reading taken, and why, is
in the repository's `docs/design.md` (section 5):

* ``"A"`` (LeNet-like): conv32, conv32, maxpool, conv64, conv64, maxpool, fc512.
* ``"B"`` (VGG-like): conv64, maxpool, conv128, maxpool, conv256, maxpool,
  conv512, maxpool, conv512, maxpool, fc4096, fc4096.
* ``"C"``: conv64, maxpool, conv128, maxpool, conv256, maxpool, conv512, maxpool,
  fc4096, fc4096.
* ``"mlp"``: a multilayer perceptron (default one hidden layer of 128 units).

`build` ends every model with a softmax layer of `num_classes` units, unless
`output_activation=None` (logits). On small images (the bundled 8x8 digits) a
pooling layer is left out where it would shrink the image below 1x1, and
`width` scales every hidden layer so that the big models stay affordable on a
laptop.

The two "mlp"s: ``build("mlp", ...)`` is the paper's one hidden layer of 128
units with a softmax output; the task suite's ``"mlp"`` (`tasks.mlp`) is
``build("mlp", ..., hidden=(64, 64), output_activation=None)``: two hidden
layers of 64 units and a linear output (logits, or a regression's values).

Seeded weights: with an int `seed`, every layer's kernel initializer gets its
own seed drawn from it (`LayerInitializers`), and draws its weights with numpy
(`SeededGlorotUniform`, `SeededOrthogonal`), so that the same seed gives the
same initial weights on every backend. The task suite's builders use the same
`LayerInitializers`.
"""

import keras
import numpy as np
from keras import layers

from keras_neuromod import _fields

__all__ = [
    "ARCHITECTURES",
    "LayerInitializers",
    "SeededGlorotUniform",
    "SeededOrthogonal",
    "build",
    "layer_plan",
]

_PLANS = {
    "A": ["c32", "c32", "p", "c64", "c64", "p", "d512"],
    "B": ["c64", "p", "c128", "p", "c256", "p", "c512", "p", "c512", "p", "d4096", "d4096"],
    "C": ["c64", "p", "c128", "p", "c256", "p", "c512", "p", "d4096", "d4096"],
}

ARCHITECTURES = ("A", "B", "C", "mlp")


def layer_plan(architecture, hidden=(128,)):
    """The layer plan of an architecture as strings: 'c32' conv, 'p' pool, 'd512' dense."""
    key = str(architecture)
    if key.upper() in _PLANS:
        return list(_PLANS[key.upper()])
    if key.lower() == "mlp":
        return [f"d{int(units)}" for units in hidden]
    raise ValueError(f"Unknown architecture {architecture!r}; choose one of {list(ARCHITECTURES)}.")


@keras.saving.register_keras_serializable(package="keras_neuromod")
class SeededGlorotUniform(keras.initializers.Initializer):
    """Glorot-uniform weights drawn by numpy: one seed, the same weights on every backend.

    Keras's seeded initialisers draw with the backend's own generator, so the
    same seed gives other weights under TensorFlow than under JAX. This one
    draws `uniform(-limit, limit)` with `limit = sqrt(6 / (fan_in + fan_out))`
    (Keras's `GlorotUniform`, with Keras's fans) from
    `numpy.random.default_rng(seed)`, so that a model built with a seed starts
    from the same weights whichever backend trains it.

    Args:
        seed: an int.
    """

    def __init__(self, seed):
        self.seed = _fields.integer(seed, "seed", minimum=0)

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            fan_in = fan_out = shape[0] if shape else 1
        else:
            receptive = int(np.prod(shape[:-2]))
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = np.sqrt(6.0 / max(1, fan_in + fan_out))
        values = np.random.default_rng(self.seed).uniform(-limit, limit, size=shape)
        return keras.ops.convert_to_tensor(values.astype("float32"), dtype=dtype or "float32")

    def get_config(self):
        return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_neuromod")
class SeededOrthogonal(keras.initializers.Initializer):
    """Orthogonal weights drawn by numpy: one seed, the same weights on every backend.

    The numpy counterpart of Keras's `Orthogonal` (for recurrent kernels): a
    matrix of shape ``(max(rows, cols), min(rows, cols))``, where ``rows`` is
    the product of all but the last dimension and ``cols`` the last one, is
    drawn from a standard normal by `numpy.random.default_rng(seed)`, factored
    as ``Q R``, and ``Q``'s columns are multiplied by the signs of ``R``'s
    diagonal (so that ``Q`` is uniformly distributed). With fewer rows than
    columns ``Q`` is transposed (orthogonal rows); the result is reshaped to
    `shape` and scaled by `gain`.

    Args:
        seed: an int.
        gain: factor applied to the orthogonal matrix.
    """

    def __init__(self, seed, gain=1.0):
        self.seed = _fields.integer(seed, "seed", minimum=0)
        self.gain = _fields.number(gain, "gain")

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            raise ValueError(f"SeededOrthogonal needs a shape of rank 2 or more, got {shape}.")
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        flat = (max(rows, cols), min(rows, cols))
        a = np.random.default_rng(self.seed).standard_normal(flat)
        q, r = np.linalg.qr(a)
        q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
        if rows < cols:
            q = q.T
        values = self.gain * q.reshape(shape)
        return keras.ops.convert_to_tensor(values.astype("float32"), dtype=dtype or "float32")

    def get_config(self):
        return {"seed": self.seed, "gain": self.gain}


class LayerInitializers:
    """The kernel initializers of one model's layers, seeded from one model seed.

    Each call returns a new initializer for the next layer. With an int
    `seed`, the layers' seeds are drawn in order from
    `numpy.random.default_rng(seed)` (up to 64 of them) and the initializers
    draw with numpy, so one seed gives the same model on every backend. With
    `None`, the initializers are Keras's, freshly seeded.

    Args:
        seed: an int, or `None`.

    Example:

    >>> init = LayerInitializers(0)
    >>> layer = keras.layers.Dense(4, kernel_initializer=init.glorot())
    """

    def __init__(self, seed):
        self._seeds = (
            iter(np.random.default_rng(seed).integers(0, 2**31 - 1, size=64).tolist())
            if seed is not None
            else None
        )

    def glorot(self):
        """The next layer's Glorot-uniform initializer (`SeededGlorotUniform` when seeded)."""
        if self._seeds is None:
            return keras.initializers.GlorotUniform()
        return SeededGlorotUniform(next(self._seeds))

    def orthogonal(self):
        """The next layer's orthogonal initializer (`SeededOrthogonal` when seeded)."""
        if self._seeds is None:
            return keras.initializers.Orthogonal()
        return SeededOrthogonal(next(self._seeds))

    def seed(self):
        """The next int seed (of a dropout layer, say), or `None` when unseeded."""
        return None if self._seeds is None else next(self._seeds)


def _scaled(units, width):
    return max(1, int(round(units * width)))


def build(
    architecture,
    input_shape,
    num_classes,
    width=1.0,
    hidden=(128,),
    seed=None,
    name=None,
    output_activation="softmax",
):
    """Build one of the paper's models (or an MLP) as a functional Keras model.

    Args:
        architecture: ``"A"``, ``"B"``, ``"C"`` or ``"mlp"``.
        input_shape: shape of one example, e.g. ``(32, 32, 3)`` or ``(8, 8, 1)``.
            Convolutional models need (height, width, channels); the MLP
            flattens whatever it is given.
        num_classes: units of the output layer: at least 2 with a softmax,
            at least 1 with logits (a regression's outputs, say).
        width: factor applied to every hidden layer's filters or units.
        hidden: hidden layer sizes of the MLP (ignored by A, B and C).
        seed: int seed for the weight initialisers; the same seed gives the
            same initial weights on every backend (`LayerInitializers`).
            `None` gives fresh ones (Keras's `GlorotUniform`).
        name: the model's name (default ``"model_<architecture>"``).
        output_activation: ``"softmax"`` (class probabilities, the paper's
            models) or None (logits, for a loss with ``from_logits=True``, or
            a regression's values).

    Returns:
        An uncompiled `keras.Model`.
    """
    plan = layer_plan(architecture, hidden)
    input_shape, num_classes = _checked_build_args(
        input_shape, num_classes, width, output_activation
    )
    convolutional = any(step[0] in "cp" for step in plan)
    if convolutional and len(input_shape) != 3:
        raise ValueError(
            f"Architecture {architecture!r} is convolutional and needs an input "
            f"shape (height, width, channels); got {input_shape}. Use 'mlp' for "
            "flat inputs."
        )
    initializer = LayerInitializers(seed).glorot
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    if not convolutional:
        x = layers.Flatten(name="flatten")(x)
    x = _hidden_layers(x, plan, input_shape[:2], width, initializer, flat=not convolutional)
    outputs = layers.Dense(
        int(num_classes),
        activation=output_activation,
        kernel_initializer=initializer(),
        name="output",
    )(x)
    return keras.Model(inputs, outputs, name=name or f"model_{str(architecture).lower()}")


def _checked_build_args(input_shape, num_classes, width, output_activation):
    """Check `build`'s arguments; return the input shape and the number of classes as ints."""
    input_shape = tuple(int(d) for d in input_shape)
    if any(d < 1 for d in input_shape):
        raise ValueError(f"input_shape must be positive, got {input_shape}.")
    if output_activation not in ("softmax", None):
        raise ValueError(f"output_activation must be 'softmax' or None, got {output_activation!r}.")
    logits = output_activation is None
    num_classes = _fields.integer(num_classes, "num_classes", minimum=1 if logits else 2)
    if not width > 0:
        raise ValueError(f"width must be positive, got {width!r}.")
    return input_shape, num_classes


def _hidden_layers(x, plan, size, width, initializer, flat):
    """Apply the plan's convolutions, poolings and dense layers to `x`; return it flat."""
    size = list(size)
    n_conv = n_pool = n_dense = 0
    for step in plan:
        kind = step[0]
        if kind == "c":
            x = layers.Conv2D(
                _scaled(int(step[1:]), width),
                3,
                padding="same",
                activation="relu",
                kernel_initializer=initializer(),
                name=f"conv_{n_conv}",
            )(x)
            n_conv += 1
        elif kind == "p":
            if min(size) >= 2:
                x = layers.MaxPooling2D(2, name=f"pool_{n_pool}")(x)
                size = [s // 2 for s in size]
                n_pool += 1
        else:
            if not flat:
                x = layers.Flatten(name="flatten")(x)
                flat = True
            x = layers.Dense(
                _scaled(int(step[1:]), width),
                activation="relu",
                kernel_initializer=initializer(),
                name=f"dense_{n_dense}",
            )(x)
            n_dense += 1
    if not flat:
        x = layers.Flatten(name="flatten")(x)
    return x
