"""Output sets: the scales against an independent numpy computation, their invariants,
the centred set's middle against Keras's defaults, silent agents against Keras's
optimizers, the agent format's `outputs` setting, round trips and errors.

Runs on TensorFlow and on JAX (`KERAS_BACKEND=jax`).
"""

import json

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from helpers import train_weights
from keras_neuromod import Genome
from keras_neuromod import NmAdam
from keras_neuromod import NmSGD
from keras_neuromod import bases
from keras_neuromod import outputs as output_sets
from keras_neuromod import zoo
from keras_neuromod.agents import Agent
from reference import scaled

SCALES = output_sets.SCALES
# Keras's defaults of each base, and the heavy-ball SGD a silent Nm-SGD agent is
KERAS_DEFAULTS = {
    "adam": {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    "sgd": {"learning_rate": 0.01, "momentum": 0.9},
}
# The ranges and scales of both sets, as the docs' table lists them.
DECLARED = {
    ("adam", "paper"): {
        "learning_rate": (1e-5, 1e-1, "log"),
        "beta_1": (0.0, 0.999, "linear"),
        "beta_2": (0.5, 0.9999, "linear"),
        "epsilon": (1e-8, 1.0, "log"),
    },
    ("adam", "centred"): {
        "learning_rate": (1e-5, 1e-1, "log"),
        "beta_1": (0.0, 0.99, "complement_log"),
        "beta_2": (0.9, 0.99999, "complement_log"),
        "epsilon": (1e-10, 1e-4, "log"),
    },
    # the centred set with the learning rate within a decade of the default either way
    ("adam", "narrow"): {
        "learning_rate": (1e-4, 1e-2, "log"),
        "beta_1": (0.0, 0.99, "complement_log"),
        "beta_2": (0.9, 0.99999, "complement_log"),
        "epsilon": (1e-10, 1e-4, "log"),
    },
    ("sgd", "paper"): {"learning_rate": (1e-4, 1.0, "log"), "momentum": (0.0, 0.99, "linear")},
    ("sgd", "centred"): {
        "learning_rate": (1e-4, 1.0, "log"),
        "momentum": (0.0, 0.99, "complement_log"),
    },
    ("sgd", "narrow"): {
        "learning_rate": (1e-3, 0.1, "log"),
        "momentum": (0.0, 0.99, "complement_log"),
    },
}
CENTRED_SETS = ["centred", "narrow"]  # the sets whose middles are Keras's defaults
CLASSES = {"adam": NmAdam, "sgd": NmSGD}
# Ranges of each scale, for the mapping checks.
RANGES = {
    "linear": [(0.0, 0.999), (-3.0, 5.0), (0.5, 0.9999)],
    "log": [(1e-5, 1e-1), (1e-10, 1e-4), (1e-4, 1.0), (3e-3, 7.0)],
    "complement_log": [(0.0, 0.99), (0.9, 0.99999), (0.5, 0.999), (-1.0, 0.9)],
}
FRACTIONS = np.array([0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0])


def _columns(declared, names):
    lo = [declared[n][0] for n in names]
    hi = [declared[n][1] for n in names]
    return lo, hi, [declared[n][2] for n in names]


# -- the scales -------------------------------------------------------------------


@pytest.mark.parametrize(
    "scale,lo,hi", [(scale, lo, hi) for scale, pairs in RANGES.items() for lo, hi in pairs]
)
def test_each_scale_maps_as_an_independent_numpy_computation(scale, lo, hi):
    want = np.array([scaled(lo, hi, scale, f) for f in FRACTIONS])
    host = output_sets.values_at(FRACTIONS[:, None], [lo], [hi], [scale], xp=np)[:, 0]
    np.testing.assert_allclose(host, want, rtol=1e-12, atol=1e-15)
    tensor = output_sets.values_at(
        ops.convert_to_tensor(FRACTIONS[:, None], "float32"), [lo], [hi], [scale]
    )
    got = ops.convert_to_numpy(tensor)[:, 0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-7)
    # the ends are the range's own, and the positions invert the values
    assert host[0] == pytest.approx(lo, rel=1e-12, abs=1e-300)
    assert host[-1] == pytest.approx(hi, rel=1e-12, abs=1e-300)
    back = output_sets.positions_of(host[:, None], [lo], [hi], [scale], xp=np)[:, 0]
    np.testing.assert_allclose(back, FRACTIONS, atol=1e-9)
    back = ops.convert_to_numpy(
        output_sets.positions_of(
            ops.convert_to_tensor(want[:, None], "float32"), [lo], [hi], [scale]
        )
    )[:, 0]
    np.testing.assert_allclose(back, FRACTIONS, atol=2e-4)


def test_the_spaces_of_the_scales_are_x_log_x_and_log_one_minus_x():
    values = np.array([[0.3, 0.3, 0.3], [1e-6, 1e-6, 1e-6], [0.999, 0.999, 0.999]])
    scales = ["linear", "log", "complement_log"]
    want = np.stack([values[:, 0], np.log(values[:, 1]), np.log1p(-values[:, 2])], axis=1)
    np.testing.assert_allclose(output_sets.to_space(values, scales, xp=np), want, rtol=1e-12)
    np.testing.assert_allclose(
        output_sets.from_space(want, scales, xp=np), values, rtol=1e-12, atol=1e-15
    )
    # in float32, against the same computation on the float32 values
    tensor = ops.convert_to_tensor(values, "float32")
    rounded = values.astype(np.float32).astype(np.float64)
    want = np.stack([rounded[:, 0], np.log(rounded[:, 1]), np.log1p(-rounded[:, 2])], axis=1)
    np.testing.assert_allclose(
        ops.convert_to_numpy(output_sets.to_space(tensor, scales)), want, rtol=1e-6
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(output_sets.from_space(output_sets.to_space(tensor, scales), scales)),
        values,
        rtol=1e-5,
    )
    # 0 on a log scale and 1 on a complement_log scale stay finite (a collapsed range's ends)
    edges = output_sets.to_space(np.array([[0.0, 1.0]]), ["log", "complement_log"], xp=np)
    assert np.all(np.isfinite(edges))


@pytest.mark.parametrize("scale", SCALES)
def test_a_collapsed_range_gives_exactly_its_value(scale):
    value = {"linear": 0.37, "log": 3e-4, "complement_log": 0.999}[scale]
    for xp in (np, ops):
        got = output_sets.values_at(
            np.array([[0.0], [0.5], [1.0]]), [value], [value], [scale], xp=xp
        )
        expected = value if xp is np else np.float32(value)
        assert np.all(np.asarray(ops.convert_to_numpy(got)) == expected)
    position = output_sets.positions_of(np.array([[value]]), [value], [value], [scale], xp=np)
    assert position[0, 0] == 0.5


def _range(draw, scale):
    """A range of `scale`, at least 1 % wide on it (collapsed ranges are tested apart)."""
    if scale == "linear":
        lo = draw(st.floats(-10.0, 10.0))
        return lo, lo + draw(st.floats(0.01, 20.0))
    if scale == "log":
        lo = 10.0 ** draw(st.floats(-10.0, 3.0))
        return lo, lo * 10.0 ** draw(st.floats(0.01, 8.0))
    gap = 10.0 ** draw(st.floats(-6.0, 0.0))  # 1 - hi
    return 1.0 - gap * 10.0 ** draw(st.floats(0.01, 6.0)), 1.0 - gap


@st.composite
def _ranges(draw):
    scales = draw(st.lists(st.sampled_from(SCALES), min_size=1, max_size=4))
    pairs = [_range(draw, scale) for scale in scales]
    return [p[0] for p in pairs], [p[1] for p in pairs], scales


@settings(max_examples=60, deadline=None)
@given(ranges=_ranges(), fractions=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6))
def test_values_stay_in_their_range_grow_with_the_position_and_round_trip(ranges, fractions):
    lo, hi, scales = ranges
    positions = np.sort(np.array(fractions))[:, None] * np.ones(len(scales))
    values = output_sets.values_at(positions, lo, hi, scales, xp=np)
    assert np.all((values >= np.array(lo)) & (values <= np.array(hi)))
    assert np.all(np.diff(values, axis=0) >= 0)  # monotone in the position
    # position -> value -> position
    back = output_sets.positions_of(values, lo, hi, scales, xp=np)
    np.testing.assert_allclose(back, positions, atol=1e-6)
    # value -> position -> value
    again = output_sets.values_at(back, lo, hi, scales, xp=np)
    np.testing.assert_allclose(again, values, rtol=1e-9, atol=1e-12)
    # in float32 (the optimizers'), values stay in the float32 range and monotone, up to
    # float32 rounding: a backend's vectorized and scalar kernels (exp, log) may round the
    # same position a unit in the last place apart, depending on where it sits in the tensor
    tensor = ops.convert_to_numpy(
        output_sets.values_at(ops.convert_to_tensor(positions, "float32"), lo, hi, scales)
    )
    assert np.all((tensor >= np.float32(lo)) & (tensor <= np.float32(hi)))
    ulps = 4 * np.spacing(np.abs(tensor[1:]))
    assert np.all(np.diff(tensor, axis=0) >= -ulps)


