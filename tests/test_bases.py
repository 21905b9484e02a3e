"""The registry of optimizer bases: one class and one line make a new base."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from keras_neuromod import Genome
from keras_neuromod import NmAdam
from keras_neuromod import NmSGD
from keras_neuromod import bases
from keras_neuromod import zoo
from keras_neuromod.agents import Agent
from keras_neuromod.optimizers import NeuromodulatedOptimizer


class NmRMSprop(NeuromodulatedOptimizer):
    """Keras's RMSprop (no momentum, not centered), modulated per tensor."""

    HYPERPARAMETERS = ("learning_rate", "rho", "epsilon")
    # one output set, centred on Keras's RMSprop: every agent of the base uses it
    OUTPUT_SETS = {
        "centred": {
            "learning_rate": (1e-5, 1e-1, "log"),
            "rho": (0.0, 0.99, "complement_log"),
            "epsilon": (1e-10, 1e-4, "log"),
        }
    }
    BOUNDS = {
        "learning_rate": (0.0, float("inf")),
        "rho": (0.0, 1.0),
        "epsilon": (0.0, float("inf")),
    }

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._velocities = self.add_optimizer_variables(var_list, "velocity")

    def update_step(self, gradient, variable, learning_rate):
        values = self._modulated(variable)
        lr = ops.cast(learning_rate, variable.dtype) * values["learning_rate"]
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self._velocities[self._get_variable_index(variable)]
        rho = values["rho"]
        self.assign(
            velocity,
            ops.add(ops.multiply(rho, velocity), ops.multiply(1 - rho, ops.square(gradient))),
        )
        denominator = ops.add(velocity, values["epsilon"])
        self.assign_sub(variable, ops.divide(ops.multiply(lr, gradient), ops.sqrt(denominator)))


@pytest.fixture
def rmsprop(monkeypatch):
    """NmRMSprop registered as the base "rmsprop" for one test."""
    monkeypatch.setattr(bases, "_REGISTRY", dict(bases._REGISTRY))
    bases.register("rmsprop")(NmRMSprop)  # the one registry line
    return NmRMSprop


def rmsprop_agent(name="nm_rmsprop_test", ranges=None):
    return Agent(
        name=name,
        base="rmsprop",
        genome=Genome.random(bases.N_INPUTS, 6, 2, rng=0),
        ranges=ranges,
        settings={"warmup_steps": 5},
    )


def small_fit(optimizer, steps=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(10 * steps, 4)).astype("float32")
    y = rng.integers(0, 3, 10 * steps)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
    return model, history.history["loss"]


def test_the_shipped_bases_are_registered_by_their_classes():
    assert bases.names() == ("adam", "sgd")
    adam, sgd = bases.get("adam"), bases.get("sgd")
    assert (adam.optimizer, adam.n_outputs, adam.hyperparameters) == (
        NmAdam,
        8,
        NmAdam.HYPERPARAMETERS,
    )
    assert (sgd.optimizer, sgd.n_outputs) == (NmSGD, 4)
    assert sgd.scales("paper") == {"learning_rate": "log", "momentum": "linear"}
    assert sgd.scales("centred") == {"learning_rate": "log", "momentum": "complement_log"}
    assert sgd.ranges("paper") == {"learning_rate": (1e-4, 1.0), "momentum": (0.0, 0.99)}
    assert set(adam.output_sets) == set(sgd.output_sets) == {"paper", "centred", "narrow"}
    assert adam.bounds == NmAdam.BOUNDS
    assert bases.N_INPUTS == 13 and len(bases.INPUT_NAMES) == 6
    with pytest.raises(
        ValueError, match=r"must name a registered optimizer base \('adam' or 'sgd'\), got 'x'"
    ):
        bases.get("x")


