"""Resuming GRNEAT and ES checkpoints: exact continuation, clear errors on bad files.

The GRNEAT runs use the cheap fitness functions of `test_evolution` (serial
backend, no training). Two GRNEAT evolutions are pinned by a golden file,
`tests/data/grneat_golden.json`, which this module writes when run as a script:

    PYTHONPATH=. python tests/test_checkpoints.py --write-golden
"""

import hashlib
import json
import math
import os
import sys

import numpy as np
import pytest

from helpers import TIMINGS
from helpers import sphere
from helpers import toy_evolution
from helpers import toy_fitness
from keras_neuromod.evolution import EvolutionStrategy
from keras_neuromod.evolution import GRNEATConfig
from keras_neuromod.io import read_json

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GOLDEN = os.path.join(HERE, "data", "grneat_golden.json")


def tied_fitness(genome, architecture, seed):
    """Coarse (one decimal), so that many individuals tie."""
    return round(toy_fitness(genome, architecture, seed), 1)


def _hall(result):
    return [
        (ind.fitness.values[0], ind.generation, ind.genome.to_json()) for ind in result.hall_of_fame
    ]


def test_resumed_hall_of_fame_keeps_the_order_of_ties(tmp_path):
    options = dict(seed=3, population=12, hall_of_fame=8, fitness=tied_fitness, models=("A",))
    straight = toy_evolution(generations=5, **options)
    fitnesses = [f for f, _, _ in _hall(straight)]
    assert len(fitnesses) == 8 and len(set(fitnesses)) < len(fitnesses), "the test needs ties"
    toy_evolution(generations=2, out=str(tmp_path), **options)
    saved = read_json(tmp_path / "checkpoint.json")["hall_of_fame"]
    assert len({entry["fitness"] for entry in saved}) < len(saved), "ties in the checkpoint too"
    resumed = toy_evolution(generations=5, out=str(tmp_path), resume=True, **options)
    assert _hall(resumed) == _hall(straight)
    # and a run resumed where nothing is left to do gives the saved order back unchanged
    again = toy_evolution(generations=5, out=str(tmp_path), resume=True, **options)
    assert _hall(again) == _hall(straight)


def test_another_grneat_config_names_the_differing_fields(tmp_path):
    toy_evolution(seed=1, generations=1, out=str(tmp_path))
    with pytest.raises(ValueError, match=r"population \(checkpoint: 12, now: 14\)"):
        toy_evolution(seed=1, generations=2, population=14, out=str(tmp_path), resume=True)
    config = GRNEATConfig(tournament_size=4, max_regulatory=20)
    with pytest.raises(ValueError) as error:
        toy_evolution(seed=1, generations=2, config=config, out=str(tmp_path), resume=True)
    message = str(error.value)
    assert "tournament_size (checkpoint: 3, now: 4)" in message
    assert "max_regulatory (checkpoint: 32, now: 20)" in message
    assert "checkpoint.json" in message and "population" not in message


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


GRNEAT_EDITS = [
    (lambda d: d.pop("population"), r"missing field\(s\) \['population'\]"),
    (lambda d: d.update(extra=1), r"unknown field\(s\) \['extra'\]"),
    (lambda d: d.update(generation="2"), "'generation' must be an integer"),
    (lambda d: d.update(population=d["population"][:-1]), "'population' must have 12 items"),
    (lambda d: d["population"][3].update(beta=None), r"'population\[3\]'.*beta"),
    (lambda d: d["population"][0].update(n_regulatory=10**30), "MAX_PROTEINS"),
    (lambda d: d["species"][0].update(threshold=float("nan")), r"'species\[0\].threshold'"),
    (lambda d: d["species"].append([]), r"'species\[\d+\]' must be a JSON object"),
    (lambda d: d["hall_of_fame"][0].pop("fitness"), r"'hall_of_fame\[0\]' is missing"),
    (lambda d: d["hall_of_fame"][0].update(fitness=-1.0), "sorted by fitness"),
    (lambda d: d["logbook"][1].update(max="high"), r"'logbook\[1\].max' must be a number"),
    (lambda d: d.update(logbook=d["logbook"][:1]), "'logbook' must have 2 items"),
    (lambda d: d["rng_state"].pop("state"), "'rng_state'"),
    (lambda d: d.update(rng_state=[1, 2]), "'rng_state' must be a JSON object"),
    (
        lambda d: d.update(best={"genome": {}, "fitness": 1.0, "generation": 0}),
        r"'best.genome'.*missing",
    ),
    (lambda d: d.update(fitness_range=[1.0, 0.0]), "lo <= hi"),
    (lambda d: d.update(config={"population": "12"}), "'config'.*population"),
    (lambda d: d.update(settings=None), "'settings' must be a JSON object"),
]