def test_unknown_scales_and_sets_are_refused():
    with pytest.raises(ValueError, match=r"scale must be one of \['linear', 'log'"):
        output_sets.values_at([[0.5]], [0.0], [1.0], ["sqrt"], xp=np)
    with pytest.raises(ValueError, match=r"Unknown output set 'wide'; choose one of"):
        output_sets.get("wide")
    assert output_sets.get("centred").name == output_sets.DEFAULT
    assert output_sets.get("paper").name == output_sets.LEGACY


# -- the sets ------------------------------------------------------------------------


@pytest.mark.parametrize("base,output_set", sorted(DECLARED))
def test_the_bases_declare_every_set(base, output_set):
    assert bases.get(base).output_set(output_set) == DECLARED[base, output_set]


@pytest.mark.parametrize("outputs", CENTRED_SETS)
@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_the_centred_sets_are_centred_on_keras_s_defaults(base, outputs):
    defaults = dict(KERAS_DEFAULTS[base])
    # Keras's own defaults (its SGD has no momentum by default: the heavy ball's 0.9 here)
    config = (keras.optimizers.Adam if base == "adam" else keras.optimizers.SGD)().get_config()
    for name in defaults:
        if name != "momentum":
            assert config[name] == pytest.approx(defaults[name], rel=1e-7)
    assert base == "adam" or config["momentum"] == 0.0
    names = bases.get(base).hyperparameters
    lo, hi, scales = _columns(DECLARED[base, outputs], names)
    expected = np.array([defaults[n] for n in names])
    # on the host (float64): the middle is the default, which rounds to Keras's float32
    middle = output_sets.values_at(np.full(len(names), 0.5), lo, hi, scales, xp=np)
    np.testing.assert_allclose(middle, expected, rtol=1e-12)
    np.testing.assert_array_equal(middle.astype(np.float32), expected.astype(np.float32))
    # in the optimizer (float32): silent outputs (both proteins 0) give the middle, within
    # the few float32 ulps of an exponential of a rounded logarithm
    genome = Genome.random(18, 2 * len(names), 0, rng=0)
    # the sensing set's default, or the one named
    optimizer = CLASSES[base](agent=genome, outputs=None if outputs == "centred" else outputs)
    assert optimizer.output_set.name == outputs
    silent = optimizer._outputs_to_hyperparameters(ops.zeros((3, 2 * len(names))))
    got = ops.convert_to_numpy(silent)
    ulps = np.abs(got.view(np.int32) - expected.astype(np.float32).view(np.int32))
    assert np.all(ulps <= 4), (got, expected)


