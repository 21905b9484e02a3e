"""Input sets: the sensing set's inputs against an independent numpy computation, the agent
format's `inputs` setting, the horizon, and round trips.

The sensing inputs are checked step by step on a model with a normalization layer:
gradients are drawn here and applied with `optimizer.apply`, and every input is
recomputed in numpy from the weights, the momentum and the running means before
the step, as `keras_neuromod.inputs` documents them.
"""

import json
import warnings

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_neuromod import Genome
from keras_neuromod import NmAdam
from keras_neuromod import NmSGD
from keras_neuromod import inputs as input_sets
from keras_neuromod.agents import Agent
from keras_neuromod.callbacks import ModulationTracer
from keras_neuromod.callbacks import TrainingHorizon
from keras_neuromod.optimizers.ablation import ablate

SENSING = input_sets.SENSING


def _model():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )
    model.build((None, 4))
    return model


def _agent(cls, rng=0, regulatory=3):
    outputs = 8 if cls is NmAdam else 4
    return Genome.random(SENSING.size, outputs, regulatory, rng=rng)


def _log_unit(value, lo, hi):
    if np.isnan(value):
        return 1.0
    return float(np.clip((np.log10(max(value, 1e-30)) - lo) / (hi - lo), 0.0, 1.0))


def _expected_inputs(variables, grads, momentums, trend, update, horizon, sign, layers):
    """Every sensing input of every tensor, in numpy, and the new running means."""
    rows, new_trend = [], []
    for i, (variable, gradient) in enumerate(zip(variables, grads)):
        w = np.asarray(variable.numpy(), np.float64)
        g = np.asarray(gradient, np.float64)
        m = None if momentums is None else np.asarray(momentums[i], np.float64)
        path = variable.path
        location = layers.index(path.rsplit("/", 1)[0]) / (len(layers) - 1)
        name = path.rsplit("/", 1)[-1]
        normalization = name in ("gamma", "beta")
        flags = [w.ndim <= 1 and not normalization, normalization, False, False]
        w_mean, g_mean = np.abs(w).mean(), np.abs(g).mean()
        if m is None or not np.any(m):
            cosine = 0.0
        else:
            cosine = sign * np.sum(g * m) / np.sqrt(np.sum(g * g) * np.sum(m * m))
        logged = np.clip(np.log10(max(g_mean, 1e-12)), -12, 2)
        if update == 0:
            fast = slow = logged
        else:
            fast = trend[i, 0] + 0.1 * (logged - trend[i, 0])
            slow = trend[i, 1] + 0.01 * (logged - trend[i, 1])
        new_trend.append([fast, slow])
        t = update + 1
        rows.append(
            [
                location,
                min(np.log10(w.size) / 7, 1.0),
                *map(float, flags),
                _log_unit(w_mean, -5, 0),
                _log_unit(g_mean, -8, 0),
                _log_unit(g_mean / max(w_mean, 1e-30), -6, 2),
                (cosine + 1) / 2,
                np.clip(0.5 + (fast - slow) / 2, 0, 1),
            ]
            + [np.tanh(t / tau) for tau in (10, 100, 1000, 10000)]
            + ([min(t / horizon, 1.0), 1.0] if horizon else [0.0, 0.0])
            + [1.0]
        )
    return np.asarray(rows), np.asarray(new_trend)


@pytest.mark.parametrize("cls", [NmAdam, NmSGD])
def test_sensing_inputs_match_numpy_step_by_step(cls):
    model = _model()
    variables = model.trainable_variables
    layers = []
    for v in variables:
        if v.path.rsplit("/", 1)[0] not in layers:
            layers.append(v.path.rsplit("/", 1)[0])
    optimizer = cls(agent=_agent(cls), ranges={"momentum": (0.5, 0.9)} if cls is NmSGD else None)
    optimizer.build(variables)
    optimizer.set_horizon(40)
    assert optimizer.input_names == SENSING.names
    rng = np.random.default_rng(0)
    momentum_of = optimizer._momentum_variables
    for update, scale in enumerate((1e-3, 1e-1, 1e-5)):
        grads = [(scale * rng.normal(size=v.shape)).astype("float32") for v in variables]
        momentums = None if momentum_of() is None else [m.numpy() for m in momentum_of()]
        trend = optimizer._grn_trend.numpy()
        expected, expected_trend = _expected_inputs(
            variables, grads, momentums, trend, update, 40, cls.MOMENTUM_SIGN, layers
        )
        optimizer.apply(grads, variables)
        got = optimizer.modulation()
        assert got["updates"] == update + 1
        np.testing.assert_allclose(got["inputs"], expected, atol=2e-5)
        np.testing.assert_allclose(optimizer._grn_trend.numpy(), expected_trend, atol=2e-5)
        assert np.all((got["inputs"] >= 0) & (got["inputs"] <= 1))
    # the momentum after three steps is not zero: the cosine was read for real
    assert not np.allclose(got["inputs"][:, 9], 0.5)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=0, max_value=1e6) | st.just(float("nan")),
    st.floats(-10, 0),
    st.floats(0.5, 5),
)
def test_log_unit_against_numpy(value, lo, width):
    got = float(input_sets.log_unit(np.float32(value), (lo, lo + width)))
    assert got == pytest.approx(_log_unit(float(np.float32(value)), lo, lo + width), abs=1e-5)


