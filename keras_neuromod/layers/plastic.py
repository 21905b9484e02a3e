"""Neuromodulated plasticity (Backpropamine) as Keras recurrent cells.

Miconi et al., "Backpropamine: training self-modifying neural networks with
differentiable neuromodulated plasticity" (ICLR 2019). Each plastic connection
carries a Hebbian trace that is part of the recurrent state; its effective weight
is `w_ij + alpha_ij * Hebb_ij(t)`. `w`, `alpha`, the plasticity rates and the
network's own neuromodulation head are all trained by backpropagation through
the trace.

Both cells run inside `keras.layers.RNN` on every backend (they use `keras.ops`
only). The H x H traces are flattened into the recurrent state (Keras wants
state sizes as ints), so they start at zero for every sequence and are carried
across batches when the RNN layer is `stateful=True`.

Notation used in the docstrings: `x(t)` the input, `h(t)` the hidden state,
`pre = h(t-1)` the presynaptic activity, `post` the postsynaptic activity of the
plastic path (`h(t)` for the RNN cell, the candidate `g(t)` for the LSTM cell),
`delta_ij = pre_i * post_j`, `clip` the trace bound `c`.
"""

import inspect

import keras
from keras import ops

from keras_neuromod import _fields
from keras_neuromod._keras_compat import DropoutRNNCell

__all__ = ["PlasticRNNCell", "PlasticLSTMCell", "PLASTICITY_RULES"]

PLASTICITY_RULES = ("none", "hebbian", "simple", "retroactive")
_ALPHA_MODES = ("per_connection", "per_neuron", "single")
_CLIP_MODES = ("hard", "soft")
_MODULATION_MODES = ("scalar", "per_neuron")
_TRACES = {"none": 0, "hebbian": 1, "simple": 1, "retroactive": 2}


def _default_eta_initializer(plasticity):
    """The initializer of the plasticity rate `eta` when none is given."""
    # Official code: Hebbian rate 0.01 (a larger rate saturates the
    # clipped trace within a few steps, and a saturated hard clip
    # passes no gradient); eligibility rate 0.1 (E is an average, it
    # cannot saturate).
    rate = 0.1 if plasticity == "retroactive" else 0.01
    return keras.initializers.Constant(rate)


def _check_rate(name, value):
    """A dropout rate in [0, 1)."""
    value = _fields.number(value, f"`{name}`", 0.0, 1.0)
    if value == 1.0:
        raise ValueError(f"`{name}` must be below 1 (1 drops everything); received {name}=1.0.")
    return value


