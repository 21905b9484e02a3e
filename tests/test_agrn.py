"""The AGRN: equations against a float64 numpy reference, invariants, JSON."""

import json

import numpy as np
import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_neuromod import agrn
from keras_neuromod.agrn import Genome
from reference import reference_run


def full_state_run(genome, inputs, capacity=None):
    """All concentrations after each input, through the package's batched ops."""
    from keras import ops

    packed = agrn.pack(genome, capacity)
    weights, updatable = agrn.grn_matrices(
        packed.tags,
        packed.active,
        packed.beta,
        packed.delta,
        packed.n_inputs,
        packed.n_outputs,
    )
    state = agrn.grn_reset(packed.active, packed.n_inputs, inputs.shape[1])
    state = agrn.grn_run_steps(state, weights, updatable, 25)
    states = []
    for x in inputs:
        state = agrn.grn_set_inputs(state, ops.convert_to_tensor(x, "float32"))
        state = agrn.grn_step(state, weights, updatable)
        states.append(ops.convert_to_numpy(state))
    return np.stack(states)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("shape", [(13, 4, 1), (13, 8, 5), (3, 2, 0)])
def test_run_matches_float64_reference(seed, shape):
    rng = np.random.default_rng(seed)
    genome = Genome.random(*shape, rng=rng)
    inputs = rng.random((120, 3, shape[0]))
    expected = reference_run(genome, inputs)
    got = agrn.run(genome, inputs)
    assert got.shape == (120, 3, shape[1])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_steps_per_input_and_warmup_match_reference():
    rng = np.random.default_rng(7)
    genome = Genome.random(4, 2, 3, rng=rng)
    inputs = rng.random((30, 2, 4))
    expected = reference_run(genome, inputs, warmup_steps=5, steps_per_input=3)
    got = agrn.run(genome, inputs, warmup_steps=5, steps_per_input=3)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_update_is_synchronous_not_in_place():
    """A Gauss-Seidel (in-place) update drifts from the synchronous result."""
    rng = np.random.default_rng(11)
    genome = Genome.random(3, 2, 4, rng=rng)
    inputs = rng.random((60, 1, 3))
    synchronous = reference_run(genome, inputs)
    got = agrn.run(genome, inputs)
    np.testing.assert_allclose(got, synchronous, atol=1e-5)
    # the reference itself is sensitive to the update order: an in-place loop
    # on this genome differs, so the test above can tell the two apart.
    in_place = _in_place_run(genome, inputs)
    assert np.max(np.abs(in_place - synchronous)) > 1e-4


def _in_place_run(genome, inputs):
    n_in, n_out, size = genome.n_inputs, genome.n_outputs, genome.size
    regulators = list(range(n_in)) + list(range(n_in + n_out, size))
    sig = np.exp(-genome.beta * np.abs(genome.enhancers[:, None] - genome.identifiers[None]))
    sig -= np.exp(-genome.beta * np.abs(genome.inhibitors[:, None] - genome.identifiers[None]))
    c = np.full(size, 1.0 / size)
    c[:n_in] = 0
    out = []
    for t in range(-25, len(inputs)):
        if t >= 0:
            c[:n_in] = inputs[t, 0]
        for k in range(n_in, size):
            c[k] = max(0.0, c[k] + genome.delta / size * sum(c[j] * sig[j, k] for j in regulators))
        c[n_in:] /= c[n_in:].sum()
        if t >= 0:
            out.append(c[n_in : n_in + n_out].copy())
    return np.array(out)[:, None, :]


genome_shapes = st.tuples(st.integers(0, 13), st.integers(1, 8), st.integers(0, 6))


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(shape=genome_shapes, seed=st.integers(0, 2**32 - 1), pad=st.integers(0, 7))
@example(shape=(0, 2, 5), seed=387, pad=1)  # float32 rounding grows to 5e-6 over 12 steps
def test_invariants_and_padding(shape, seed, pad):
    rng = np.random.default_rng(seed)
    genome = Genome.random(*shape, rng=rng)
    n_in, n_out = shape[0], shape[1]
    inputs = rng.random((12, 2, n_in)).astype(np.float32)
    # some copies see the extremes of the input range
    inputs[::3] = np.round(inputs[::3])
    states = full_state_run(genome, inputs)
    assert np.all(np.isfinite(states))
    assert np.all(states >= 0)
    outputs = states[..., n_in : n_in + n_out]
    assert np.all(outputs <= 1.0 + 1e-6)
    # outputs plus regulatory proteins sum to 1, or are all zero (sum 0 is
    # left as computed)
    sums = states[..., n_in:].sum(-1)
    assert np.all((np.abs(sums - 1.0) < 1e-5) | (sums == 0.0))
    # inputs are never changed by a step
    np.testing.assert_array_equal(states[..., :n_in], inputs)
    # padding to a larger capacity changes nothing but float32 rounding (wider sums
    # round in another order, and 12 steps compound it), and padded proteins stay 0
    padded = full_state_run(genome, inputs, capacity=genome.size + pad)
    np.testing.assert_allclose(padded[..., : genome.size], states, rtol=0, atol=2e-5)
    assert np.all(padded[..., genome.size :] == 0.0)


