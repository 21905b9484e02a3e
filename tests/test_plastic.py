"""Tests of the plastic (Backpropamine) recurrent cells.

The reference below is an independent numpy transcription of the equations
(Miconi et al. 2019, and the order documented in the cells' docstrings).
"""

import itertools

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_neuromod.layers.plastic import PlasticLSTMCell
from keras_neuromod.layers.plastic import PlasticRNNCell

RULES = ("none", "hebbian", "simple", "retroactive")
T, B, D, H = 5, 3, 4, 6


# ----------------------------------------------------------------------------
# numpy reference
# ----------------------------------------------------------------------------


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _alpha_matrix(alpha, units):
    alpha = np.asarray(alpha, np.float64)
    if alpha.ndim == 0:
        return np.full((units, units), float(alpha))
    if alpha.ndim == 1:
        return np.tile(alpha[None, :], (units, 1))  # per postsynaptic neuron j
    return alpha


def _bound(hebb, inc, c, mode):
    if mode == "soft":
        new = np.where(inc > 0, hebb + inc * (c - hebb), hebb + inc * (hebb + c))
    else:
        new = hebb + inc
    return np.clip(new, -c, c)


def numpy_run(kind, cfg, weights, x, input_mask=None, recurrent_mask=None):
    """Run one sequence batch; return (outputs (B,T,H), hebb, elig, mods).

    `input_mask` (B, D) and `recurrent_mask` (B, H) are dropout masks, the same
    at every step: they scale x(t) and pre = h(t-1) (all uses of pre).
    """
    w = dict(weights)
    b, t, _ = x.shape
    if input_mask is not None:
        x = x * input_mask[:, None, :]
    units = cfg["units"]
    h = np.zeros((b, units))
    c_state = np.zeros((b, units))
    hebb = np.zeros((b, units, units))
    elig = np.zeros((b, units, units))
    outs, mods = [], []
    plastic = cfg["plasticity"] != "none"
    alpha = _alpha_matrix(w["alpha"], units) if plastic else None
    for step in range(t):
        pre = h if recurrent_mask is None else h * recurrent_mask
        plastic_in = 0.0
        if plastic:
            # explicit sum_i pre_i (alpha_ij Hebb_ij), one batch element at a time
            plastic_in = np.stack([pre[bb] @ (alpha * hebb[bb]) for bb in range(b)])
        if kind == "rnn":
            z = x[:, step] @ w["kernel"] + w["bias"] + pre @ w["recurrent_kernel"]
            h = np.tanh(z + plastic_in)
            post = h
        else:
            z = x[:, step] @ w["kernel"] + pre @ w["recurrent_kernel"] + w["bias"]
            zi, zf, za, zo = np.split(z, 4, axis=-1)
            g = np.tanh(za + plastic_in)
            c_state = _sigmoid(zf) * c_state + _sigmoid(zi) * g
            h = _sigmoid(zo) * np.tanh(c_state)
            post = g
        outs.append(h)
        if not plastic:
            continue
        delta = pre[:, :, None] * post[:, None, :]
        if cfg["plasticity"] == "hebbian":
            hebb = _bound(hebb, float(w["eta"]) * delta, cfg["clip"], cfg["clip_mode"])
            continue
        m = np.tanh(h @ w["modulation_kernel"] + w["modulation_bias"])
        if cfg["modulation"] == "per_neuron":
            m = m * w["fanout_kernel"] + w["fanout_bias"]
        mods.append(m)
        m = m[:, None, :]  # broadcast over presynaptic i, per postsynaptic j
        if cfg["plasticity"] == "simple":
            hebb = _bound(hebb, m * delta, cfg["clip"], cfg["clip_mode"])
        else:
            eta = float(w["eta"])
            hebb = _bound(hebb, m * elig, cfg["clip"], cfg["clip_mode"])
            elig = (1 - eta) * elig + eta * delta
    return np.stack(outs, 1), hebb, elig, mods


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

CELLS = {"rnn": PlasticRNNCell, "lstm": PlasticLSTMCell}