@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_the_narrow_set_holds_the_learning_rate_within_a_decade_of_the_default(base):
    narrow, centred = (bases.get(base).output_set(name) for name in ("narrow", "centred"))
    default = KERAS_DEFAULTS[base]["learning_rate"]
    lo, hi, scale = narrow["learning_rate"]
    assert scale == "log"
    np.testing.assert_allclose([lo, hi], [default / 10, default * 10], rtol=1e-12)
    assert {k: v for k, v in narrow.items() if k != "learning_rate"} == {
        k: v for k, v in centred.items() if k != "learning_rate"
    }
    # the most extreme outputs an agent can give stay inside the decade
    genome = Genome.random(18, bases.get(base).n_outputs, 0, rng=0)
    optimizer = CLASSES[base](agent=genome, outputs="narrow")
    n = len(narrow)
    extremes = np.zeros((2, 2 * n), np.float32)
    extremes[0, 0::2], extremes[1, 1::2] = 1.0, 1.0  # every first protein on, then every second
    got = ops.convert_to_numpy(optimizer._outputs_to_hyperparameters(ops.array(extremes)))
    np.testing.assert_allclose(sorted(got[:, 0]), [default / 10, default * 10], rtol=1e-5)


def test_the_paper_set_sits_mid_range():
    optimizer = NmAdam(agent=Genome.random(13, 8, 0, rng=0))
    assert optimizer.output_set.name == "paper"  # the paper's input set's default
    got = ops.convert_to_numpy(optimizer._outputs_to_hyperparameters(ops.zeros((1, 8))))[0]
    np.testing.assert_allclose(got, [1e-3, 0.4995, 0.74995, 1e-4], rtol=1e-6)