@settings(max_examples=25, deadline=None)
@given(shape=genome_shapes, seed=st.integers(0, 2**32 - 1))
def test_json_and_dict_round_trip(shape, seed):
    genome = Genome.random(*shape, rng=np.random.default_rng(seed))
    again = Genome.from_json(genome.to_json())
    assert again == genome
    assert Genome.from_dict(json.loads(json.dumps(genome.to_dict()))) == genome
    for name in ("identifiers", "enhancers", "inhibitors"):
        np.testing.assert_array_equal(getattr(again, name), getattr(genome, name))
    assert again.beta == genome.beta and again.delta == genome.delta


def test_random_is_seeded():
    a = Genome.random(13, 8, 3, rng=np.random.default_rng(5))
    b = Genome.random(13, 8, 3, rng=np.random.default_rng(5))
    c = Genome.random(13, 8, 3, rng=np.random.default_rng(6))
    assert a == b and a != c
    assert Genome.random(13, 8, 3, rng=5) == a


def test_genome_is_immutable():
    genome = Genome.random(2, 2, 1, rng=0)
    with pytest.raises(AttributeError):
        genome.beta = 1.0
    with pytest.raises(ValueError):
        genome.identifiers[0] = 0.5


def _valid():
    return Genome.random(2, 2, 1, rng=0).to_dict()


def _with(**changes):
    data = _valid()
    data.update(changes)
    return data


BAD_GENOMES = [
    (_with(n_inputs=-1), "n_inputs"),
    (_with(n_outputs=0), "n_outputs"),
    (_with(n_regulatory=1.5), "n_regulatory"),
    (_with(n_regulatory="1"), "n_regulatory"),
    (_with(n_inputs=True), "n_inputs"),
    # one rule for integers (keras_neuromod._fields.integer): 2.0 is a float, not a count
    (_with(n_inputs=2.0), "'n_inputs' must be an integer, got 2.0"),
    (_with(n_outputs=np.float64(2.0)), "n_outputs"),
    (_with(identifiers=[0.1, 0.2]), "identifiers"),
    (_with(enhancers=[0.1, 0.2, 0.3, 0.4, 1.5]), "enhancers"),
    (_with(inhibitors=[0.1, 0.2, 0.3, 0.4, -0.01]), "inhibitors"),
    (_with(inhibitors=[0.1, 0.2, 0.3, 0.4, float("nan")]), "inhibitors"),
    (_with(identifiers=[0.1, 0.2, "a", 0.4, 0.5]), "identifiers"),
    (_with(identifiers=[[0.1], [0.2], [0.3], [0.4], [0.5]]), "identifiers"),
    (_with(identifiers=[0.1, 0.2, "0.3", 0.4, 0.5]), "'identifiers' must be a list of numbers"),
    (_with(enhancers=[0.1, 0.2, True, 0.4, 0.5]), "'enhancers' must be a list of numbers"),
    (_with(enhancers=np.array(["0.1"] * 5)), "'enhancers' must be a list of numbers"),
    (_with(inhibitors="0.1 0.2 0.3 0.4 0.5"), "'inhibitors' must be a list of numbers"),
    (_with(beta=0.01), "beta"),
    (_with(beta=float("inf")), "beta"),
    (_with(delta=2.5), "delta"),
    (_with(delta="1"), "delta"),
    (_with(delta=False), "'delta' must be a number"),
    (_with(extra=1), "extra"),
    ({k: v for k, v in _valid().items() if k != "delta"}, "delta"),
    ([1, 2, 3], "JSON object"),
]


@pytest.mark.parametrize("data,field", BAD_GENOMES)
def test_bad_genomes_are_refused_naming_the_field(data, field):
    with pytest.raises(ValueError, match=field):
        Genome.from_dict(data)


