"""The CMA-ES search of genome tags (`evolve(algorithm="cmaes")`).

Positions and genomes (a bijection, checked with hypothesis); the silent start,
against Keras's optimizer; small runs on a cheap fitness (serial backend):
progress, determinism, resumption, malformed checkpoints; the command, with
real trainings.
"""

import json
import os

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from helpers import TIMINGS
from helpers import TINY_EVOLVE
from helpers import logbook_records
from helpers import toy_evolution
from helpers import train_weights
from keras_neuromod import zoo
from keras_neuromod.agrn import BETA_RANGE
from keras_neuromod.agrn import DELTA_RANGE
from keras_neuromod.agrn import MAX_PROTEINS
from keras_neuromod.agrn import Genome
from keras_neuromod.evolution import GRNEATConfig
from keras_neuromod.evolution.cmaes import DEFAULT_REGULATORY
from keras_neuromod.evolution.cmaes import TagSearch
from keras_neuromod.evolution.cmaes import dimension
from keras_neuromod.evolution.cmaes import genome_at
from keras_neuromod.evolution.cmaes import position_of
from keras_neuromod.evolution.cmaes import silent_genome
from keras_neuromod.io import read_json

# the toy fitness's agents: the core paper's 13 inputs, Nm-Adam's 8 outputs
N_INPUTS, N_OUTPUTS = 13, 8


def _search(**options):
    """A serial CMA-ES run of 6 genomes with 2 regulatory proteins, on `toy_fitness`."""
    defaults = dict(population=6, generations=3, seed=7, algorithm="cmaes", cmaes_regulatory=2)
    return toy_evolution(**{**defaults, **options})