def _silent(n_inputs, n_outputs, n_regulatory=3, rng=0):
    """A genome whose output proteins of a pair always agree: every position is 0.5.

    Outputs regulate nothing, and an output's dynamics depend on its identifier
    only: both proteins of a pair share one.
    """
    genome = Genome.random(n_inputs, n_outputs, n_regulatory, rng=rng)
    identifiers = np.array(genome.identifiers)
    for first in range(n_inputs, n_inputs + n_outputs, 2):
        identifiers[first + 1] = identifiers[first]
    return genome.replace(identifiers=identifiers)


@pytest.mark.parametrize("outputs", CENTRED_SETS)
@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_a_silent_centred_agent_trains_as_keras_s_optimizer(base, outputs):
    n = bases.get(base).n_outputs
    settings = (
        {"inputs": "sensing"} if outputs == "centred" else {"inputs": "sensing", "outputs": outputs}
    )
    agent = Agent(f"silent_{base}", base, _silent(18, n), settings=settings)
    assert agent.output_set.name == outputs
    optimizer = agent.optimizer()
    reference = keras.optimizers.Adam() if base == "adam" else keras.optimizers.SGD(0.01, 0.9)
    got, want = train_weights(optimizer), train_weights(reference)
    chosen = optimizer.modulation()["hyperparameters"]
    expected = [KERAS_DEFAULTS[base][name] for name in optimizer.HYPERPARAMETERS]
    np.testing.assert_allclose(chosen, np.tile(expected, (len(chosen), 1)), rtol=1e-6)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)
    # the same agent in the paper's set is no Keras default (beta_1 0.4995, ...)
    paper = CLASSES[base](agent=agent.genome, inputs="sensing", outputs="paper")
    train_weights(paper, steps=1)
    assert not np.allclose(paper.modulation()["hyperparameters"][0], expected, rtol=1e-2)


# -- ranges centred on given values ------------------------------------------------------


def _value_inside(draw, lo, hi, scale):
    """A value strictly inside `(lo, hi)` (bounds of infinite reach on its scale's side)."""
    if scale == "log":
        return 10.0 ** draw(st.floats(-9.0, 2.0))
    if scale == "complement_log":
        return 1.0 - 10.0 ** draw(st.floats(-4.9, -0.01))
    return draw(st.floats(max(lo, -5.0) + 1e-3, min(hi, 5.0) - 1e-3))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_centred_ranges_put_the_values_in_the_middle_keep_widths_and_bounds(data):
    base_name = data.draw(st.sampled_from(["adam", "sgd"]))
    outputs = data.draw(st.sampled_from(["paper", *CENTRED_SETS]))
    base = bases.get(base_name)
    declared = base.output_set(outputs)
    names = data.draw(st.lists(st.sampled_from(base.hyperparameters), min_size=1, unique=True))
    values = {}
    for name in names:
        lo, hi, scale = declared[name]
        bound_lo, bound_hi = base.bounds[name]
        values[name] = _value_inside(data.draw, bound_lo, bound_hi, scale)
    centred = base.centred_ranges(values, outputs=outputs)
    for name in base.hyperparameters:
        lo, hi, scale = declared[name]
        if name not in values:
            assert centred[name] == (lo, hi)  # a name left out keeps its range
            continue
        new_lo, new_hi = centred[name]
        bound_lo, bound_hi = base.bounds[name]
        assert bound_lo <= new_lo <= values[name] <= new_hi <= bound_hi
        # the middle, as an independent numpy computation of each scale's space
        space = {"linear": lambda x: x, "log": np.log, "complement_log": lambda x: np.log1p(-x)}
        to = space[scale]
        np.testing.assert_allclose(
            (to(new_lo) + to(new_hi)) / 2, to(values[name]), rtol=1e-9, atol=1e-9
        )
        # as wide as the output set's range, or narrower where a bound is near
        assert abs(to(new_hi) - to(new_lo)) <= abs(to(hi) - to(lo)) * (1 + 1e-9) + 1e-12
        middle = output_sets.values_at([0.5], [new_lo], [new_hi], [scale], xp=np)[0]
        np.testing.assert_allclose(middle, values[name], rtol=1e-9)