def _rnn(kind, weight_seed=0, **kwargs):
    """An RNN layer over a built cell whose weights are all set at random."""
    cfg = dict(
        units=H,
        plasticity="simple",
        alpha="per_connection",
        clip=1.0,
        clip_mode="hard",
        modulation="scalar",
    )
    cfg.update(kwargs)
    cell = CELLS[kind](**cfg)
    layer = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    layer.build((None, T, D))
    rng = np.random.default_rng(weight_seed)
    scale = {"alpha": 1.0, "eta": 0.3, "modulation_kernel": 1.0}
    values = {}
    for v in cell.weights:
        name = v.path.split("/")[-1]
        val = rng.normal(0.0, scale.get(name, 0.5), v.shape).astype("float32")
        v.assign(val)
        values[name] = val
    return layer, cell, cfg, values


def _x(seed=1, scale=1.0, t=T, b=B):
    return (np.random.default_rng(seed).normal(0, scale, (b, t, D))).astype("float32")


def _grads(layer, x, loss_fn):
    """Gradients of loss_fn(outputs) w.r.t. the layer's trainable weights."""
    backend = keras.backend.backend()
    variables = layer.trainable_variables
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(layer(x)[0])
        return {
            v.path.split("/")[-1]: np.asarray(g)
            for v, g in zip(variables, tape.gradient(loss, variables))
        }
    if backend == "jax":
        import jax

        def f(values):
            out, _ = layer.stateless_call(values, [], x)
            return loss_fn(out[0])

        grads = jax.grad(f)([v.value for v in variables])
        return {v.path.split("/")[-1]: np.asarray(g) for v, g in zip(variables, grads)}
    pytest.skip(f"gradient helper written for tensorflow and jax, not {backend}")


# ----------------------------------------------------------------------------
# equations
# ----------------------------------------------------------------------------

FORWARD_CASES = [
    (kind, rule, alpha, clip_mode, modulation)
    for kind, rule in itertools.product(("rnn", "lstm"), RULES)
    for alpha, clip_mode, modulation in (
        [("per_connection", "hard", "scalar")]
        if rule == "none"
        else [
            ("per_connection", "hard", "scalar"),
            ("per_neuron", "soft", "per_neuron"),
            ("single", "hard", "per_neuron"),
        ]
    )
]


@pytest.mark.parametrize("kind,rule,alpha,clip_mode,modulation", FORWARD_CASES)
def test_forward_matches_numpy(kind, rule, alpha, clip_mode, modulation):
    layer, cell, cfg, w = _rnn(
        kind, plasticity=rule, alpha=alpha, clip=0.7, clip_mode=clip_mode, modulation=modulation
    )
    x = _x()
    out, *states = layer(x)
    ref_out, ref_hebb, ref_elig, ref_mods = numpy_run(kind, cfg, w, x)
    np.testing.assert_allclose(np.asarray(out), ref_out, rtol=2e-4, atol=2e-5)
    n_core = 1 if kind == "rnn" else 2
    assert len(states) == n_core + {"none": 0, "hebbian": 1, "simple": 1, "retroactive": 2}[rule]
    if rule != "none":
        hebb = np.asarray(states[n_core]).reshape(B, H, H)
        np.testing.assert_allclose(hebb, ref_hebb, rtol=2e-4, atol=2e-5)
        assert np.abs(ref_hebb).max() > 0.05  # the trace actually moved
    if rule == "retroactive":
        elig = np.asarray(states[n_core + 1]).reshape(B, H, H)
        np.testing.assert_allclose(elig, ref_elig, rtol=2e-4, atol=2e-5)
    if rule in ("simple", "retroactive"):
        mods = np.asarray(cell.modulation_signal(out))
        np.testing.assert_allclose(mods, np.stack(ref_mods, 1), rtol=2e-4, atol=2e-5)