class _PlasticCell(keras.layers.Layer, DropoutRNNCell):
    """The constructor, weights, trace mechanics, dropout and config of the plastic cells.

    A cell defines `_step` (its equations), `_gates` (how many blocks of
    `units` its kernels hold) and `_carried` (how many states of size `units`
    it carries besides `h`, before the traces).

    Args:
        units: positive int, the number of neurons (hidden units).
        plasticity: one of `"none"` (no trace: a plain cell), `"hebbian"`
            (trace rate `eta`, one trainable scalar), `"simple"` (the rate is
            the network's own signal `M(t)`), `"retroactive"` (`M(t)` gates an
            eligibility trace `E` into the Hebbian trace).
        alpha: plasticity coefficient shape: `"per_connection"` (H x H),
            `"per_neuron"` (one per postsynaptic neuron) or `"single"`.
        clip: bound `c` of the Hebbian trace, which stays in `[-c, c]`.
        clip_mode: `"hard"` (clip) or `"soft"` (the official code's bounded
            increment, then clip).
        modulation: `"scalar"` (one `M(t)` per sequence element) or
            `"per_neuron"` (the scalar fanned out to each postsynaptic neuron
            through a trainable linear map).
        alpha_initializer: initializer of `alpha`; default uniform in
            [0, 0.1]. Small positive values, as in the official code, let the
            trace matter from the start without swamping `w`.
        eta_initializer: initializer of `eta`, the Hebbian rate (default
            0.01) or, for `"retroactive"`, the eligibility trace rate (default
            0.1).
        modulation_initializer: initializer of the modulation head's kernel.
            Zeros by default, so that M(t) = 0 and the trace starts unsaturated:
            with tanh activities near +-1 and a random head, the hard-clipped
            trace saturates within a few steps and then passes no gradient.
        kernel_initializer: initializer of the input kernel `W`.
        recurrent_initializer: initializer of the recurrent kernel (the fixed
            recurrent weights `w` of the RNN cell, `U` of the LSTM cell).
        bias_initializer: initializer of `b`; the LSTM cell sets its
            forget-gate bias to one on top of it, as Keras's `unit_forget_bias`.
        dropout: float in [0, 1), the fraction of the inputs `x(t)` dropped
            (in training only; one mask per sequence, as Keras's cells).
        recurrent_dropout: float in [0, 1), the fraction of `pre = h(t-1)`
            dropped (in training only; one mask per sequence). The dropped
            `pre` is what the recurrent connections carry, fixed and plastic
            alike, and what the trace update sees. The LSTM cell uses one
            mask for its four gates.
        seed: int or None, the seed of the dropout masks.
        **kwargs: base `Layer` arguments.
    """

    _gates = 1
    _carried = 0

    def __init_subclass__(cls, **kwargs):
        # Each cell's docstring gives its equations; the arguments are shared
        # and written once, above.
        super().__init_subclass__(**kwargs)
        if cls.__doc__ and _PlasticCell.__doc__:  # none under python -OO
            args = inspect.cleandoc(_PlasticCell.__doc__)
            cls.__doc__ = inspect.cleandoc(cls.__doc__) + "\n\n" + args[args.index("Args:") :]

    def __init__(
        self,
        units,
        plasticity="simple",
        alpha="per_connection",
        clip=1.0,
        clip_mode="hard",
        modulation="scalar",
        alpha_initializer=None,
        eta_initializer=None,
        modulation_initializer="zeros",
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _fields.integer(units, "`units`", 1)
        self.plasticity = _fields.choice(plasticity, "`plasticity`", PLASTICITY_RULES)
        self.alpha = _fields.choice(alpha, "`alpha`", _ALPHA_MODES)
        self.clip_mode = _fields.choice(clip_mode, "`clip_mode`", _CLIP_MODES)
        self.modulation = _fields.choice(modulation, "`modulation`", _MODULATION_MODES)
        self.clip = _fields.number(clip, "`clip`")
        if not self.clip > 0:
            raise ValueError(f"`clip` must be a positive number; received clip={clip!r}.")
        if alpha_initializer is None:
            alpha_initializer = keras.initializers.RandomUniform(0.0, 0.1)
        if eta_initializer is None:
            eta_initializer = _default_eta_initializer(plasticity)
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        self.eta_initializer = keras.initializers.get(eta_initializer)
        self.modulation_initializer = keras.initializers.get(modulation_initializer)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self._set_dropout(dropout, recurrent_dropout, seed)
        units = self.units
        self.state_size = [units] * (1 + self._carried) + [units * units] * _TRACES[plasticity]
        self.output_size = units

    def _set_dropout(self, dropout, recurrent_dropout, seed):
        """Check and keep the dropout rates and the seed; make a seed generator if a rate is set."""
        self.dropout = _check_rate("dropout", dropout)
        self.recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
        self.seed = None if seed is None else _fields.integer(seed, "`seed`")
        if self.dropout or self.recurrent_dropout:
            # Only when a mask is drawn: with seed=None a generator takes its
            # seed from Python's `random`, which would move the default seeds
            # (so the initial weights) of every layer made after this cell.
            self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build(self, input_shape):
        super().build(input_shape)
        width = self._gates * self.units
        self.kernel = self.add_weight(
            shape=(input_shape[-1], width),
            name="kernel",
            initializer=self.kernel_initializer,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, width),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
        )
        self.bias = self.add_weight(
            shape=(width,), name="bias", initializer=self._full_bias_initializer()
        )
        self._build_plasticity()

    def _full_bias_initializer(self):
        return self.bias_initializer

    def call(self, inputs, states, training=False):
        pre = states[0]
        carried = list(states[1 : 1 + self._carried])
        traces = list(states[1 + self._carried :])
        if training:
            input_mask = self.get_dropout_mask(inputs)
            if input_mask is not None:
                inputs = inputs * input_mask
            recurrent_mask = self.get_recurrent_dropout_mask(pre)
            if recurrent_mask is not None:
                pre = pre * recurrent_mask
        h, post, carried = self._step(inputs, pre, carried, traces)
        return h, [h] + carried + self._update_traces(pre, post, h, traces)

    def _step(self, inputs, pre, carried, traces):
        """One step: returns `h(t)`, the plastic path's `post` and the carried states."""
        raise NotImplementedError

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in self.state_size]

    def _build_plasticity(self):
        if not self.is_plastic:
            return
        shape = {
            "per_connection": (self.units, self.units),
            "per_neuron": (self.units,),
            "single": (),
        }[self.alpha]
        self.plastic_alpha = self.add_weight(
            shape=shape, name="alpha", initializer=self.alpha_initializer
        )
        if self.plasticity in ("hebbian", "retroactive"):
            # hebbian: the fixed learning rate of the trace; retroactive: the
            # time constant of the eligibility trace.
            self.eta = self.add_weight(shape=(), name="eta", initializer=self.eta_initializer)
        if self.is_modulated:
            self.modulation_kernel = self.add_weight(
                shape=(self.units, 1),
                name="modulation_kernel",
                initializer=self.modulation_initializer,
            )
            self.modulation_bias = self.add_weight(
                shape=(1,), name="modulation_bias", initializer="zeros"
            )
            if self.modulation == "per_neuron":
                # The official code's "fan-out": a linear map from the scalar
                # signal to one value per postsynaptic neuron. Ones/zeros make it
                # start as the scalar signal.
                self.fanout_kernel = self.add_weight(
                    shape=(self.units,), name="fanout_kernel", initializer="ones"
                )
                self.fanout_bias = self.add_weight(
                    shape=(self.units,), name="fanout_bias", initializer="zeros"
                )

    @property
    def is_plastic(self):
        return self.plasticity != "none"

    @property
    def is_modulated(self):
        return self.plasticity in ("simple", "retroactive")

    def modulation_signal(self, h):
        """The neuromodulatory signal M(t) computed from hidden states `h(t)`.

        M(t) depends on `h(t)` only, so running the RNN with
        `return_sequences=True` and calling this on the output sequence reads
        out the exact signal that gated the trace at every step (for plotting).

        Args:
            h: tensor of shape `(..., units)`.

        Returns:
            Tensor of shape `(..., 1)` (`modulation="scalar"`) or
            `(..., units)` (`modulation="per_neuron"`).
        """
        if not self.is_modulated:
            raise ValueError(
                "`modulation_signal` needs plasticity='simple' or 'retroactive'; "
                f"this cell has plasticity={self.plasticity!r}."
            )
        m = ops.tanh(ops.matmul(h, self.modulation_kernel) + self.modulation_bias)
        if self.modulation == "per_neuron":
            m = m * self.fanout_kernel + self.fanout_bias
        return m

    def _plastic_input(self, pre, hebb):
        """sum_i pre_i * alpha_ij * Hebb_ij, for each batch element.

        For `single` and `per_neuron` alpha the trace is contracted first and
        scaled after, so no (batch, H, H) product is ever formed. For
        `per_connection` alpha a (batch, H, H) product cannot be avoided; the
        alpha * Hebb form was the fastest variant measured (TensorFlow and JAX,
        CPU, forward plus backward).
        """
        if self.alpha == "per_connection":
            return ops.einsum("bi,bij->bj", pre, hebb * self.plastic_alpha)
        return ops.einsum("bi,bij->bj", pre, hebb) * self.plastic_alpha

    def _bound(self, hebb, increment):
        c = self.clip
        if self.clip_mode == "soft":
            # The official code's soft bound: a positive increment moves the
            # trace towards +c in proportion to the room left, a negative one
            # towards -c. Exactly inside [-c, c] when |increment| <= 1; the hard
            # clip after it keeps the bound for larger increments too.
            # Written with `where`, not relu, so that the derivative with
            # respect to the increment is not zero at increment = 0 (where a
            # zero-initialised modulation head starts).
            room = ops.where(increment > 0, c - hebb, hebb + c)
            hebb = hebb + increment * room
        else:
            hebb = hebb + increment
        return ops.clip(hebb, -c, c)

    def _update_traces(self, pre, post, h, traces):
        """Return the new traces (flattened) after one step."""
        if not self.is_plastic:
            return []
        batch = ops.shape(pre)[0]
        hw = (batch, self.units, self.units)
        hebb = ops.reshape(traces[0], hw)
        delta = ops.expand_dims(pre, 2) * ops.expand_dims(post, 1)
        if self.plasticity == "hebbian":
            hebb = self._bound(hebb, self.eta * delta)
            new = [hebb]
        elif self.plasticity == "simple":
            m = ops.expand_dims(self.modulation_signal(h), 1)
            hebb = self._bound(hebb, m * delta)
            new = [hebb]
        else:
            elig = ops.reshape(traces[1], hw)
            m = ops.expand_dims(self.modulation_signal(h), 1)
            hebb = self._bound(hebb, m * elig)
            elig = (1.0 - self.eta) * elig + self.eta * delta
            new = [hebb, elig]
        flat = (batch, self.units * self.units)
        return [ops.reshape(t, flat) for t in new]

    def _hebb(self, traces):
        batch = ops.shape(traces[0])[0]
        return ops.reshape(traces[0], (batch, self.units, self.units))

    def get_config(self):
        config = {
            "units": self.units,
            "plasticity": self.plasticity,
            "alpha": self.alpha,
            "clip": self.clip,
            "clip_mode": self.clip_mode,
            "modulation": self.modulation,
            "alpha_initializer": keras.initializers.serialize(self.alpha_initializer),
            "eta_initializer": keras.initializers.serialize(self.eta_initializer),
            "modulation_initializer": keras.initializers.serialize(self.modulation_initializer),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="keras_neuromod")