@pytest.mark.parametrize("change,match", GRNEAT_EDITS)
def test_hand_edited_grneat_checkpoints_name_the_field(tmp_path, change, match):
    toy_evolution(seed=1, generations=2, out=str(tmp_path))
    path = tmp_path / "checkpoint.json"
    _edit(path, change)
    with pytest.raises(ValueError, match=match) as error:
        toy_evolution(seed=1, generations=3, out=str(tmp_path), resume=True)
    assert str(path) in str(error.value)


ES_EDITS = [
    (lambda d: d.pop("theta"), r"missing field\(s\) \['theta'\]"),
    (lambda d: d.update(theta=d["theta"][:-1]), "'theta' must have 3 items"),
    (lambda d: d["velocity"].__setitem__(1, "x"), "'velocity' must be a number"),
    (
        lambda d: d["second_moment"].__setitem__(0, 1e308 * 10),
        "'second_moment' must be a finite number",
    ),
    (lambda d: d.update(generation=None), "'generation' must be an integer"),
    (lambda d: d.update(generation=10**30), "'logbook' must have"),
    (lambda d: d["logbook"][0].pop("mean"), r"'logbook\[0\]' is missing"),
    (lambda d: d["logbook"][1].update(gen=1.5), r"'logbook\[1\].gen' must be an integer"),
    (
        lambda d: d.update(format="keras_neuromod.EvolutionStrategy/1"),
        "format is 'keras_neuromod.EvolutionStrategy/1', expected",
    ),
    (lambda d: d.update(rng_state={"bit_generator": "PCG64"}), "'rng_state'"),
    (lambda d: d.update(config=[]), "'config' must be a JSON object"),
    (lambda d: d.update(extra={}), r"unknown field\(s\) \['extra'\]"),
]


@pytest.mark.parametrize("change,match", ES_EDITS)
def test_hand_edited_es_checkpoints_name_the_field(tmp_path, change, match):
    path = tmp_path / "es.json"
    EvolutionStrategy(sphere, np.zeros(3), population=4, seed=0).run(
        2, checkpoint_path=path, progress=False
    )
    _edit(path, change)
    with pytest.raises(ValueError, match=match) as error:
        EvolutionStrategy(sphere, np.zeros(3), population=4, seed=0).load_checkpoint(path)
    assert str(path) in str(error.value)


# -- pinned evolutions ----------------------------------------------------------

# The default GRNEAT constants (those of the zoo's agents), and constants under which
# species are dissolved, mutants found new species and parents may repeat.
GOLDEN_RUNS = {
    "default": dict(seed=3, population=12, generations=8),
    "small_species": dict(
        seed=4,
        population=20,
        generations=8,
        config=GRNEATConfig(
            min_species_size=3, max_tries=1, species_threshold=0.04, threshold_bounds=(0.0, 0.05)
        ),
    ),
}


def _digest(genome_dict):
    return hashlib.sha256(json.dumps(genome_dict, sort_keys=True).encode()).hexdigest()


def _summary(checkpoint):
    """What pins an evolution: its logbook (without timings), hall of fame, final
    population and species, and the generator's state, from its checkpoint."""
    return {
        # (timings vary; "drift" derives from the means, and is tested on its own)
        "logbook": [
            {k: v for k, v in r.items() if k not in (*TIMINGS, "drift")}
            for r in checkpoint["logbook"]
        ],
        "hall_of_fame": [
            [i["fitness"], i["generation"], _digest(i["genome"])]
            for i in checkpoint["hall_of_fame"]
        ],
        "best": checkpoint["best"],
        "population": [_digest(g) for g in checkpoint["population"]],
        "species": [[s["threshold"], _digest(s["representative"])] for s in checkpoint["species"]],
        "fitness_range": checkpoint["fitness_range"],
        "rng_state": checkpoint["rng_state"],
        "evaluations": checkpoint["evaluations"],
    }