def test_trace_changes_the_output():
    """Plastic and non-plastic cells with the same fixed weights differ after step 1."""
    layer, _, _, w = _rnn("rnn", plasticity="hebbian")
    plain, _, _, _ = _rnn("rnn", plasticity="none")
    for v in plain.cell.weights:
        v.assign(w[v.path.split("/")[-1]])
    x = _x()
    a, b = np.asarray(layer(x)[0]), np.asarray(plain(x)[0])
    np.testing.assert_allclose(a[:, 0], b[:, 0], rtol=1e-5, atol=1e-6)
    assert np.abs(a[:, 2:] - b[:, 2:]).max() > 1e-3


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("dropout", [False, True])
def test_none_equals_keras_cell(kind, dropout):
    """plasticity='none' is exactly Keras's SimpleRNN / LSTM, dropout included.

    With the same rates and seed the masks are Keras's own, in training.
    (Keras's LSTM draws one mask per gate once `recurrent_dropout` is set, so
    the LSTM is compared with input dropout only.)
    """
    rates = {}
    if dropout:
        rates = dict(dropout=0.3, seed=7)
        if kind == "rnn":
            rates["recurrent_dropout"] = 0.4
    layer, cell, _, w = _rnn(kind, plasticity="none", **rates)
    ref = (
        keras.layers.SimpleRNN(H, return_sequences=True, **rates)
        if kind == "rnn"
        else keras.layers.LSTM(H, return_sequences=True, **rates)
    )
    ref.build((None, T, D))
    ref.set_weights([w["kernel"], w["recurrent_kernel"], w["bias"]])
    x = _x()
    ours = np.asarray(layer(x, training=dropout)[0])
    np.testing.assert_allclose(ours, np.asarray(ref(x, training=dropout)), rtol=1e-5, atol=1e-6)
    if dropout:
        assert np.abs(ours - np.asarray(layer(x)[0])).max() > 1e-3


# ----------------------------------------------------------------------------
# dropout
# ----------------------------------------------------------------------------


def _masks(seed, rate, recurrent_rate):
    """The masks a cell seeded with `seed` draws: inputs (B, D), then pre (B, H)."""
    generator = keras.random.SeedGenerator(seed)
    input_mask = keras.random.dropout(np.ones((B, D), "float32"), rate, seed=generator)
    recurrent_mask = keras.random.dropout(
        np.ones((B, H), "float32"), recurrent_rate, seed=generator
    )
    return np.asarray(input_mask, "float64"), np.asarray(recurrent_mask, "float64")


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("rule", ["hebbian", "retroactive"])
def test_dropout_matches_numpy_with_the_masks(kind, rule):
    """In training, x(t) and pre = h(t-1) are scaled by one mask per sequence."""
    layer, _, cfg, w = _rnn(kind, plasticity=rule, dropout=0.3, recurrent_dropout=0.4, seed=5)
    x = _x()
    out, *states = layer(x, training=True)
    input_mask, recurrent_mask = _masks(5, 0.3, 0.4)
    assert (input_mask == 0).any() and (recurrent_mask == 0).any()
    ref_out, ref_hebb, _, _ = numpy_run(kind, cfg, w, x, input_mask, recurrent_mask)
    np.testing.assert_allclose(np.asarray(out), ref_out, rtol=2e-4, atol=2e-5)
    hebb = np.asarray(states[1 if kind == "rnn" else 2]).reshape(B, H, H)
    np.testing.assert_allclose(hebb, ref_hebb, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_dropout_is_active_only_in_training(kind):
    layer, _, _, w = _rnn(
        kind, plasticity="retroactive", dropout=0.3, recurrent_dropout=0.3, seed=1
    )
    plain, _, _, _ = _rnn(kind, plasticity="retroactive")
    for v in plain.cell.weights:
        v.assign(w[v.path.split("/")[-1]])
    x = _x()
    expected = np.asarray(plain(x)[0])
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)[0]), expected)
    np.testing.assert_array_equal(np.asarray(layer(x)[0]), expected)
    trained = np.asarray(layer(x, training=True)[0])
    assert np.all(np.isfinite(trained))
    assert np.abs(trained - expected).max() > 1e-3


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_seed_makes_dropout_deterministic(kind):
    """One seed, one sequence of masks; the masks are drawn again at each call."""

    def run(seed):
        layer, _, _, _ = _rnn(
            kind, plasticity="simple", dropout=0.3, recurrent_dropout=0.3, seed=seed
        )
        x = _x()
        return [np.asarray(layer(x, training=True)[0]) for _ in range(2)]

    first, again, other = run(3), run(3), run(4)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert np.abs(first[0] - other[0]).max() > 1e-3
    assert np.abs(first[0] - first[1]).max() > 1e-3


