"""Layers that carry a fixed random transform of their weights and a task state.

* `SwitchableDense`, `SwitchableConv2D`: the per-layer form, M (units x units)
  acting on the output units of each layer; affordable at any size.
* `FlatSwitchableMLP`: the flat form, one M over all the weights of a small
  dense network flattened into one vector (the paper's exact transform),
  refused above a size limit.
* `TaskInput`: the baseline, the task given as an extra (one-hot) input.

All of them hold the task as a non-trainable variable (`TaskStateMixin`), so
`keras_neuromod.switching.set_task` switches a compiled model without
retracing it and `model.save` keeps the state. The switchable layers share one
base that owns the transform's weights (M and v, drawn from
`modulation_seed`), the two modes, in-place switching and the config.

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
"""

import keras
from keras import ops

from keras_neuromod import _fields
from keras_neuromod.switching.transforms import MODULATIONS
from keras_neuromod.switching.transforms import check_seed
from keras_neuromod.switching.transforms import draw_modulation
from keras_neuromod.switching.transforms import inverse_transform
from keras_neuromod.switching.transforms import transform

__all__ = [
    "DEFAULT_MAX_FLAT_WEIGHTS",
    "MODES",
    "FlatSwitchableMLP",
    "SwitchableConv2D",
    "SwitchableDense",
    "TaskInput",
    "TaskStateMixin",
]

MODES = ("reparametrize", "in_place")

# 4,096 weights need a 4,096 x 4,096 float32 M: 64 MiB, and a matrix-vector
# product per step that is still cheap next to the network itself.
DEFAULT_MAX_FLAT_WEIGHTS = 4096


def _constant(value):
    def initializer(shape, dtype=None):
        return ops.cast(ops.reshape(ops.convert_to_tensor(value), shape), dtype)

    return initializer