def test_a_third_optimizer_is_one_class_and_one_registry_line(rmsprop, tmp_path, monkeypatch):
    assert bases.names() == ("adam", "rmsprop", "sgd")
    # an agent file of the new base: saved, indexed, loaded by name, validated
    zoo.save(rmsprop_agent(ranges={"rho": (0.8, 0.95)}), tmp_path / "nm_rmsprop_test.json")
    zoo.write_index(tmp_path)
    monkeypatch.setenv("KERAS_NEUROMOD_ZOO", str(tmp_path))
    assert zoo.list_agents()[0]["base"] == "rmsprop"
    agent = zoo.load("nm_rmsprop_test")
    assert agent.optimizer_class() is rmsprop

    # it trains, with the agent's ranges and settings, and its base's one output set
    # (although the agent reads the paper's inputs, whose default output set is "paper")
    optimizer = agent.optimizer()
    assert isinstance(optimizer, rmsprop)
    assert optimizer.ranges["rho"] == (0.8, 0.95) and optimizer.warmup_steps == 5
    assert optimizer.output_set.name == agent.output_set.name == "centred"
    assert optimizer.scales["rho"] == "complement_log"
    with pytest.raises(ValueError, match=r"NmRMSprop declares no output set 'paper'"):
        rmsprop(agent=agent, outputs="paper")
    with pytest.raises(ValueError, match="'outputs': NmRMSprop declares no output set"):
        Agent("x", "rmsprop", agent.genome, settings={"outputs": "paper"})
    model, losses = small_fit(optimizer)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    modulation = optimizer.modulation()
    assert modulation["updates"] == 20 and modulation["hyperparameters"].shape == (4, 3)
    rho = modulation["hyperparameters"][:, 1]
    assert np.all((rho >= 0.8) & (rho <= 0.95))
    # by name, as the shipped optimizers take theirs
    assert rmsprop(agent="nm_rmsprop_test").genome == agent.genome

    # the other bases refuse it, naming the one it was made for
    with pytest.raises(ValueError, match="so it was made for NmRMSprop"):
        NmAdam(agent="nm_rmsprop_test")
    # its ranges are checked against its own hyperparameters and bounds
    with pytest.raises(
        ValueError, match=r"Agent 'ranges': ranges\['rho'\] = \(0.5, 1.5\) leaves the valid"
    ):
        rmsprop_agent(ranges={"rho": (0.5, 1.5)})
    with pytest.raises(ValueError, match="Unknown hyperparameter.*NmRMSprop modulates"):
        rmsprop_agent(ranges={"beta_1": (0.5, 0.6)})