def test_centred_ranges_keep_given_widths_narrow_at_bounds_and_refuse_bad_values():
    adam = bases.get("adam")
    got = adam.centred_ranges(
        {"learning_rate": 0.01}, ranges={"learning_rate": (1e-3, 1e-2)}, outputs="narrow"
    )
    np.testing.assert_allclose(got["learning_rate"], (0.01 / 10**0.5, 0.01 * 10**0.5))
    assert got["beta_1"] == adam.ranges("narrow")["beta_1"]
    # beta_2 at 0.9995 on (0.9, 0.99999): two decades of 1 - x either way would pass the
    # bound 0.99999, so the range narrows to 1 - x in [5e-4 / 50, 5e-4 * 50]
    lo, hi = adam.centred_ranges({"beta_2": 0.9995}, outputs="centred")["beta_2"]
    np.testing.assert_allclose((1 - lo, 1 - hi), (5e-4 * 50, 1e-5), rtol=1e-9)
    sgd = bases.get("sgd")
    # centred on its own middle, a range stays where it was
    got = sgd.centred_ranges({"momentum": 0.9}, outputs="centred")
    np.testing.assert_allclose(got["momentum"], sgd.ranges("centred")["momentum"], atol=1e-12)
    for values, message in (
        ({"lr": 0.01}, "Unknown hyperparameter"),
        ({"learning_rate": 0.0}, "inside"),  # no middle of a log scale
        ({"learning_rate": float("nan")}, "finite"),
        ({"beta_2": 1.0}, "inside"),
        ({"beta_1": "0.9"}, "number"),
    ):
        with pytest.raises(ValueError, match=message):
            adam.centred_ranges(values, outputs="centred")


@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_a_silent_agent_on_centred_ranges_trains_as_keras_with_the_values(base):
    values = (
        {"learning_rate": 0.0095, "beta_1": 0.8, "beta_2": 0.9995, "epsilon": 2.3e-6}
        if base == "adam"
        else {"learning_rate": 0.13, "momentum": 0.72}
    )
    ranges = bases.get(base).centred_ranges(values, outputs="narrow")
    settings = {"inputs": "sensing", "outputs": "narrow"}
    agent = Agent(f"silent_{base}", base, _silent(18, bases.get(base).n_outputs), ranges, settings)
    optimizer = agent.optimizer()
    reference = (keras.optimizers.Adam if base == "adam" else keras.optimizers.SGD)(**values)
    got, want = train_weights(optimizer), train_weights(reference)
    chosen = optimizer.modulation()["hyperparameters"]
    expected = [values[name] for name in optimizer.HYPERPARAMETERS]
    np.testing.assert_allclose(chosen, np.tile(expected, (len(chosen), 1)), rtol=1e-5)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# -- the agent format, the optimizers, round trips --------------------------------------


def test_an_agent_names_its_output_set_and_files_without_one_read_by_their_inputs():
    sensing = Genome.random(18, 8, 2, rng=1)
    paper = Genome.random(13, 8, 2, rng=1)
    named = Agent("named", "adam", paper, settings={"outputs": "centred"})
    again = Agent.from_dict(json.loads(json.dumps(named.to_dict())))
    assert again.settings["outputs"] == "centred" and again == named
    assert again.output_set.name == "centred"
    optimizer = NmAdam(agent=again)
    assert optimizer.output_set.name == "centred" and optimizer.input_set.name == "paper"
    assert optimizer.scales["beta_1"] == "complement_log"
    # without the setting: the paper's for the paper's inputs (every shipped agent) ...
    assert Agent("old", "adam", paper).output_set.name == "paper"
    assert NmAdam(agent=Agent("old", "adam", paper)).output_set.name == "paper"
    for name in zoo.list_agents():
        shipped = zoo.load(name["name"])
        assert "outputs" not in shipped.settings and shipped.output_set.name == "paper"
        assert shipped.optimizer().output_set.name == "paper"
    # ... and the centred set for any other
    agent = Agent("new", "adam", sensing, settings={"inputs": "sensing"})
    assert agent.output_set.name == NmAdam(agent=agent).output_set.name == "centred"
    # the argument wins over the agent's setting
    assert NmAdam(agent=agent, outputs="paper").output_set.name == "paper"
    assert NmAdam(agent=paper).output_set.name == "paper"  # a 13-input genome
    assert NmAdam(agent=sensing).output_set.name == "centred"  # an 18-input genome