def _pinned(name, out, **options):
    toy_evolution(out=str(out), fitness=toy_fitness, **{**GOLDEN_RUNS[name], **options})
    return _summary(read_json(os.path.join(out, "checkpoint.json")))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GOLDEN_RUNS))
def test_evolution_matches_the_golden_file_serial_resumed_and_on_processes(tmp_path, name):
    # The file was written by the code of an earlier version (see the module docstring):
    # the evolution is a function of the seed, whatever the backend or interruptions.
    golden = read_json(GOLDEN)["runs"][name]
    assert _pinned(name, tmp_path / "serial") == golden
    _pinned(name, tmp_path / "resumed", generations=3)
    assert _pinned(name, tmp_path / "resumed", resume=True) == golden
    if name == "default":  # (worker processes take a while to start)
        assert _pinned(name, tmp_path / "process", backend="process", workers=2) == golden


@pytest.mark.parametrize("agent", ["nm_adam_digits", "nm_sgd_digits"])
def test_the_zoo_agents_checkpoints_still_load(agent):
    # The checkpoints of the evolutions that made the shipped agents load, and give
    # back exactly what they hold, so that their runs can be continued.
    from keras_neuromod.evolution.engine import _Run

    path = os.path.join(ROOT, "zoo", "runs", agent, "checkpoint.json")
    data = read_json(path)
    loaded = _Run.load(path, data["settings"], GRNEATConfig.from_dict(data["config"]))
    assert loaded.generation == 50 and len(loaded.population) == 50
    again = json.loads(json.dumps(loaded.to_dict()))
    # these checkpoints predate 'run_best': it is derived, at least the last generation's best
    assert "run_best" not in data
    assert again.pop("run_best")["fitness"] >= data["best"]["fitness"]
    # and 'recent_bests': the last generation's best is the one they hold
    assert "recent_bests" not in data and again.pop("recent_bests") == [data["best"]]
    # and the logbook's "drift": derived from the means, as the evolution records it
    assert all("drift" not in record for record in data["logbook"])
    drifts = [record.pop("drift") for record in again["logbook"]]
    np.testing.assert_allclose(drifts, _drifts([r["mean"] for r in data["logbook"]]))
    assert again == data


def _drifts(means, window=10):
    """The drift column, computed independently: per generation, the RMS of the last
    `window` changes of the mean over sqrt(2)."""
    out = []
    for g in range(len(means)):
        changes = [means[i] - means[i - 1] for i in range(max(1, g - window + 1), g + 1)]
        out.append(math.sqrt(sum(c * c for c in changes) / len(changes) / 2) if changes else 0.0)
    return out


def test_the_logbook_reads_the_spread_between_and_within_generations(tmp_path):
    result = toy_evolution(seed=3, population=12, generations=14, out=str(tmp_path))
    means = [r["mean"] for r in result.logbook]
    drifts = [r["drift"] for r in result.logbook]
    np.testing.assert_allclose(drifts, _drifts(means), rtol=1e-12)
    assert drifts[0] == 0.0 and all(d > 0 for d in drifts[1:])
    assert "drift" in result.logbook.header
    # the checkpoint holds it, and a resumed run goes on with the same values
    saved = read_json(tmp_path / "checkpoint.json")["logbook"]
    assert [r["drift"] for r in saved] == drifts
    toy_evolution(seed=3, population=12, generations=6, out=str(tmp_path / "b"))
    resumed = toy_evolution(
        seed=3, population=12, generations=14, out=str(tmp_path / "b"), resume=True
    )
    assert [r["drift"] for r in resumed.logbook] == drifts


def _write_golden():
    import tempfile

    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in sorted(GOLDEN_RUNS):
            runs[name] = _pinned(name, os.path.join(folder, name))
    data = {
        "command": "PYTHONPATH=. python tests/test_checkpoints.py --write-golden",
        "code": "keras_neuromod at commit eb99d40",
        "runs": runs,
    }
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__" and sys.argv[1:] == ["--write-golden"]:
    _write_golden()