class PlasticRNNCell(_PlasticCell):
    """Recurrent tanh cell with (neuromodulated) Hebbian plastic recurrence.

    One step, in this exact order (`pre = h(t-1)`, state `Hebb(t)`, `E(t)`):

    1. Output, with the trace as it stands before this step's update:
       `h(t) = tanh(x(t) W + b + pre (w + alpha * Hebb(t)))`, i.e.
       `h_j(t) = tanh(... + sum_i pre_i (w_ij + alpha_ij Hebb_ij(t)))`.
    2. Modulation from the new state: `M(t) = tanh(h(t) w_m + b_m)`
       (`modulation="per_neuron"`: `M_j(t) = f_j M(t) + g_j`).
    3. Trace update with `delta_ij = pre_i h_j(t)`:
       - `hebbian`: `Hebb(t+1) = clip(Hebb(t) + eta delta)`
       - `simple`: `Hebb(t+1) = clip(Hebb(t) + M_j(t) delta)`
       - `retroactive`: `Hebb(t+1) = clip(Hebb(t) + M_j(t) E(t))`, then
         `E(t+1) = (1 - eta) E(t) + eta delta` (the paper's order: the trace
         takes the eligibility accumulated up to the previous step).

    The cell's output is `h(t)`; its state is `[h, Hebb]` (plus `E` for
    `retroactive`), the traces flattened to `units * units` and reset to zero
    at each new sequence. `modulation_signal(h)` reads out `M(t)`.

    Example:

    ```python
    cell = PlasticRNNCell(64, plasticity="simple", dropout=0.1)
    layer = keras.layers.RNN(cell, return_sequences=True)
    h = layer(x)                     # (batch, time, 64)
    m = cell.modulation_signal(h)    # (batch, time, 1)
    ```
    """

    def _step(self, inputs, pre, carried, traces):
        z = ops.matmul(inputs, self.kernel) + self.bias
        z = z + ops.matmul(pre, self.recurrent_kernel)
        if self.is_plastic:
            z = z + self._plastic_input(pre, self._hebb(traces))
        h = ops.tanh(z)
        return h, h, []