def test_ranges_keep_the_output_set_s_scales_and_are_checked_against_them():
    genome = Genome.random(13, 8, 1, rng=0)
    optimizer = NmAdam(agent=genome, outputs="centred", ranges={"beta_1": (0.5, 0.999)})
    assert optimizer.ranges["beta_1"] == (0.5, 0.999) and optimizer.scales["beta_1"] == (
        "complement_log"
    )
    assert optimizer.ranges["beta_2"] == (0.9, 0.99999)  # the set's default
    value = ops.convert_to_numpy(optimizer._outputs_to_hyperparameters(ops.zeros((1, 8))))[0, 1]
    assert value == pytest.approx(1.0 - np.sqrt(0.5 * 0.001), rel=1e-6)
    # a range reaching 1 cannot be mapped on complement_log, one reaching 0 not on log
    bad = [
        ({"beta_1": (0.5, 0.99999)}, "paper", None),  # linear: fine
        ({"beta_2": (0.9, 0.99999)}, "centred", None),
        ({"momentum": (0.5, 1.0)}, "centred", r"\(complement_log\) and needs hi < 1"),
        ({"epsilon": (0.0, 1e-4)}, "centred", "log space and needs lo > 0"),
        ({"momentum": (1.0, 1.0)}, "centred", None),  # collapsed: any scale
    ]
    for ranges, output_set, match in bad:
        base = "sgd" if "momentum" in ranges else "adam"
        cls = CLASSES[base]
        genome = Genome.random(13, bases.get(base).n_outputs, 1, rng=0)
        if match is None:
            cls(agent=genome, ranges=ranges, outputs=output_set)
            Agent("a", base, genome, ranges=ranges, settings={"outputs": output_set})
            continue
        with pytest.raises(ValueError, match=match) as from_optimizer:
            cls(agent=genome, ranges=ranges, outputs=output_set)
        with pytest.raises(ValueError, match=match) as from_agent:
            Agent("a", base, genome, ranges=ranges, settings={"outputs": output_set})
        assert str(from_agent.value) == f"Agent 'ranges': {from_optimizer.value}"
    # the same momentum range is fine in the paper's set, whose momentum is linear
    NmSGD(agent=Genome.random(13, 4, 1, rng=0), ranges={"momentum": (0.5, 1.0)})


def test_unknown_output_sets_are_refused_naming_the_field():
    genome = Genome.random(13, 8, 1, rng=0)
    with pytest.raises(ValueError, match="Agent 'settings' entry 'outputs': Unknown output set"):
        Agent("a", "adam", genome, settings={"outputs": "wide"})
    with pytest.raises(ValueError, match="Agent 'settings' entry 'outputs': Unknown output set"):
        Agent("a", "adam", genome, settings={"outputs": None})
    with pytest.raises(ValueError, match="Unknown output set 'wide'"):
        NmAdam(agent=genome, outputs="wide")
    data = Agent("a", "adam", genome).to_dict()
    data["settings"]["outputs"] = 3
    with pytest.raises(ValueError, match="'outputs': Unknown output set 3"):
        Agent.from_dict(data)