def _stream(seed):
    """The search's generator: the first child of the run's seed sequence."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def _without_timings(checkpoint):
    for record in checkpoint["logbook"]:
        for key in TIMINGS:
            record.pop(key)
    return checkpoint


# -- positions and genomes ---------------------------------------------------------

COUNTS = dict(
    n_inputs=st.integers(0, 20), n_outputs=st.integers(1, 10), n_regulatory=st.integers(0, 12)
)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), **COUNTS)
def test_a_genome_is_a_position_in_the_box_and_back(seed, n_inputs, n_outputs, n_regulatory):
    genome = Genome.random(n_inputs, n_outputs, n_regulatory, rng=seed)
    position = position_of(genome)
    size = n_inputs + n_outputs + n_regulatory
    assert position.shape == (dimension(n_inputs, n_outputs, n_regulatory),) == (3 * size + 2,)
    assert np.all((position >= 0.0) & (position <= 1.0))
    np.testing.assert_array_equal(position[:size], genome.identifiers)
    np.testing.assert_array_equal(position[2 * size : 3 * size], genome.inhibitors)
    again = genome_at(position, n_inputs, n_outputs, n_regulatory)
    np.testing.assert_array_equal(again.tags, genome.tags)
    assert again.beta == pytest.approx(genome.beta, rel=1e-14)
    assert again.delta == pytest.approx(genome.delta, rel=1e-14)
    np.testing.assert_allclose(position_of(again), position, rtol=0, atol=1e-14)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), **COUNTS)
def test_every_position_is_a_genome_clipped_to_the_box(data, n_inputs, n_outputs, n_regulatory):
    d = dimension(n_inputs, n_outputs, n_regulatory)
    values = st.floats(-0.5, 1.5, allow_nan=False)
    position = np.array(data.draw(st.lists(values, min_size=d, max_size=d)))
    genome = genome_at(position, n_inputs, n_outputs, n_regulatory)
    assert (genome.n_inputs, genome.n_outputs, genome.n_regulatory) == (
        n_inputs,
        n_outputs,
        n_regulatory,
    )
    inside = np.clip(position, 0.0, 1.0)
    np.testing.assert_array_equal(genome.tags.reshape(-1), inside[:-2])
    for value, fraction, (lo, hi) in [
        (genome.beta, inside[-2], BETA_RANGE),
        (genome.delta, inside[-1], DELTA_RANGE),
    ]:
        assert lo <= value <= hi
        assert value == pytest.approx(lo + fraction * (hi - lo), rel=1e-14)
    np.testing.assert_allclose(position_of(genome), inside, rtol=0, atol=1e-14)


def test_the_box_s_corners_are_the_ranges_ends_and_bad_positions_are_refused():
    d = dimension(2, 2, 1)
    low, high = genome_at(np.zeros(d), 2, 2, 1), genome_at(np.ones(d), 2, 2, 1)
    assert (low.beta, low.delta) == (BETA_RANGE[0], DELTA_RANGE[0])
    assert (high.beta, high.delta) == (BETA_RANGE[1], DELTA_RANGE[1])
    with pytest.raises(ValueError, match=f"must be {d} numbers, got shape \\[{d - 1}\\]"):
        genome_at(np.zeros(d - 1), 2, 2, 1)
    with pytest.raises(ValueError, match="finite"):
        genome_at([np.nan] * d, 2, 2, 1)
    with pytest.raises(ValueError, match="n_regulatory must be an integer"):
        genome_at(np.zeros(d), 2, 2, -1)
    with pytest.raises(ValueError, match="MAX_PROTEINS"):
        dimension(13, 8, MAX_PROTEINS)
    with pytest.raises(TypeError, match="Genome"):
        position_of(np.zeros(d))


# -- the silent start ---------------------------------------------------------------


def test_the_search_starts_at_a_silent_genome_drawn_from_its_own_stream():
    search = TagSearch(N_INPUTS, N_OUTPUTS, 3, 6, _stream(7))
    start = genome_at(search.centroid, N_INPUTS, N_OUTPUTS, 3)
    outputs = start.identifiers[N_INPUTS : N_INPUTS + N_OUTPUTS]
    # both proteins of each pair share one identifier; the pairs differ
    np.testing.assert_array_equal(outputs[0::2], outputs[1::2])
    assert len(set(outputs[0::2])) == N_OUTPUTS // 2
    # it is the stream's first draw: the random genome, its pairs' identifiers made one
    drawn = Genome.random(N_INPUTS, N_OUTPUTS, 3, rng=_stream(7))
    assert not np.array_equal(drawn.identifiers, start.identifiers)
    kept = np.ones(start.size, bool)
    kept[N_INPUTS + 1 : N_INPUTS + N_OUTPUTS : 2] = False
    np.testing.assert_array_equal(start.identifiers[kept], drawn.identifiers[kept])
    np.testing.assert_array_equal(start.tags[1:], drawn.tags[1:])
    assert search.sigma == 0.1 and search.lambda_ == 6 and search.mu == 3


def test_a_silent_genome_trains_as_keras_s_adam_and_the_random_one_does_not():
    from keras_neuromod.agents import Agent

    silent = silent_genome(18, 8, DEFAULT_REGULATORY, np.random.default_rng(3))
    loud = Genome.random(18, 8, DEFAULT_REGULATORY, rng=np.random.default_rng(3))
    defaults = [1e-3, 0.9, 0.999, 1e-7]
    reference = train_weights(keras.optimizers.Adam(), steps=4)
    for name, genome in (("silent", silent), ("loud", loud)):
        optimizer = Agent(name, "adam", genome, settings={"inputs": "sensing"}).optimizer()
        assert optimizer.output_set.name == "centred"
        weights = train_weights(optimizer, steps=4)
        chosen = optimizer.modulation()["hyperparameters"]
        like_keras = np.allclose(chosen, np.tile(defaults, (len(chosen), 1)), rtol=1e-6)
        trains_alike = all(
            np.allclose(a, b, rtol=1e-5, atol=2e-6) for a, b in zip(weights, reference)
        )
        assert like_keras == trains_alike == (name == "silent")


# -- runs on a cheap fitness ---------------------------------------------------------


def test_the_first_generation_samples_around_the_silent_start():
    result = _search(generations=1, hall_of_fame=6)
    search = TagSearch(N_INPUTS, N_OUTPUTS, 2, 6, _stream(7))
    asked = [genome_at(p, N_INPUTS, N_OUTPUTS, 2) for p in search.ask()]
    assert sorted(map(repr, (ind.genome.to_json() for ind in result.hall_of_fame))) == sorted(
        repr(g.to_json()) for g in asked
    )


def test_cma_es_improves_the_fitness_of_fixed_topology_genomes(tmp_path):
    result = _search(generations=12, out=str(tmp_path))
    means = [r["mean"] for r in result.logbook]
    # toy_fitness rewards high output identifiers: the mean climbs from the start
    assert np.mean(means[-3:]) > means[0] + 0.1
    assert result.evaluations == 6 * 12 and all(r["evals"] == 6 for r in result.logbook)
    assert all(r["species"] == 0 and r["size"] == 2.0 for r in result.logbook)
    genomes = [ind.genome for ind in result.hall_of_fame] + [result.best.genome]
    assert all(
        (g.n_inputs, g.n_outputs, g.n_regulatory) == (N_INPUTS, N_OUTPUTS, 2) for g in genomes
    )
    checkpoint = read_json(str(tmp_path / "checkpoint.json"))
    assert checkpoint["settings"]["algorithm"] == "cmaes"
    assert checkpoint["settings"]["cmaes_regulatory"] == 2 and checkpoint["population"] == []
    search = checkpoint["search"]
    assert search["update_count"] == 12 and len(search["centroid"]) == dimension(13, 8, 2)


def test_cmaes_meets_the_random_controls_draws_and_the_seed_decides(tmp_path):
    cmaes = _search(generations=4, out=str(tmp_path / "cmaes"))
    random = _search(
        generations=4, algorithm="random", cmaes_regulatory=None, out=str(tmp_path / "random")
    )
    assert [r["architecture"] for r in cmaes.logbook] == [r["architecture"] for r in random.logbook]
    # the run's generator drew what the random control's did, generation by generation
    states = [read_json(str(tmp_path / name / "checkpoint.json")) for name in ("cmaes", "random")]
    assert states[0]["rng_state"] == states[1]["rng_state"]
    again, other = _search(generations=4), _search(generations=4, seed=8)
    assert logbook_records(again) == logbook_records(cmaes)
    assert logbook_records(other) != logbook_records(cmaes)


def test_a_resumed_cmaes_run_ends_as_an_uninterrupted_one(tmp_path):
    straight = _search(generations=5, out=str(tmp_path / "a"))
    _search(generations=2, out=str(tmp_path / "b"))
    resumed = _search(generations=5, out=str(tmp_path / "b"), resume=True)
    assert resumed.evaluated_now == 3 * 6 and resumed.evaluations == 5 * 6
    assert logbook_records(resumed) == logbook_records(straight)
    assert [i.genome for i in resumed.hall_of_fame] == [i.genome for i in straight.hall_of_fame]
    assert resumed.best.genome == straight.best.genome
    checkpoints = [
        _without_timings(read_json(str(tmp_path / name / "checkpoint.json"))) for name in "ab"
    ]
    assert checkpoints[0] == checkpoints[1]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c.pop("search"), "lacks the field 'search'"),
        (lambda c: c["search"].update(C=[[1.0]]), "'search'.*'C'.*shaped \\[71, 71\\]"),
        (lambda c: c["search"].update(sigma=0), "'sigma' must be positive"),
        (lambda c: c["search"]["diagD"].__setitem__(0, -1.0), "'diagD' must be positive"),
        (lambda c: c["search"].pop("rng_state"), "missing field"),
        (lambda c: c["search"].update(rng_state={"state": 1}), "PCG64"),
        (lambda c: c["population"].append(c["best"]["genome"]), "must have 0 items"),
        (
            lambda c: c["hall_of_fame"][0]["genome"].update(
                Genome.random(13, 8, 3, rng=0).to_dict()
            ),
            "hall_of_fame\\[0\\].genome' has 3 regulatory proteins; .* have 2",
        ),
        (lambda c: c["settings"].update(cmaes_regulatory=3), "Differing: \\['cmaes_regulatory'\\]"),
    ],
)
def test_a_malformed_cmaes_checkpoint_is_refused_naming_the_field(tmp_path, change, match):
    _search(generations=2, out=str(tmp_path))
    path = tmp_path / "checkpoint.json"
    checkpoint = json.loads(path.read_text())
    change(checkpoint)
    path.write_text(json.dumps(checkpoint))
    with pytest.raises(ValueError, match=match):
        _search(generations=3, out=str(tmp_path), resume=True)


def test_a_cmaes_checkpoint_resumes_only_a_cmaes_run_of_its_topology(tmp_path):
    _search(generations=1, out=str(tmp_path))
    with pytest.raises(ValueError, match="Differing: \\['algorithm'\\]"):
        _search(
            generations=2, out=str(tmp_path), resume=True, algorithm="grneat", cmaes_regulatory=None
        )
    with pytest.raises(ValueError, match="Differing: \\['cmaes_regulatory'\\]"):
        _search(generations=2, out=str(tmp_path), resume=True, cmaes_regulatory=4)
    assert _search(generations=2, out=str(tmp_path), resume=True).evaluated_now == 6


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(cmaes_regulatory=-1), "cmaes_regulatory must be an integer >= 0"),
        (dict(cmaes_regulatory=2.5), "cmaes_regulatory must be an integer"),
        (dict(cmaes_regulatory=MAX_PROTEINS), f"at most {MAX_PROTEINS - 21}.*MAX_PROTEINS"),
        (dict(cmaes_regulatory=40), "exceeds the run's max_regulatory \\(32"),
        (dict(cmaes_regulatory=None, config=GRNEATConfig(max_regulatory=4)), "\\(8\\) exceeds"),
        (dict(algorithm="random"), "cmaes_regulatory goes with algorithm='cmaes'"),
        (dict(population=1), "population must be an integer >= 2"),
    ],
)
def test_bad_cmaes_settings_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        _search(**options)


def test_the_default_topology_has_eight_regulatory_proteins(tmp_path):
    result = _search(generations=1, cmaes_regulatory=None, out=str(tmp_path))
    assert result.best.genome.n_regulatory == DEFAULT_REGULATORY == 8
    assert read_json(str(tmp_path / "checkpoint.json"))["settings"]["cmaes_regulatory"] == 8


@pytest.mark.slow
def test_cmaes_trains_on_the_suite_in_a_jax_worker_deterministically_and_resumes(tmp_path):
    from keras_neuromod.evolution import SuiteTask
    from keras_neuromod.evolution import evolve

    suite = SuiteTask(tasks=("breast_cancer",), instances=1, max_regulatory=4, reference="default")
    options = dict(
        task=suite,
        population=3,
        seed=7,
        algorithm="cmaes",
        cmaes_regulatory=4,
        workers=1,
        progress=False,
        verbose=False,
    )
    first = evolve(out=str(tmp_path / "a"), generations=2, **options)
    assert all(-3.0 <= r["min"] <= r["max"] <= 3.0 and r["std"] > 0 for r in first.logbook)
    assert first.evaluations == 6 and first.best.genome.n_inputs == 18
    evolve(out=str(tmp_path / "b"), generations=1, **options)
    resumed = evolve(out=str(tmp_path / "b"), generations=2, resume=True, **options)
    assert resumed.evaluated_now == 3
    assert logbook_records(resumed) == logbook_records(first)
    assert resumed.best.genome == first.best.genome


# -- the command ----------------------------------------------------------------------

TINY = list(TINY_EVOLVE)


def test_the_command_writes_an_ordinary_agent_whose_card_says_cmaes(tmp_path, capsys):
    from keras_neuromod import NmAdam
    from keras_neuromod.cli import evolve
    from keras_neuromod.cli import main

    out = str(tmp_path / "run")
    argv = ["evolve", *TINY, "--algorithm", "cmaes", "--regulatory", "2", "--generations", "2"]
    assert main([*argv, "--out", out]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["evaluations"] == 8 and summary["generations"] == 2
    agent = zoo.load(summary["agent"])
    assert agent.provenance["algorithm"] == "cmaes" and agent.name == "nm_adam_digits"
    assert agent.genome.n_regulatory == 2 and agent.genome.n_inputs == 13
    command = agent.provenance["command"]
    assert "--algorithm cmaes --regulatory 2" in command
    replay = evolve.parse_args(command.split()[2:])
    assert (replay.algorithm, replay.regulatory) == ("cmaes", 2)
    optimizer = NmAdam(agent=summary["agent"])  # an agent the optimizer loads, modulated
    assert all(lo < hi for lo, hi in optimizer.ranges.values())
    # resumed, the run is done and writes the same agent again
    assert main([*argv, "--out", out, "--resume"]) == 0
    assert zoo.load(os.path.join(out, "best_agent.json")).genome == agent.genome


def test_the_command_s_regulatory_flag_goes_with_cmaes():
    from keras_neuromod.cli import evolve

    assert evolve.parse_args(["--algorithm", "cmaes"]).regulatory == DEFAULT_REGULATORY
    assert evolve.parse_args(["--suite", "--algorithm", "cmaes"]).name == "nm_adam_general"
    assert evolve.parse_args([]).regulatory is None
    for argv in (["--regulatory", "3"], ["--algorithm", "cmaes", "--regulatory", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            evolve.parse_args(argv)
        assert exit_info.value.code == 2