def test_kind_flags_read_the_variable_paths():
    flags = dict(zip(input_sets.KINDS, range(4)))

    def kinds(path, shape):
        return {kind for kind, index in flags.items() if input_sets.kind_flags(path, shape)[index]}

    assert kinds("dense/kernel", (4, 8)) == set()
    assert kinds("dense/bias", (8,)) == {"vector"}
    assert kinds("layer_normalization/gamma", (8,)) == {"normalization"}
    assert kinds("batch_normalization/beta", (8,)) == {"normalization"}
    assert kinds("embedding/embeddings", (32, 8)) == {"embedding"}
    assert kinds("gru/gru_cell/recurrent_kernel", (8, 24)) == {"recurrent"}


def test_an_agent_names_its_input_set_and_files_without_one_read_as_the_papers():
    genome = _agent(NmAdam)
    agent = Agent("sensing_agent", "adam", genome, settings={"inputs": "sensing"})
    again = Agent.from_dict(json.loads(json.dumps(agent.to_dict())))
    assert again.settings["inputs"] == "sensing" and again.genome == genome
    assert NmAdam(agent=again).input_set is SENSING
    with pytest.raises(ValueError, match="'sensing' input set needs 18"):
        Agent("wrong", "adam", Genome.random(13, 8, 1, rng=0), settings={"inputs": "sensing"})
    with pytest.raises(ValueError, match="needs 13"):
        Agent("legacy", "adam", genome)  # no setting: the paper's 13 inputs
    with pytest.raises(ValueError, match="Unknown input set 'smell'"):
        Agent("unknown", "adam", genome, settings={"inputs": "smell"})
    paper = Agent("legacy", "adam", Genome.random(13, 8, 1, rng=0))
    assert NmAdam(agent=paper).input_set is input_sets.PAPER
    with pytest.raises(ValueError, match="18 inputs \\(the 'sensing' input set\\)"):
        NmAdam(agent=Genome.random(13, 8, 1, rng=0), inputs="sensing")


def test_a_built_optimizer_refuses_an_agent_of_another_input_set():
    optimizer = NmAdam(agent=_agent(NmAdam))
    optimizer.build(_model().trainable_variables)
    paper = Agent("legacy", "adam", Genome.random(13, 8, 1, rng=0))
    with pytest.raises(ValueError, match="inputs"):
        optimizer.set_genome(paper)


@pytest.mark.slow
def test_training_horizon_gives_progress_during_fit_and_clears_it_after(tmp_path):
    model = _model()
    optimizer = NmAdam(agent=_agent(NmAdam))
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = x[:, :2]
    tracer = ModulationTracer(update_freq=1)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[TrainingHorizon(), tracer])
    progress = tracer.inputs[:, 0, SENSING.names.index("progress")]
    known = tracer.inputs[:, 0, SENSING.names.index("horizon_known")]
    np.testing.assert_allclose(progress, np.arange(1, 9) / 8, atol=1e-6)
    assert np.all(known == 1)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[tracer])  # no horizon now
    assert np.all(tracer.inputs[-4:, 0, SENSING.names.index("horizon_known")] == 0)
    assert np.all(tracer.inputs[-4:, 0, SENSING.names.index("progress")] == 0)
    assert tracer.input_names == list(SENSING.names)
    figure = tracer.plot(str(tmp_path / "trace.png"))
    assert (tmp_path / "trace.png").stat().st_size > 0 and figure.endswith("trace.png")


@pytest.mark.slow
def test_an_agent_that_reads_the_horizon_warns_once_where_it_is_not_told():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")

    def untold_warnings(
        genome, callbacks=(), horizon=None, made_with=None, ranges=None, table=None
    ):
        model = _model()
        optimizer = NmAdam(agent=genome, horizon=made_with, ranges=ranges)
        if table is not None:
            optimizer = ablate(optimizer, "frozen", hyperparameters=table)
        if horizon is not None:
            optimizer.set_horizon(horizon)  # as a custom loop would
        model.compile(optimizer=optimizer, loss="mse")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, x[:, :2], epochs=2, batch_size=8, verbose=0, callbacks=list(callbacks))
        return [str(w.message) for w in caught if "reads the training's progress" in str(w.message)]

    untold = untold_warnings(_agent(NmAdam))
    assert len(untold) == 1 and "TrainingHorizon()" in untold[0]  # once, not at every step
    assert untold_warnings(_agent(NmAdam), callbacks=[TrainingHorizon()]) == []
    assert untold_warnings(_agent(NmAdam), horizon=8) == []
    assert untold_warnings(_agent(NmAdam), made_with=8) == []
    assert untold_warnings(Genome.random(13, 8, 1, rng=0)) == []  # the paper's inputs read none
    # fixed values: nothing the agent reads changes them
    fixed = {"learning_rate": (1e-3, 1e-3), "beta_1": (0.9, 0.9), "beta_2": (0.99, 0.99)}
    assert untold_warnings(_agent(NmAdam), ranges={**fixed, "epsilon": (1e-7, 1e-7)}) == []
    assert len(untold_warnings(_agent(NmAdam), ranges=fixed)) == 1  # epsilon still varies
    table = np.tile([1e-3, 0.9, 0.999, 1e-7], (len(_model().trainable_variables), 1))
    assert untold_warnings(_agent(NmAdam), table=table) == []  # frozen: fixed per tensor