def test_the_third_optimizer_with_fixed_ranges_is_keras_rmsprop(rmsprop):
    values = {"learning_rate": 0.01, "rho": 0.9, "epsilon": 1e-6}
    nm = rmsprop(agent=rmsprop_agent(), ranges={k: (v, v) for k, v in values.items()})
    got, _ = small_fit(nm)
    expected, _ = small_fit(keras.optimizers.RMSprop(**values))
    for a, b in zip(got.get_weights(), expected.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_registration_checks_the_class_and_keeps_names_unique(monkeypatch):
    monkeypatch.setattr(bases, "_REGISTRY", dict(bases._REGISTRY))
    with pytest.raises(ValueError, match="taken by keras_neuromod.optimizers.adam.NmAdam"):
        bases.register("adam")(NmRMSprop)
    bases.register("adam")(NmAdam)  # the same class again (a module reload) is fine

    centred = NmRMSprop.OUTPUT_SETS["centred"]

    def declaring(output_sets):
        return type("Declaring", (NmRMSprop,), {"OUTPUT_SETS": output_sets})

    with pytest.raises(ValueError, match="declares no OUTPUT_SETS"):
        bases.register("no_sets")(declaring({}))
    with pytest.raises(ValueError, match=r"missing \['rho', 'epsilon'\]"):
        bases.register("no_defaults")(
            declaring({"centred": {"learning_rate": (1e-3, 1e-2, "log")}})
        )
    with pytest.raises(ValueError, match="Unknown output set 'mine'"):
        bases.register("unknown_set")(declaring({"mine": centred}))
    with pytest.raises(ValueError, match=r"must be \(lo, hi, scale\)"):
        bases.register("no_scale")(declaring({"centred": {**centred, "rho": (0.5, 0.9)}}))
    with pytest.raises(ValueError, match="scale must be one of"):
        bases.register("bad_scale")(declaring({"centred": {**centred, "rho": (0.5, 0.9, "sqrt")}}))
    with pytest.raises(ValueError, match="valid interval"):
        bases.register("out_of_bounds")(
            declaring({"centred": {**centred, "rho": (0.5, 2.0, "linear")}})
        )
    with pytest.raises(ValueError, match=r"OUTPUT_SETS\['centred'\]: .*needs hi < 1"):
        bases.register("reaches_one")(
            declaring({"centred": {**centred, "rho": (0.5, 1.0, "complement_log")}})
        )
    with pytest.raises(ValueError, match="identifier"):
        bases.register("a/b")
    assert bases.names() == ("adam", "sgd")


BAD_RANGES = [
    {"lr": (0.1, 0.2)},
    {"learning_rate": (0.2, 0.1)},
    {"learning_rate": (0.0, 0.1)},
    {"beta_1": (0.5, 1.5)},
    {"epsilon": (1e-8, float("nan"))},
    {"beta_2": "high"},
    {"beta_2": (0.5, True)},
    {"learning_rate": (1e-3, 10**400)},
]


@pytest.mark.parametrize("ranges", BAD_RANGES)
def test_one_range_check_for_the_optimizer_and_the_agent_file(ranges):
    genome = Genome.random(13, 8, 1, rng=0)
    with pytest.raises(ValueError) as from_optimizer:
        NmAdam(agent=genome, ranges=ranges)
    with pytest.raises(ValueError) as from_agent:
        Agent(name="a", base="adam", genome=genome, ranges=ranges)
    assert str(from_agent.value) == f"Agent 'ranges': {from_optimizer.value}"


def test_agents_are_validated_without_building_an_optimizer(monkeypatch, tmp_path):
    def refuse(self, *args, **kwargs):
        raise AssertionError("an optimizer was built")

    monkeypatch.setattr(NeuromodulatedOptimizer, "__init__", refuse)
    genome = Genome.random(13, 8, 1, rng=0)
    agent = Agent(name="a", base="adam", genome=genome, ranges={"learning_rate": (1e-4, 1e-3)})
    path = zoo.save(agent, tmp_path / "a.json")
    assert zoo.load(path) == agent
    with pytest.raises(ValueError, match="lo <= hi"):
        Agent(name="a", base="adam", genome=genome, ranges={"learning_rate": (1e-3, 1e-4)})
    data = json.loads((tmp_path / "a.json").read_text())
    data["ranges"]["beta_1"] = [0.5, 1.5]
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="a.json' is invalid: Agent 'ranges'.*valid interval"):
        zoo.load(str(tmp_path / "a.json"))


@pytest.mark.parametrize("cls,n_outputs", [(NmAdam, 8), (NmSGD, 4)])
def test_build_is_keras_s_own_contract(cls, n_outputs):
    # subclasses create their state in `build`, after the parent's, and a
    # second build adds nothing
    optimizer = cls(agent=Genome.random(13, n_outputs, 1, rng=0))
    variables = [keras.Variable(np.ones((3, 2))), keras.Variable(np.ones((2,)))]
    assert optimizer.modulation() is None
    optimizer.build(variables)
    count = len(optimizer.variables)
    optimizer.build(variables)
    assert len(optimizer.variables) == count
    names = [v.name for v in optimizer.variables]
    # the parent's state first (step counters, AGRN), then the update's own
    momentums = [i for i, name in enumerate(names) if "momentum" in name]
    assert len(momentums) == 2 and names.index("modulated_hyperparameters") < momentums[0]
    assert optimizer.modulation()["updates"] == 0