# ----------------------------------------------------------------------------
# gradients through the trace
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("rule", ["hebbian", "simple", "retroactive"])
def test_gradients_reach_all_plastic_parameters(kind, rule):
    layer, _, _, _ = _rnn(kind, plasticity=rule, modulation="per_neuron", clip=5.0)
    x = _x(scale=0.5)
    grads = _grads(layer, x, lambda out: keras.ops.sum(out[:, -1] ** 2))
    expected = {"kernel", "recurrent_kernel", "bias", "alpha"}
    expected |= {"eta"} if rule in ("hebbian", "retroactive") else set()
    expected |= (
        {"modulation_kernel", "modulation_bias", "fanout_kernel", "fanout_bias"}
        if rule != "hebbian"
        else set()
    )
    assert set(grads) == expected
    for name, g in grads.items():
        assert np.all(np.isfinite(g)), name
        assert np.abs(g).max() > 1e-6, f"no gradient reaches {name}"


@pytest.mark.parametrize("clip_mode", ["hard", "soft"])
@pytest.mark.parametrize("rule", ["simple", "retroactive"])
def test_zero_initialised_modulation_head_still_learns(rule, clip_mode):
    """With the default zero head M(t) = 0, yet its gradient must not vanish."""
    cell = PlasticRNNCell(H, plasticity=rule, clip_mode=clip_mode)
    layer = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    x = _x(t=8)
    layer(x)
    assert np.all(np.asarray(cell.modulation_kernel) == 0)
    grads = _grads(layer, x, lambda out: keras.ops.sum(out[:, -1] ** 2))
    assert np.abs(grads["modulation_kernel"]).max() > 1e-6


def test_alpha_gradient_only_through_trace_matches_finite_difference():
    """d loss / d alpha (which acts only through the trace) is the true derivative."""
    layer, cell, _, w = _rnn("rnn", plasticity="retroactive", alpha="single", clip=5.0)
    x = _x(scale=0.5)
    loss = lambda out: keras.ops.sum(out[:, -1])  # noqa: E731
    g = float(_grads(layer, x, loss)["alpha"])
    eps = 1e-2
    values = []
    for sign in (1, -1):
        cell.plastic_alpha.assign(np.float32(w["alpha"] + sign * eps))
        values.append(float(loss(layer(x)[0])))
    fd = (values[0] - values[1]) / (2 * eps)
    assert abs(g) > 1e-4
    np.testing.assert_allclose(g, fd, rtol=2e-2, atol=1e-4)


