"""Weight-space task switching: layers that carry a fixed random transform.

A network f and its twin f' share their parameters through a fixed affine
transform of the weights, ``W' = M W`` and ``b' = b + v`` (seeds/002). M and v
are drawn once from a seed and never learned; a task state selects f (state 0)
or f' (state 1), so that applying the transform switches the task.

This module holds the per-layer form: M acts on the output units of each layer.
Keras stores a kernel as (inputs, units), the transpose of the paper's W, so
``W' = M W`` reads ``K' = K M^T`` here (for a convolution, on the last axis of
the (kh, kw, in, filters) kernel). M is (units, units): affordable at any size.
The flat form (one M over all of a small model's weights flattened, the paper's
exact algorithm) is `keras_neuromod.switching.FlatSwitchableMLP`.

Two ways to hold the weights, chosen by `mode`:

* ``"reparametrize"`` (default): the variables always hold the state-0 weights
  W, and a call in state 1 computes ``M W`` on the fly. Gradients flow through
  the transform to W, so the model trains in either state and a switch is one
  scalar assignment. Plain gradient descent on W through ``W' = M W`` moves W'
  by ``M M^T`` times the gradient, where the paper steps W' directly: the same
  fixed points, a different preconditioning, harmless for a well-conditioned M.
* ``"in_place"``: the variables hold the weights of the current state and
  `set_task` rewrites them (``W' = M W`` going to state 1, ``W = M^-1 W'``
  coming back), exactly the paper's Algorithm 1. A call costs nothing extra at
  all; the switch costs one transform of the weights, eagerly, between fits.

In both modes the task state is a non-trainable variable: switching a compiled
model does not retrace it, and `model.save` keeps the state with M and v.

The conditioning of M is a constructor choice (`modulation`):

* ``"identity_gaussian"``: ``M = I + scale * G / sqrt(n)``, G standard normal.
  Close to the identity for a small scale; with scale 1 its eigenvalues fill
  the unit disc around 1 (circular law), so M is invertible with probability
  one but may be poorly conditioned for a few units.
* ``"orthogonal"``: a Haar-random orthogonal matrix (QR of a Gaussian with the
  signs of R's diagonal fixed); perfectly conditioned, `scale` is not used.
* ``"gaussian"``: ``M = scale * G / sqrt(n)``, the plain random matrix the paper
  describes; the worst conditioned of the three.

v is ``bias_scale * N(0, 1)`` per unit. The paper gives no scale for either.
"""

import math

import numpy as np
import keras
from keras import ops

__all__ = [
    "MODULATIONS",
    "MODES",
    "draw_modulation",
    "transform",
    "inverse_transform",
    "TaskStateMixin",
    "SwitchableDense",
    "SwitchableConv2D",
]

MODULATIONS = ("identity_gaussian", "orthogonal", "gaussian")
MODES = ("reparametrize", "in_place")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


def _check_seed(seed):
    if seed is None:
        # Drawn from numpy's global generator, so `keras.utils.set_random_seed`
        # makes it reproducible; stored in the config as a plain int.
        return int(np.random.randint(0, 2**31 - 1))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"modulation_seed must be a non-negative int or None, got {seed!r}.")
    return int(seed)