class _HorizonProbe(keras.callbacks.Callback):
    """The optimizer's horizon as each batch begins."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append(float(self.model.optimizer.horizon_variable.numpy()))


@pytest.mark.slow
def test_training_horizon_counts_the_epochs_left_after_an_initial_epoch():
    model = _model()
    optimizer = NmAdam(agent=_agent(NmAdam))
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model.fit(x, x[:, :2], epochs=1, batch_size=8, verbose=0)  # 4 updates, no horizon
    probe = _HorizonProbe()
    # epochs 2 and 3 of 3: 8 more updates, so the training ends at update 12
    model.fit(
        x,
        x[:, :2],
        epochs=3,
        initial_epoch=1,
        batch_size=8,
        verbose=0,
        callbacks=[TrainingHorizon(), probe],
    )
    assert probe.seen == [12.0] * 8
    assert float(optimizer.horizon_variable.numpy()) == 0.0  # cleared at the end


@pytest.mark.slow
def test_a_horizon_given_when_the_optimizer_is_made_reads_as_the_callbacks(tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")

    def fit(optimizer, callbacks=()):
        keras.utils.set_random_seed(0)
        model = _model()
        model.compile(optimizer=optimizer, loss="mse")
        tracer = ModulationTracer(update_freq=1)
        model.fit(x, x[:, :2], epochs=2, batch_size=8, verbose=0, callbacks=[*callbacks, tracer])
        return model, tracer

    made, made_trace = fit(NmAdam(agent=_agent(NmAdam), horizon=8))
    told, told_trace = fit(NmAdam(agent=_agent(NmAdam)), [TrainingHorizon()])
    np.testing.assert_array_equal(made_trace.inputs, told_trace.inputs)
    for v, w in zip(made.trainable_variables, told.trainable_variables):
        np.testing.assert_array_equal(v.numpy(), w.numpy())
    # fit's own count wins within fit; after it, the optimizer's horizon is back
    optimizer = made.optimizer
    probe = _HorizonProbe()
    made.fit(x, x[:, :2], epochs=1, batch_size=8, verbose=0, callbacks=[TrainingHorizon(), probe])
    assert probe.seen == [12.0] * 4 and float(optimizer.horizon_variable.numpy()) == 8.0
    # the horizon is configuration: config and model.save keep it
    assert optimizer.get_config()["horizon"] == 8
    assert NmAdam.from_config(optimizer.get_config()).horizon == 8
    made.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.optimizer.horizon == 8
    assert float(loaded.optimizer.horizon_variable.numpy()) == 8.0
    assert NmAdam(agent=_agent(NmAdam)).get_config()["horizon"] is None
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="horizon"):
            NmAdam(agent=_agent(NmAdam), horizon=bad)


@pytest.mark.slow
def test_config_and_model_save_round_trip_keep_the_input_set(tmp_path):
    model = _model()
    optimizer = NmSGD(agent=_agent(NmSGD), ranges={"momentum": (0.0, 0.9)})
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(1).normal(size=(16, 4)).astype("float32")
    model.fit(x, x[:, :2], epochs=1, batch_size=8, verbose=0)
    config = optimizer.get_config()
    assert config["inputs"] == "sensing"
    assert NmSGD.from_config(config).input_set is SENSING
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.optimizer._grn_trend.numpy(), optimizer._grn_trend.numpy())
    for a, _ in zip((model, loaded), (loaded, model)):
        a.train_on_batch(x[:8], x[:8, :2])
    for v, w in zip(model.trainable_variables, loaded.trainable_variables):
        np.testing.assert_allclose(v.numpy(), w.numpy(), atol=1e-6)


def test_an_agent_reads_the_horizon_only_with_the_sensing_inputs():
    from keras_neuromod.agents import Agent

    sensing = Agent(name="s", base="adam", genome=_agent(NmAdam), settings={"inputs": "sensing"})
    paper = Agent(name="p", base="adam", genome=Genome.random(13, 8, 2, rng=0))
    assert sensing.reads_horizon and not paper.reads_horizon