@keras.saving.register_keras_serializable(package="keras_neuromod")
class PlasticLSTMCell(_PlasticCell):
    """LSTM cell whose hidden-to-candidate path is (neuromodulated) plastic.

    As in the official Backpropamine LSTM, only the candidate (cell input)
    path carries a trace; the gates are those of a standard LSTM. One step, in
    this order (`pre = h(t-1)`, Keras's gate order i, f, c, o):

    1. `[i, f, a, o] = x(t) W + pre U + b`;
       `g(t) = tanh(a + sum_i pre_i alpha_ij Hebb_ij(t))` (trace before update);
       `c(t) = sigmoid(f) c(t-1) + sigmoid(i) g(t)`;
       `h(t) = sigmoid(o) tanh(c(t))`.
    2. `M(t) = tanh(h(t) w_m + b_m)` (fanned out per neuron if asked).
    3. The trace update of `PlasticRNNCell` with `delta_ij = pre_i g_j(t)`
       (postsynaptic activity is the candidate, the plastic path's output).

    The output is `h(t)`; the state is `[h, c, Hebb]` (plus `E` for
    `retroactive`). The official LSTM clips the trace at 2 (`clip=2.0`) and
    scales the alpha gradient down by about the width; that rescaling is left
    to the optimizer here (e.g. a smaller `alpha_initializer` and gradient
    clipping).
    """

    _gates = 4
    _carried = 1

    def _full_bias_initializer(self):
        units, base = self.units, self.bias_initializer

        def bias_initializer(shape, dtype=None):
            return ops.concatenate(
                [
                    base((units,), dtype=dtype),
                    keras.initializers.Ones()((units,), dtype=dtype),
                    base((2 * units,), dtype=dtype),
                ]
            )

        return bias_initializer

    def _step(self, inputs, pre, carried, traces):
        z = ops.matmul(inputs, self.kernel) + ops.matmul(pre, self.recurrent_kernel)
        z = z + self.bias
        zi, zf, za, zo = ops.split(z, 4, axis=-1)
        if self.is_plastic:
            za = za + self._plastic_input(pre, self._hebb(traces))
        g = ops.tanh(za)
        c = ops.sigmoid(zf) * carried[0] + ops.sigmoid(zi) * g
        h = ops.sigmoid(zo) * ops.tanh(c)
        return h, g, [c]