def test_counts_follow_the_integer_rule_of_the_other_loaders():
    # the genome's counts accept what `_fields.integer` accepts, and refuse what it refuses
    from keras_neuromod import _fields

    for value in [2, np.int64(2), 2.0, np.float32(2.0), True, "2", None, 2.5]:
        try:
            _fields.integer(value, "x")
        except ValueError:
            with pytest.raises(ValueError, match="'n_inputs' must be an integer"):
                Genome.from_dict(_with(n_inputs=value))
        else:
            assert Genome.from_dict(_with(n_inputs=value)).n_inputs == 2
    # the tags and scalars accept numpy numbers and ints
    genome = Genome.from_dict(_with(identifiers=[0, 1, np.float32(0.5), 0.25, 1], beta=1))
    assert genome.identifiers.tolist() == [0.0, 1.0, 0.5, 0.25, 1.0] and genome.beta == 1.0


@pytest.mark.parametrize("text", ["", "{", "nul", '{"n_inputs": 1,}'])
def test_malformed_json_is_refused(text):
    with pytest.raises(ValueError, match="genome JSON is not valid JSON"):
        Genome.from_json(text)


def test_nan_in_json_is_refused():
    text = json.dumps(_with(beta=float("nan")))
    assert "NaN" in text
    with pytest.raises(ValueError, match="beta"):
        Genome.from_json(text)


def test_run_refuses_bad_inputs():
    genome = Genome.random(3, 2, 1, rng=0)
    with pytest.raises(ValueError, match=r"\[T, copies, 3\]"):
        agrn.run(genome, np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        agrn.run(genome, np.full((2, 1, 3), 1.5))
    with pytest.raises(ValueError, match="warmup_steps"):
        agrn.run(genome, np.zeros((2, 1, 3)), warmup_steps=-1)
    with pytest.raises(TypeError):
        agrn.run(genome.to_dict(), np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="capacity"):
        agrn.run(genome, np.zeros((2, 1, 3)), capacity=3)


class _Untouchable:
    """Fails the test if anything tries to read it as tags."""

    def __len__(self):
        raise AssertionError("the tags were read")

    def __iter__(self):
        raise AssertionError("the tags were read")

    def __array__(self, *args, **kwargs):
        raise AssertionError("the tags were read")


def test_oversized_genomes_are_refused_before_anything_is_allocated():
    tags = _Untouchable()
    for counts in [(13, 8, 30000), (10**30, 1, 0), (13, 8, agrn.MAX_PROTEINS - 20)]:
        with pytest.raises(ValueError, match="MAX_PROTEINS"):
            Genome(*counts, tags, tags, tags, 1.0, 1.0)
        with pytest.raises(ValueError, match="MAX_PROTEINS"):
            Genome.random(*counts, rng=0)
    # a genome at the cap is fine
    assert Genome.random(13, 8, agrn.MAX_PROTEINS - 21, rng=0).size == agrn.MAX_PROTEINS
    # a tag list of the wrong length is refused without being converted
    with pytest.raises(ValueError, match="'identifiers' has 100000 values"):
        Genome(1, 1, 0, [_Untouchable()] * 100000, [0.5] * 2, [0.5] * 2, 1.0, 1.0)
    with pytest.raises(ValueError, match="too large for a float"):
        Genome(1, 1, 0, [0.5] * 2, [0.5] * 2, [0.5] * 2, 10**400, 1.0)
    with pytest.raises(ValueError, match="'enhancers' must be a list of numbers"):
        Genome(1, 1, 0, [0.5] * 2, [10**400, 0.5], [0.5] * 2, 1.0, 1.0)


def test_the_padded_capacity_is_capped_naming_max_regulatory():
    from keras_neuromod import NmAdam

    genome = Genome.random(13, 8, 2, rng=0)
    assert agrn.pack(genome, agrn.MAX_PROTEINS).capacity == agrn.MAX_PROTEINS
    with pytest.raises(ValueError, match="max_regulatory may be at most 1003"):
        agrn.pack(genome, agrn.MAX_PROTEINS + 1)
    with pytest.raises(ValueError, match="max_regulatory"):
        NmAdam(agent=genome, max_regulatory=10**8)
    with pytest.raises(ValueError, match="integer"):
        agrn.pack(genome, 30.5)


def test_genome_json_larger_than_the_cap_is_refused_before_parsing(monkeypatch):
    with pytest.raises(ValueError, match="nested too deeply"):
        Genome.from_json("[" * 100000)
    text = Genome.random(3, 2, 1, rng=0).to_json()
    monkeypatch.setattr(agrn, "MAX_AGENT_BYTES", len(text) - 1)
    with pytest.raises(ValueError, match="larger than"):
        Genome.from_json(text)


def test_run_is_the_agrn_module_s_not_the_package_s():
    import keras_neuromod

    assert keras_neuromod.agrn.run is agrn.run
    assert not hasattr(keras_neuromod, "run") and "run" not in keras_neuromod.__all__