def _check_nonnegative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value >= 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def draw_modulation(size, modulation="identity_gaussian", scale=1.0, bias_size=None,
                    bias_scale=1.0, seed=0):
    """Draw the fixed transform (M, v) from a seed.

    Args:
        size: the side n of the square matrix M.
        modulation: ``"identity_gaussian"``, ``"orthogonal"`` or ``"gaussian"``
            (see the module docstring).
        scale: scale of the Gaussian part of M (unused by ``"orthogonal"``).
        bias_size: length of v (default `size`); 0 for no v.
        bias_scale: standard deviation of v.
        seed: seed of numpy's generator; one seed gives one (M, v).

    Returns:
        ``(M, v)`` as float32 numpy arrays, shapes (n, n) and (bias_size,).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}.")
    _check_choice("modulation", modulation, MODULATIONS)
    scale = _check_nonnegative("modulation_scale", scale)
    bias_scale = _check_nonnegative("bias_modulation_scale", bias_scale)
    bias_size = size if bias_size is None else int(bias_size)
    rng = np.random.default_rng(_check_seed(seed))
    gaussian = rng.standard_normal((size, size))
    if modulation == "identity_gaussian":
        matrix = np.eye(size) + scale * gaussian / np.sqrt(size)
    elif modulation == "gaussian":
        matrix = scale * gaussian / np.sqrt(size)
    else:
        q, r = np.linalg.qr(gaussian)
        signs = np.sign(np.diag(r))
        signs[signs == 0] = 1.0
        matrix = q * signs
    vector = bias_scale * rng.standard_normal(bias_size)
    return matrix.astype("float32"), vector.astype("float32")


def transform(kernel, bias, matrix, vector):
    """Apply the transform to a Keras kernel and bias: ``K' = K M^T``, ``b' = b + v``.

    The kernel's last axis holds the layer's units (Keras's layout), so this is
    the paper's ``W' = M W`` for W = K^T. `bias` and `vector` may be None.
    Works on numpy arrays (float64 arithmetic) and returns numpy arrays.
    """
    kernel = np.asarray(kernel, dtype="float64")
    matrix = np.asarray(matrix, dtype="float64")
    new_kernel = kernel @ matrix.T
    new_bias = None if bias is None else np.asarray(bias, "float64") + np.asarray(vector)
    return new_kernel, new_bias


def inverse_transform(kernel, bias, matrix, vector):
    """Undo `transform`: ``K = K' M^-T``, ``b = b' - v`` (``W = M^-1 W'``).

    Solves with M rather than forming its inverse; raises `ValueError` when M is
    singular.
    """
    kernel = np.asarray(kernel, dtype="float64")
    matrix = np.asarray(matrix, dtype="float64")
    flat = kernel.reshape(-1, kernel.shape[-1])
    try:
        # K' = K M^T  <=>  M K^T = K'^T.
        solved = np.linalg.solve(matrix, flat.T).T
    except np.linalg.LinAlgError:
        raise ValueError("The modulation matrix M is singular; it has no inverse.") from None
    new_bias = None if bias is None else np.asarray(bias, "float64") - np.asarray(vector)
    return solved.reshape(kernel.shape), new_bias


def _constant(value):
    def initializer(shape, dtype=None):
        return ops.cast(ops.reshape(ops.convert_to_tensor(value), shape), dtype)

    return initializer


def _check_task(task):
    if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or task not in (0, 1):
        raise ValueError(f"task must be 0 (the network f) or 1 (its transform f'), got {task!r}.")
    return int(task)


def _add_modulation_weights(layer, size, bias_size):
    """Add the fixed, non-trainable M (size x size) and v (bias_size) to `layer`.

    Drawn from the layer's `modulation*` settings and seed. Values go in through
    initializers, never `assign` in build: TensorFlow discards assignments made
    while `fit` traces the first build.
    """
    matrix, vector = draw_modulation(
        size, layer.modulation, layer.modulation_scale, bias_size=bias_size,
        bias_scale=layer.bias_modulation_scale, seed=layer.modulation_seed,
    )
    layer.modulation_matrix = layer.add_weight(
        name="modulation_matrix", shape=matrix.shape, initializer=_constant(matrix),
        trainable=False,
    )
    layer.modulation_bias = None
    if layer.use_bias:
        layer.modulation_bias = layer.add_weight(
            name="modulation_bias", shape=vector.shape, initializer=_constant(vector),
            trainable=False,
        )


class TaskStateMixin:
    """The task state shared by every switchable layer.

    A layer with this mixin owns a non-trainable scalar variable ``task_state``
    (float32, 0.0 or 1.0 for a two-state layer). `keras_neuromod.switching.set_task`
    finds such layers in a model and calls their `set_task`.
    """

    num_tasks = 2

    def _add_task_variable(self):
        self.task_state = self.add_weight(
            name="task", shape=(), initializer="zeros", trainable=False,
            dtype="float32",
        )

    @property
    def task(self):
        """The current task state as a Python int."""
        self._require_built("task")
        return int(round(float(ops.convert_to_numpy(self.task_state))))

    def _require_built(self, what):
        if not self.built:
            raise ValueError(
                f"Layer {self.name!r} is not built yet: call the model once (or build "
                f"it) before using `{what}`."
            )

    def _check_task(self, task):
        if self.num_tasks == 2:
            return _check_task(task)
        if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or not (
            0 <= task < self.num_tasks
        ):
            raise ValueError(
                f"task must be an int in [0, {self.num_tasks}), got {task!r}."
            )
        return int(task)

    def set_task(self, task):
        """Select the task (eagerly, between calls; never retraces)."""
        self._require_built("set_task")
        task = self._check_task(task)
        self._switch_weights(self.task, task)
        self.task_state.assign(float(task))

    def _switch_weights(self, old, new):
        """Hook for layers that rewrite their weights on a switch."""


class _ModulatedLayer(TaskStateMixin, keras.layers.Layer):
    """Shared parts of the per-layer switchable layers (kernel units on the last axis)."""

    def __init__(self, units, activation, use_bias, kernel_initializer,
                 bias_initializer, kernel_regularizer, bias_regularizer,
                 modulation, modulation_scale, bias_modulation_scale,
                 modulation_seed, mode, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive int, got {units!r}.")
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.modulation = _check_choice("modulation", modulation, MODULATIONS)
        self.modulation_scale = _check_nonnegative("modulation_scale", modulation_scale)
        self.bias_modulation_scale = _check_nonnegative(
            "bias_modulation_scale", bias_modulation_scale
        )
        self.modulation_seed = _check_seed(modulation_seed)
        self.mode = _check_choice("mode", mode, MODES)

    def _build_weights(self, kernel_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=kernel_shape, initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        _add_modulation_weights(self, self.units, self.units if self.use_bias else 0)
        self._add_task_variable()

    def effective_weights(self):
        """The kernel and bias the layer computes with in its current state."""
        if self.mode == "in_place":
            return self.kernel, self.bias
        # A = I + t (M^T - I): the identity in state 0, M^T in state 1. One
        # (units x units) blend per call keeps both states in one graph.
        t = ops.cast(self.task_state, self.compute_dtype)
        matrix_t = ops.transpose(ops.cast(self.modulation_matrix, self.compute_dtype))
        eye = ops.eye(self.units, dtype=self.compute_dtype)
        blend = ops.add(eye, ops.multiply(t, ops.subtract(matrix_t, eye)))
        kernel = ops.matmul(ops.cast(self.kernel, self.compute_dtype), blend)
        bias = self.bias
        if bias is not None:
            bias = ops.add(
                ops.cast(bias, self.compute_dtype),
                ops.multiply(t, ops.cast(self.modulation_bias, self.compute_dtype)),
            )
        return kernel, bias

    def transformed_weights(self):
        """The state-1 weights ``(K M^T, b + v)`` of the state-0 weights, as numpy.

        In ``"in_place"`` mode while in state 1, the variables already hold them.
        """
        self._require_built("transformed_weights")
        kernel, bias = self._variables_numpy()
        if self.mode == "in_place" and self.task == 1:
            return kernel, bias
        return transform(kernel, bias, *self._modulation_numpy())

    def base_weights(self):
        """The state-0 weights (K, b) as numpy, whatever the mode and state."""
        self._require_built("base_weights")
        kernel, bias = self._variables_numpy()
        if self.mode == "in_place" and self.task == 1:
            return inverse_transform(kernel, bias, *self._modulation_numpy())
        return kernel, bias

    def _variables_numpy(self):
        kernel = ops.convert_to_numpy(self.kernel)
        bias = None if self.bias is None else ops.convert_to_numpy(self.bias)
        return kernel, bias

    def _modulation_numpy(self):
        vector = None
        if self.modulation_bias is not None:
            vector = ops.convert_to_numpy(self.modulation_bias)
        return ops.convert_to_numpy(self.modulation_matrix), vector

    def _switch_weights(self, old, new):
        if self.mode != "in_place" or old == new:
            return
        kernel, bias = self._variables_numpy()
        step = transform if new == 1 else inverse_transform
        kernel, bias = step(kernel, bias, *self._modulation_numpy())
        self.kernel.assign(kernel.astype(self.kernel.dtype))
        if bias is not None:
            self.bias.assign(bias.astype(self.bias.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "modulation": self.modulation,
            "modulation_scale": self.modulation_scale,
            "bias_modulation_scale": self.bias_modulation_scale,
            "modulation_seed": self.modulation_seed,
            "mode": self.mode,
            "form": "per_layer",
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("form", None)
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_neuromod")
class SwitchableDense(_ModulatedLayer):
    """A dense layer with a fixed random transform of its weights and a task state.

    In state 0 it computes ``activation(x K + b)``; in state 1
    ``activation(x K M^T + b + v)``, with M (units x units) and v (units,) drawn
    from `modulation_seed` and never trained. Switch with `set_task` (or
    `keras_neuromod.switching.set_task` for a whole model).

    Args:
        units: number of output units (the side of M).
        activation: activation function (default none).
        use_bias: whether the layer has a bias (and then a modulation vector v).
        kernel_initializer, bias_initializer: initializers of K and b.
        kernel_regularizer, bias_regularizer: optional regularizers.
        modulation: conditioning of M: ``"identity_gaussian"`` (default),
            ``"orthogonal"`` or ``"gaussian"`` (see the module docstring).
        modulation_scale: scale of M's Gaussian part (default 1.0).
        bias_modulation_scale: standard deviation of v (default 1.0).
        modulation_seed: seed of (M, v); None draws one (from numpy's global
            generator) and the config stores it.
        mode: ``"reparametrize"`` (default; the variables hold the state-0
            weights and gradients flow through the transform) or ``"in_place"``
            (the variables hold the current state's weights and `set_task`
            rewrites them, the paper's Algorithm 1).
    """

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None,
                 modulation="identity_gaussian", modulation_scale=1.0,
                 bias_modulation_scale=1.0, modulation_seed=None,
                 mode="reparametrize", **kwargs):
        super().__init__(units, activation, use_bias, kernel_initializer,
                         bias_initializer, kernel_regularizer, bias_regularizer,
                         modulation, modulation_scale, bias_modulation_scale,
                         modulation_seed, mode, **kwargs)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError("SwitchableDense needs a known last input dimension.")
        self._build_weights((input_dim, self.units))
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs):
        kernel, bias = self.effective_weights()
        outputs = ops.matmul(inputs, kernel)
        if bias is not None:
            outputs = ops.add(outputs, bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config


@keras.saving.register_keras_serializable(package="keras_neuromod")
class SwitchableConv2D(_ModulatedLayer):
    """A 2-D convolution with a fixed random transform of its filters and a task state.

    The kernel (kh, kw, in, filters) is transformed on its filter axis:
    ``K' = K M^T`` with M (filters x filters), and ``b' = b + v``; the
    convolution itself is Keras's (`keras.ops.conv`).

    Args:
        filters: number of output filters (the side of M).
        kernel_size: int or pair of ints.
        strides: int or pair of ints (default 1).
        padding: ``"valid"`` (default) or ``"same"``.
        data_format: ``"channels_last"`` or ``"channels_first"`` (default: Keras's
            image data format).
        dilation_rate: int or pair of ints (default 1).
        activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, modulation, modulation_scale,
        bias_modulation_scale, modulation_seed, mode: as in `SwitchableDense`.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid",
                 data_format=None, dilation_rate=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None,
                 modulation="identity_gaussian", modulation_scale=1.0,
                 bias_modulation_scale=1.0, modulation_seed=None,
                 mode="reparametrize", **kwargs):
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"filters must be a positive int, got {filters!r}.")
        super().__init__(filters, activation, use_bias, kernel_initializer,
                         bias_initializer, kernel_regularizer, bias_regularizer,
                         modulation, modulation_scale, bias_modulation_scale,
                         modulation_seed, mode, **kwargs)
        self.filters = self.units
        self.kernel_size = self._pair("kernel_size", kernel_size)
        self.strides = self._pair("strides", strides)
        self.dilation_rate = self._pair("dilation_rate", dilation_rate)
        padding = str(padding).lower()
        self.padding = _check_choice("padding", padding, ("valid", "same"))
        self.data_format = _check_choice(
            "data_format", data_format or keras.config.image_data_format(),
            ("channels_last", "channels_first"),
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @staticmethod
    def _pair(name, value):
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = (value, value)
        try:
            value = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}.") from None
        if len(value) != 2 or min(value) < 1:
            raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}.")
        return value

    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        channels = input_shape[self._channel_axis()]
        if channels is None:
            raise ValueError("SwitchableConv2D needs a known number of input channels.")
        self._build_weights(self.kernel_size + (channels, self.filters))
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={self._channel_axis(): channels})

    def call(self, inputs):
        kernel, bias = self.effective_weights()
        outputs = ops.conv(
            inputs, kernel, strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format,
        )
        if bias is not None:
            shape = (1, 1, 1, self.filters)
            if self.data_format == "channels_first":
                shape = (1, self.filters, 1, 1)
            outputs = ops.add(outputs, ops.reshape(bias, shape))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
        })
        return config