class TaskStateMixin:
    """The task state shared by every switchable layer.

    A layer with this mixin owns a non-trainable scalar variable ``task_state``
    (float32, 0.0 or 1.0 for a two-state layer). `keras_neuromod.switching.set_task`
    finds such layers in a model and calls their `set_task`.
    """

    num_tasks = 2

    def _add_task_variable(self):
        self.task_state = self.add_weight(
            name="task",
            shape=(),
            initializer="zeros",
            trainable=False,
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

    def set_task(self, task):
        """Select the task (eagerly, between calls; never retraces)."""
        self._require_built("set_task")
        task = _fields.integer(task, "task", 0, self.num_tasks - 1)
        self._switch_weights(self.task, task)
        self.task_state.assign(float(task))

    def _switch_weights(self, old, new):
        """Hook for layers that rewrite their weights on a switch."""


class _SwitchableLayer(TaskStateMixin, keras.layers.Layer):
    """The transform, the modes, in-place switching and the config of a switchable layer.

    A subclass creates its weights with `_build_weights`: M acts on the last
    axis of the kernel (``K' = K M^T``) and v has the length of the bias.
    """

    form = "per_layer"

    def __init__(
        self,
        activation,
        use_bias,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        modulation,
        modulation_scale,
        bias_modulation_scale,
        modulation_seed,
        mode,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.modulation = _fields.choice(modulation, "modulation", MODULATIONS)
        self.modulation_scale = _fields.number(modulation_scale, "modulation_scale", 0)
        self.bias_modulation_scale = _fields.number(
            bias_modulation_scale, "bias_modulation_scale", 0
        )
        self.modulation_seed = check_seed(modulation_seed)
        self.mode = _fields.choice(mode, "mode", MODES)

    def _build_weights(self, kernel_shape, bias_size, kernel_initializer=None):
        """Add the kernel, the bias, the fixed M and v, and the task state.

        M and v go in through initializers, never `assign` in build: TensorFlow
        discards assignments made while `fit` traces the first build.
        """
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=kernel_initializer or self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(bias_size,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        matrix, vector = draw_modulation(
            kernel_shape[-1],
            self.modulation,
            self.modulation_scale,
            bias_size=bias_size if self.use_bias else 0,
            bias_scale=self.bias_modulation_scale,
            seed=self.modulation_seed,
        )
        self.modulation_matrix = self.add_weight(
            name="modulation_matrix",
            shape=matrix.shape,
            initializer=_constant(matrix),
            trainable=False,
        )
        self.modulation_bias = None
        if self.use_bias:
            self.modulation_bias = self.add_weight(
                name="modulation_bias",
                shape=vector.shape,
                initializer=_constant(vector),
                trainable=False,
            )
        self._add_task_variable()

    def _modulated_kernel(self, kernel, t):
        """``K + t (K M^T - K)`` for the state t in [0, 1], as a tensor."""
        # A = I + t (M^T - I): the identity in state 0, M^T in state 1. One
        # (units x units) blend per call keeps both states in one graph.
        units = self.modulation_matrix.shape[0]
        matrix_t = ops.transpose(ops.cast(self.modulation_matrix, self.compute_dtype))
        eye = ops.eye(units, dtype=self.compute_dtype)
        blend = ops.add(eye, ops.multiply(t, ops.subtract(matrix_t, eye)))
        return ops.matmul(kernel, blend)

    def effective_weights(self):
        """The kernel and bias the layer computes with in its current state."""
        if self.mode == "in_place":
            return self.kernel, self.bias
        t = ops.cast(self.task_state, self.compute_dtype)
        kernel = self._modulated_kernel(ops.cast(self.kernel, self.compute_dtype), t)
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
        config.update(
            {
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
                "form": self.form,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("form", None)
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_neuromod")
class SwitchableDense(_SwitchableLayer):
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
            ``"orthogonal"`` or ``"gaussian"`` (see
            `keras_neuromod.switching.transforms`).
        modulation_scale: scale of M's Gaussian part (default 1.0).
        bias_modulation_scale: standard deviation of v (default 1.0).
        modulation_seed: seed of (M, v); None draws one (from numpy's global
            generator) and the config stores it.
        mode: ``"reparametrize"`` (default; the variables hold the state-0
            weights and gradients flow through the transform) or ``"in_place"``
            (the variables hold the current state's weights and `set_task`
            rewrites them, the paper's Algorithm 1).
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        modulation="identity_gaussian",
        modulation_scale=1.0,
        bias_modulation_scale=1.0,
        modulation_seed=None,
        mode="reparametrize",
        **kwargs,
    ):
        super().__init__(
            activation,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            modulation,
            modulation_scale,
            bias_modulation_scale,
            modulation_seed,
            mode,
            **kwargs,
        )
        self.units = _fields.integer(units, "units", 1)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError("SwitchableDense needs a known last input dimension.")
        self._build_weights((input_dim, self.units), self.units)
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
class SwitchableConv2D(_SwitchableLayer):
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

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        modulation="identity_gaussian",
        modulation_scale=1.0,
        bias_modulation_scale=1.0,
        modulation_seed=None,
        mode="reparametrize",
        **kwargs,
    ):
        super().__init__(
            activation,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            modulation,
            modulation_scale,
            bias_modulation_scale,
            modulation_seed,
            mode,
            **kwargs,
        )
        self.filters = self.units = _fields.integer(filters, "filters", 1)
        self.kernel_size = self._pair("kernel_size", kernel_size)
        self.strides = self._pair("strides", strides)
        self.dilation_rate = self._pair("dilation_rate", dilation_rate)
        padding = str(padding).lower()
        self.padding = _fields.choice(padding, "padding", ("valid", "same"))
        self.data_format = _fields.choice(
            data_format or keras.config.image_data_format(),
            "data_format",
            ("channels_last", "channels_first"),
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @staticmethod
    def _pair(name, value):
        values = value if isinstance(value, (tuple, list)) else (value, value)
        if len(values) != 2:
            raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}.")
        return tuple(_fields.integer(v, name, 1) for v in values)

    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        channels = input_shape[self._channel_axis()]
        if channels is None:
            raise ValueError("SwitchableConv2D needs a known number of input channels.")
        self._build_weights(self.kernel_size + (channels, self.filters), self.filters)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={self._channel_axis(): channels})

    def call(self, inputs):
        kernel, bias = self.effective_weights()
        outputs = ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
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
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_neuromod")
class FlatSwitchableMLP(_SwitchableLayer):
    """A small dense network switched by one transform over all its weights.

    The paper's exact transform: every kernel entry of every layer goes into
    one vector w (length N) and every bias into one vector b; state 1 uses
    ``w' = M w`` with M (N x N) and ``b' = b + v``. Because M is N x N, the
    form is refused above `max_flat_weights` (a 784-100-10 MLP would need a
    79,510 x 79,510 matrix, 25 GB); use the per-layer layers for bigger models.
    The entries are flattened layer by layer in Keras's (in, out) order; the
    order does not matter for M's distribution.

    Args:
        units: the sizes of the layers, e.g. ``[8, 1]`` for a 2-8-1 network.
        activation: activation of the hidden layers (default ``"relu"``, as in
            the paper's gate networks).
        output_activation: activation of the last layer (default none).
        use_bias: whether the layers have biases (and b, v exist).
        kernel_initializer, bias_initializer: initializers, applied per layer.
        kernel_regularizer, bias_regularizer: optional regularizers of the flat
            w and b.
        modulation, modulation_scale, bias_modulation_scale, modulation_seed,
        mode: as in `SwitchableDense`.
        max_flat_weights: the largest N accepted (default 4,096: M is 64 MiB).
    """

    form = "flat"

    def __init__(
        self,
        units,
        activation="relu",
        output_activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        modulation="identity_gaussian",
        modulation_scale=1.0,
        bias_modulation_scale=1.0,
        modulation_seed=None,
        mode="reparametrize",
        max_flat_weights=DEFAULT_MAX_FLAT_WEIGHTS,
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            activation,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            modulation,
            modulation_scale,
            bias_modulation_scale,
            modulation_seed,
            mode,
            **kwargs,
        )
        if isinstance(units, (str, bytes)) or not hasattr(units, "__iter__"):
            raise ValueError(f"units must be a non-empty list of positive ints, got {units!r}.")
        self.units = [_fields.integer(u, "units", 1) for u in units]
        if not self.units:
            raise ValueError("units must be a non-empty list of positive ints, got [].")
        self.output_activation = keras.activations.get(output_activation)
        self.max_flat_weights = _fields.integer(max_flat_weights, "max_flat_weights", 1)

    @staticmethod
    def flat_size(input_dim, units):
        """The number of kernel entries N that the flat M must cover."""
        sizes = [int(input_dim)] + [int(u) for u in units]
        return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError("FlatSwitchableMLP needs a known last input dimension.")
        size = self.flat_size(input_dim, self.units)
        if size > self.max_flat_weights:
            mib = size * size * 4 / 2**20
            raise ValueError(
                f"The flat transform of this network needs one {size} x {size} matrix "
                f"over its {size} weights ({mib:,.0f} MiB in float32), above "
                f"max_flat_weights={self.max_flat_weights}. Use the per-layer form "
                "(SwitchableDense, SwitchableConv2D) for a network this size, or "
                "raise max_flat_weights if the memory is really there."
            )
        sizes = [int(input_dim)] + self.units
        self._shapes = list(zip(sizes[:-1], sizes[1:]))
        # A seeded initializer gives the same stream at every call: give each
        # layer's block its own seed (seed + index) so the blocks are independent.
        inits = []
        for index in range(len(self._shapes)):
            config = self.kernel_initializer.get_config()
            if isinstance(config.get("seed"), int):
                config["seed"] += index
            inits.append(type(self.kernel_initializer).from_config(config))

        def kernel_init(shape, dtype=None):
            blocks = [
                ops.reshape(init(s, dtype=dtype), (-1,)) for init, s in zip(inits, self._shapes)
            ]
            return ops.concatenate(blocks, axis=0)

        self._build_weights((size,), sum(self.units), kernel_initializer=kernel_init)

    def _modulated_kernel(self, kernel, t):
        # ``w + t (M w - w)``: one matrix-vector product, never an N x N blend.
        moved = ops.matmul(ops.cast(self.modulation_matrix, self.compute_dtype), kernel)
        return ops.add(kernel, ops.multiply(t, ops.subtract(moved, kernel)))

    def unflatten(self, w, b):
        """Split flat (w, b) into per-layer ``[(kernel, bias), ...]`` (Keras layout)."""
        out, i, j = [], 0, 0
        for fan_in, fan_out in self._shapes:
            kernel = ops.reshape(w[i : i + fan_in * fan_out], (fan_in, fan_out))
            bias = None if b is None else b[j : j + fan_out]
            out.append((kernel, bias))
            i += fan_in * fan_out
            j += fan_out
        return out

    def call(self, inputs):
        w, b = self.effective_weights()
        x = inputs
        blocks = self.unflatten(w, b)
        for index, (kernel, bias) in enumerate(blocks):
            x = ops.matmul(x, kernel)
            if bias is not None:
                x = ops.add(x, bias)
            activation = self.output_activation if index == len(blocks) - 1 else self.activation
            if activation is not None:
                x = activation(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": list(self.units),
                "output_activation": keras.activations.serialize(self.output_activation),
                "max_flat_weights": self.max_flat_weights,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_neuromod")
class TaskInput(TaskStateMixin, keras.layers.Layer):
    """The extra-input baseline: appends a one-hot code of the task to the input.

    The code is added on the last axis (features of a vector, channels of an
    image, constant over space), so ``TaskInput() -> Dense/Conv2D ...`` is the
    usual "task as an extra input" network. The task is a non-trainable state
    variable like that of the switchable layers, so the same `set_task` and
    `fit_alternating` drive both methods and the data need no extra column.

    Args:
        num_tasks: number of tasks (the length of the one-hot code), at least 2.
    """

    def __init__(self, num_tasks=2, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _fields.integer(num_tasks, "num_tasks", 2)

    def build(self, input_shape):
        self._add_task_variable()

    def call(self, inputs):
        code = ops.one_hot(ops.cast(self.task_state, "int32"), self.num_tasks, dtype=inputs.dtype)
        # (..., 1) + (k,) broadcasts to (..., k) for any batch and spatial shape.
        code = ops.add(ops.zeros_like(inputs[..., :1]), code)
        return ops.concatenate([inputs, code], axis=-1)

    def compute_output_shape(self, input_shape):
        last = input_shape[-1]
        return tuple(input_shape[:-1]) + (None if last is None else last + self.num_tasks,)

    def get_config(self):
        config = super().get_config()
        config["num_tasks"] = self.num_tasks
        return config