def test_config_and_model_save_round_trip_keep_the_output_set(tmp_path):
    optimizer = NmSGD(agent=_silent(18, 4), inputs="sensing", outputs="paper")
    config = optimizer.get_config()
    assert config["outputs"] == "paper" and config["inputs"] == "sensing"
    assert NmSGD.from_config(config).output_set.name == "paper"
    # a configuration saved before output sets mapped with the paper's scales
    legacy = {k: v for k, v in NmSGD(agent=_silent(18, 4)).get_config().items() if k != "outputs"}
    assert NmSGD.from_config(legacy).output_set.name == "paper"

    centred = NmAdam(agent=_silent(18, 8), inputs="sensing")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=centred, loss="mse")
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    model.fit(x, x[:, :2], batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.optimizer.output_set.name == "centred"
    assert loaded.optimizer.scales == centred.scales
    model.train_on_batch(x[:8], x[:8, :2])
    loaded.train_on_batch(x[:8], x[:8, :2])
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_an_optimizer_refuses_an_agent_of_another_output_set():
    genome = Genome.random(18, 8, 1, rng=0)
    optimizer = NmAdam(agent=genome, inputs="sensing", max_regulatory=4)  # centred
    optimizer.set_genome(Genome.random(18, 8, 2, rng=1))  # a bare genome keeps the set
    optimizer.set_genome(Agent("c", "adam", genome, settings={"inputs": "sensing"}))
    other = Agent("p", "adam", genome, settings={"inputs": "sensing", "outputs": "paper"})
    with pytest.raises(ValueError, match="'paper' output set; this NmAdam was made for 'centred'"):
        optimizer.set_genome(other)
    assert NmAdam(agent=other).output_set.name == "paper"


# -- evolution, the static search, the command line ------------------------------------


def test_tasks_carry_their_output_set_and_old_ones_read_as_the_papers():
    from keras_neuromod.evolution import FitnessTask
    from keras_neuromod.evolution import SuiteTask
    from keras_neuromod.evolution.fitness import placeholder_optimizer

    assert FitnessTask().outputs == "paper"  # the paper's inputs
    assert FitnessTask(inputs="sensing").outputs == "centred"
    assert FitnessTask(outputs="centred").outputs == "centred"
    task = FitnessTask(base="sgd", inputs="sensing", outputs="paper")
    assert FitnessTask.from_dict(task.to_dict()) == task
    assert placeholder_optimizer(task).output_set.name == "paper"
    before = {k: v for k, v in FitnessTask(inputs="sensing").to_dict().items() if k != "outputs"}
    assert FitnessTask.from_dict(before).outputs == "paper"

    suite = SuiteTask(tasks=("breast_cancer",), instances=1)
    assert (suite.inputs, suite.outputs) == ("sensing", "centred")
    assert SuiteTask(tasks=("breast_cancer",), inputs="paper").outputs == "centred"
    assert SuiteTask(tasks=("breast_cancer",), inputs="paper", outputs=None).outputs == "paper"
    assert SuiteTask.from_dict(suite.to_dict()) == suite
    assert placeholder_optimizer(suite).output_set.name == "centred"
    before = {k: v for k, v in suite.to_dict().items() if k not in ("inputs", "outputs")}
    assert SuiteTask.from_dict(before).outputs == "paper"
    with pytest.raises(ValueError, match="Unknown output set"):
        SuiteTask(tasks=("breast_cancer",), outputs="wide")
    with pytest.raises(ValueError, match="needs hi < 1"):
        SuiteTask(tasks=("breast_cancer",), ranges={"momentum": (0.5, 1.0)}, base="sgd")


def test_the_static_search_maps_positions_with_the_task_s_output_set():
    from keras_neuromod.evolution.static import FixedHyperparameters
    from keras_neuromod.evolution.static import StaticSearch

    centre = FixedHyperparameters.at("adam", [0.5] * 4)  # centred by default
    assert centre.values == {
        "learning_rate": 0.0010000000474974513,
        "beta_1": 0.8999999761581421,
        "beta_2": 0.9990000128746033,
        "epsilon": 1.0000000116860974e-07,
    }
    paper = FixedHyperparameters.at("adam", [0.5] * 4, outputs="paper")
    assert paper.values["beta_1"] == pytest.approx(0.4995)
    search = StaticSearch("sgd", None, 4, np.random.default_rng(0), outputs="paper")
    assert search.candidate([0.5, 0.5]).values["momentum"] == pytest.approx(0.495)
    again = StaticSearch.from_dict(search.to_dict(), "sgd", None, 4, outputs="paper")
    assert again.outputs == "paper"
    assert StaticSearch("sgd", None, 4, np.random.default_rng(0)).candidate(
        [0.5, 0.5]
    ).values == pytest.approx({"learning_rate": 0.01, "momentum": 0.9})


def test_evolve_s_command_line_reads_and_records_the_output_set():
    from keras_neuromod.cli.evolve import parse_args
    from keras_neuromod.cli.evolve import reproducing_command

    dataset = parse_args(["--task", "digits"])
    assert (dataset.inputs, dataset.outputs) == ("paper", "paper")
    assert "--outputs" not in reproducing_command(dataset, 3)
    centred = parse_args(["--task", "digits", "--outputs", "centred"])
    assert "--outputs centred" in reproducing_command(centred, 3)
    assert parse_args(["--task", "digits", "--inputs", "sensing"]).outputs == "centred"
    suite = parse_args(["--suite"])
    assert (suite.inputs, suite.outputs, suite.task_spec.outputs) == (
        "sensing",
        "centred",
        "centred",
    )
    assert "--inputs sensing --outputs centred" in reproducing_command(suite, 3)
    paper = parse_args(["--suite", "--inputs", "paper"])
    assert paper.task_spec.outputs == "paper"
    assert "--outputs paper" in reproducing_command(paper, 3)
    with pytest.raises(SystemExit):
        parse_args(["--outputs", "wide"])


def test_evolve_s_ranges_flag_sets_the_suite_s_ranges_and_refuses_bad_ones(capsys):
    from keras_neuromod.cli.evolve import parse_args
    from keras_neuromod.cli.evolve import reproducing_command

    argv = ["--suite", "--ranges", "learning_rate=1e-4:3e-3", "beta_1=0.5:0.95"]
    suite = parse_args(argv)
    expected = {"learning_rate": (1e-4, 3e-3), "beta_1": (0.5, 0.95)}
    assert suite.ranges == suite.task_spec.ranges == expected
    command = reproducing_command(suite, 3)
    assert "--ranges learning_rate=0.0001:0.003 beta_1=0.5:0.95 " in command
    assert parse_args(command.split()[2:]).task_spec == suite.task_spec
    assert parse_args(["--suite"]).task_spec.ranges is None
    assert "--ranges" not in reproducing_command(parse_args(["--suite"]), 3)
    for bad, message in (
        (["learning_rate=1e-4"], "a range is NAME=LO:HI"),
        (["lr=1e-4:1e-2"], "Unknown hyperparameter"),
        (["learning_rate=1e-2:1e-4"], "lo <= hi"),
        (["learning_rate=0:1e-2"], "needs lo > 0"),  # a log scale
        (["beta_1=0.5:1"], "leaves the valid interval"),
        (["momentum=0.5:1"], "needs hi < 1"),  # centred: complement_log
        (["learning_rate=1e-4:1e-2", "learning_rate=1e-3:1e-2"], "twice"),
    ):
        base = ["--base", "sgd"] if bad[0].startswith("momentum") else []
        with pytest.raises(SystemExit) as exit_info:
            parse_args(["--suite", *base, "--ranges", *bad])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    # on the paper's output set beta_1 is linear: a range up to 1 is its to take
    assert parse_args(["--ranges", "beta_1=0.5:0.999"]).ranges == {"beta_1": (0.5, 0.999)}


def test_evolve_s_centre_on_flag_centres_the_ranges_on_a_static_agent(tmp_path, capsys):
    from keras_neuromod.cli.evolve import parse_args
    from keras_neuromod.evolution.static import FixedHyperparameters
    from keras_neuromod.evolution.static import static_agent

    values = {"learning_rate": 0.0095, "beta_1": 0.9, "beta_2": 0.9995, "epsilon": 2.3e-6}
    fixed = static_agent(FixedHyperparameters("adam", values), "static_adam_general")
    path = zoo.save(fixed, str(tmp_path / "static.json"))
    argv = ["--suite", "--outputs", "narrow", "--centre-on", path]
    # --ranges gives the widths, --centre-on the middles
    args = parse_args([*argv, "--ranges", "learning_rate=1e-3:1e-2"])
    expected = bases.get("adam").centred_ranges(
        values, {"learning_rate": (1e-3, 1e-2)}, outputs="narrow"
    )
    assert args.ranges == args.task_spec.ranges == expected
    assert args.centred_on == {"agent": "static_adam_general", "values": values}
    assert parse_args(["--suite"]).centred_on is None
    silent = Agent("loose", "adam", _silent(18, 8), settings={"inputs": "sensing"})
    loose = zoo.save(silent, str(tmp_path / "loose.json"))
    for bad, message in (
        (["--suite", "--base", "sgd", "--centre-on", path], "of the adam base"),
        (["--suite", "--centre-on", loose], "not an agent of fixed values"),
        (["--suite", "--centre-on", str(tmp_path / "missing.json")], "neither an agent file"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(bad)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_zoo_show_gives_the_output_set_ranges_and_scales(capsys):
    from keras_neuromod.cli.zoo import show_agent

    show_agent("nm_adam_digits")
    shown = capsys.readouterr().out
    assert "output set: paper, read by default" in shown
    for name, (lo, hi, scale) in DECLARED["adam", "paper"].items():
        line = next(row for row in shown.splitlines() if row.strip().startswith(name))
        assert scale in line and f"{lo:.6g}" in line and f"{hi:.6g}" in line


def test_a_checkpoint_s_task_written_before_output_sets_compares_as_the_paper_s():
    from keras_neuromod.evolution import FitnessTask
    from keras_neuromod.evolution.engine import _normalised_task

    task = FitnessTask(dataset="digits", epochs=3)
    before = {k: v for k, v in task.to_dict().items() if k not in ("inputs", "outputs")}
    assert _normalised_task(before) == task.to_dict()
    assert _normalised_task(task.to_dict()) == task.to_dict()
    sensing = FitnessTask(dataset="digits", epochs=3, inputs="sensing")  # centred
    assert _normalised_task({**before, "inputs": "sensing"}) != sensing.to_dict()
    assert _normalised_task({"dataset": "nowhere"}) == {"dataset": "nowhere"}