# ----------------------------------------------------------------------------
# invariants
# ----------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    clip=st.floats(0.05, 3.0),
    scale=st.floats(0.1, 10.0),
    rule=st.sampled_from(["hebbian", "simple", "retroactive"]),
    clip_mode=st.sampled_from(["hard", "soft"]),
    kind=st.sampled_from(["rnn", "lstm"]),
    seed=st.integers(0, 1000),
)
def test_trace_stays_within_clip(clip, scale, rule, clip_mode, kind, seed):
    layer, _, _, _ = _rnn(
        kind,
        weight_seed=seed,
        plasticity=rule,
        clip=clip,
        clip_mode=clip_mode,
        modulation="per_neuron",
    )
    _, *states = layer(_x(seed=seed, scale=scale, t=8))
    hebb = np.asarray(states[1 if kind == "rnn" else 2])
    assert np.abs(hebb).max() <= clip * (1 + 1e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_state_resets_between_sequences(kind):
    layer, _, _, _ = _rnn(kind, plasticity="retroactive")
    x = _x()
    first, second = np.asarray(layer(x)[0]), np.asarray(layer(x)[0])
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_stateful_carries_trace_across_batches(kind):
    """Two stateful calls on halves equal one call on the whole sequence."""
    _, cell, cfg, w = _rnn(kind, plasticity="simple")
    x = _x(t=2 * T)
    whole = numpy_run(kind, cfg, w, x)[0]
    stateful = keras.layers.RNN(
        CELLS[kind].from_config(cell.get_config()), return_sequences=True, stateful=True
    )
    stateful.build((B, T, D))
    for v in stateful.cell.weights:
        v.assign(w[v.path.split("/")[-1]])
    halves = [np.asarray(stateful(x[:, :T])), np.asarray(stateful(x[:, T:]))]
    np.testing.assert_allclose(np.concatenate(halves, 1), whole, rtol=2e-4, atol=2e-5)
    stateful.reset_states()
    np.testing.assert_allclose(np.asarray(stateful(x[:, :T])), whole[:, :T], rtol=2e-4, atol=2e-5)


# ----------------------------------------------------------------------------
# configuration and saving
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_config_round_trip(kind):
    layer, cell, _, _ = _rnn(
        kind,
        plasticity="retroactive",
        alpha="per_neuron",
        clip=2.0,
        clip_mode="soft",
        modulation="per_neuron",
        dropout=0.25,
        recurrent_dropout=0.5,
        seed=11,
    )
    clone = keras.layers.RNN.from_config(layer.get_config())
    assert clone.cell.get_config() == cell.get_config()
    config = clone.cell.get_config()
    assert (config["dropout"], config["recurrent_dropout"], config["seed"]) == (0.25, 0.5, 11)
    assert type(clone.cell) is type(cell)
    clone.build((None, T, D))
    clone.set_weights(layer.get_weights())
    x = _x()
    np.testing.assert_allclose(
        np.asarray(clone(x)[0]), np.asarray(layer(x)[0]), rtol=1e-6, atol=1e-7
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,rule,rates",
    [
        ("rnn", "simple", {}),
        ("lstm", "retroactive", {}),
        ("rnn", "hebbian", {}),
        ("rnn", "retroactive", dict(dropout=0.2, recurrent_dropout=0.3, seed=9)),
        ("lstm", "simple", dict(dropout=0.2, recurrent_dropout=0.3)),
    ],
)
def test_model_save_round_trip(kind, rule, rates, tmp_path):
    cell = CELLS[kind](H, plasticity=rule, alpha="per_connection", modulation="per_neuron", **rates)
    inputs = keras.Input((T, D))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.RNN(cell)(inputs)))
    x = _x()
    if rates:  # a training step with the masks, compiled, before saving
        model.compile("adam", "mse")
        model.fit(x, np.ones((B, 2)), epochs=1, verbose=0)
    path = tmp_path / "plastic.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-7)
    assert loaded.layers[1].cell.get_config() == cell.get_config()


@pytest.mark.slow
def test_compiles_and_fits():
    cell = PlasticRNNCell(H, plasticity="retroactive")
    inputs = keras.Input((T, D))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.RNN(cell)(inputs)))
    model.compile("adam", "mse")
    x = _x(b=8)
    history = model.fit(x, np.ones((8, 1)), epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]


# ----------------------------------------------------------------------------
# arguments
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [PlasticRNNCell, PlasticLSTMCell])
@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(units=0), "units"),
        (dict(units=2.5), "units"),
        (dict(plasticity="oja"), "plasticity"),
        (dict(alpha="diag"), "alpha"),
        (dict(clip=0), "clip"),
        (dict(clip=-1.0), "clip"),
        (dict(clip="1"), "clip"),
        (dict(clip_mode="tanh"), "clip_mode"),
        (dict(modulation="vector"), "modulation"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(recurrent_dropout="0.1"), "recurrent_dropout"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
    ],
)
def test_bad_arguments_raise(cls, kwargs, name):
    kwargs = {"units": 4, **kwargs}
    with pytest.raises(ValueError, match=f"`{name}`"):
        cls(**kwargs)


def test_modulation_signal_needs_a_modulated_rule():
    cell = PlasticRNNCell(3, plasticity="hebbian")
    cell.build((None, 2))
    with pytest.raises(ValueError, match="modulation_signal"):
        cell.modulation_signal(np.zeros((1, 3), "float32"))
