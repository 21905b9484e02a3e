"""The static-search control: CMA-ES over fixed hyperparameters, written as an agent.

Agents with collapsed ranges against Keras's optimizers (TensorFlow here, JAX in
`tests/static_jax.py`); the search's draws, budget, determinism and checkpoint
with a recording backend; real trainings in a JAX worker and the example.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import TIMINGS
from helpers import train_weights
from keras_neuromod import NmAdam
from keras_neuromod import NmSGD
from keras_neuromod import bases
from keras_neuromod import zoo
from keras_neuromod.agrn import Genome
from keras_neuromod.io import read_json

HERE = os.path.dirname(os.path.abspath(__file__))
# positions of the search (one per hyperparameter, in [0, 1]) tried on each base
POSITIONS = {"adam": [0.55, 0.8, 0.95, 0.3], "sgd": [0.6, 0.85]}
# against Keras's defaults, one training per instance (the tuned reference's grid is tested
# with the agents' fitness, in test_vectorized.py)
SUITE = dict(tasks=("breast_cancer",), instances=1, max_regulatory=4, reference="default")


def _suite(**changes):
    from keras_neuromod.evolution import SuiteTask

    return SuiteTask(**{**SUITE, **changes})


# -- the agent of fixed values -------------------------------------------------


@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_a_static_agent_trains_as_keras_optimizer_with_its_values(tmp_path, base):
    from keras_neuromod.evolution.static import FixedHyperparameters
    from keras_neuromod.evolution.static import static_agent

    candidate = FixedHyperparameters.at(base, POSITIONS[base])
    agent = static_agent(candidate, f"static_{base}_general", provenance={"algorithm": "static"})
    path = zoo.save(agent, str(tmp_path / "best_agent.json"))
    loaded = zoo.load(path)
    assert loaded.ranges == candidate.ranges and loaded.genome.n_regulatory == 0
    assert loaded.provenance["algorithm"] == "static"
    nm = (NmAdam if base == "adam" else NmSGD)(agent=path)
    reference = (keras.optimizers.Adam if base == "adam" else keras.optimizers.SGD)(
        **candidate.values
    )
    got, expected = train_weights(nm), train_weights(reference)
    assert int(nm.iterations) == 12
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("output_set", ["paper", "centred"])
@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_positions_map_onto_the_ranges_as_the_agrn_outputs_do(base, output_set):
    """Position x is what output proteins (x, 1 - x) give, on the output set's scales."""
    from keras_neuromod import bases
    from keras_neuromod.evolution.static import FixedHyperparameters

    optimizer_class = NmAdam if base == "adam" else NmSGD
    n = len(optimizer_class.HYPERPARAMETERS)
    optimizer = optimizer_class(agent=Genome.random(13, 2 * n, 0, rng=0), outputs=output_set)
    grid = np.array([[0.0] * n, [1.0] * n, [0.5] * n, [0.13, 0.77, 0.42, 0.9][:n]])
    outputs = np.stack([grid, 1.0 - grid], axis=-1).reshape(len(grid), 2 * n).astype("float32")
    expected = keras.ops.convert_to_numpy(optimizer._outputs_to_hyperparameters(outputs))
    for row, values in zip(grid, expected):
        candidate = FixedHyperparameters.at(base, row, outputs=output_set)
        np.testing.assert_allclose(candidate.vector, values, rtol=2e-6)
        for name, value in candidate.values.items():
            lo, hi = optimizer.ranges[name]
            assert lo <= value <= hi and np.float32(value) == value
    lo, hi = bases.get(base).ranges(output_set)["learning_rate"]
    middle = FixedHyperparameters.at(base, [0.5] * n, outputs=output_set).values["learning_rate"]
    assert middle == pytest.approx(np.sqrt(lo * hi), rel=1e-6)  # the geometric middle
    # the search's default is the centred set, whose middle is Keras's default
    if output_set == "centred":
        keras_default = {"adam": [1e-3, 0.9, 0.999, 1e-7], "sgd": [0.01, 0.9]}[base]
        at_centre = FixedHyperparameters.at(base, [0.5] * n)
        np.testing.assert_allclose(at_centre.vector, keras_default, rtol=1e-6)
    # a collapsed range gives its value; values outside the base's bounds are refused
    fixed = FixedHyperparameters.at(base, [0.9] * n, ranges={"learning_rate": (0.02, 0.02)})
    assert fixed.values["learning_rate"] == 0.02
    with pytest.raises(ValueError, match="learning_rate"):
        FixedHyperparameters(base, {**fixed.values, "learning_rate": -1.0})
    with pytest.raises(ValueError, match="exactly"):
        FixedHyperparameters(base, {"learning_rate": 0.1})


@pytest.mark.slow
def test_static_agents_train_as_keras_and_score_as_their_agents_under_jax(tmp_path):
    """In a JAX process: Keras's optimizer again; the search's fitness is its agent's fitness."""
    environment = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "static_jax.py"), str(tmp_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    assert max(result["like_keras"].values()) < 1e-6
    searched = np.asarray(result["fitness"]["searched"])
    assert searched.shape == (2, 2) and len(set(np.round(searched[:, 0], 4))) == 2  # they differ
    # to rounding: the two programs' arithmetic differs in the order XLA fuses it
    np.testing.assert_allclose(searched, result["fitness"]["as_agents"], rtol=0, atol=1e-4)


# -- the search, with a recording backend -----------------------------------------


class Recorder:
    """A backend that records the jobs and scores them with a cheap, deterministic function."""

    runs = []
    cpu_seconds = 0.0  # (a backend's count of its workers' CPU time)

    def __init__(self, *args, **kwargs):
        self.jobs = []
        Recorder.runs.append(self)

    def map(self, jobs, progress=None):
        self.jobs.extend(jobs)
        return [self.score(job) for job in jobs]

    @staticmethod
    def score(job):
        """A job's score: near a learning rate of 10^-2.5 and a beta_1 of 0.8 is best."""
        from keras_neuromod.evolution.static import FixedHyperparameters

        entry, seed = job["genome"], job["seed"]
        if "hyperparameters" not in entry:
            return float(np.mean(entry["identifiers"]))
        values = FixedHyperparameters.from_dict(entry).values
        return (
            -((np.log10(values["learning_rate"]) + 2.5) ** 2)
            - (values["beta_1"] - 0.8) ** 2
            + 1e-3 * (seed % 7)
        )

    def close(self):
        pass


@pytest.fixture
def recorded(monkeypatch):
    from keras_neuromod.evolution import engine

    Recorder.runs = []
    monkeypatch.setattr(engine, "make_backend", Recorder)
    return Recorder.runs


def _search(**options):
    from keras_neuromod.evolution import evolve

    defaults = dict(
        task=_suite(),
        population=6,
        generations=3,
        seed=7,
        progress=False,
        verbose=False,
        algorithm="static",
    )
    return evolve(**{**defaults, **options})


def _seeds(recorder, population):
    seeds = [job["seed"] for job in recorder.jobs]
    assert all(len(set(seeds[i : i + population])) == 1 for i in range(0, len(seeds), population))
    return seeds[::population]


def test_static_search_meets_the_random_controls_instances_with_its_budget(recorded):
    static = _search()
    random = _search(algorithm="random")
    assert static.evaluations == static.evaluated_now == 6 * 3 == random.evaluations
    assert [r["evals"] for r in static.logbook] == [6, 6, 6]
    seeds = _seeds(recorded[0], 6)
    assert seeds == _seeds(recorded[1], 6) and len(set(seeds)) == 3
    assert all("hyperparameters" in job["genome"] for job in recorded[0].jobs)
    suite = _suite()
    assert [suite.draw(s) for s in seeds] == [suite.draw(s) for s in _seeds(recorded[1], 6)]


def test_cma_es_finds_the_optimum_of_a_simple_objective(recorded):
    result = _search(population=8, generations=25)
    best = result.hall_of_fame[0].genome.values
    assert np.log10(best["learning_rate"]) == pytest.approx(-2.5, abs=0.1)
    assert best["beta_1"] == pytest.approx(0.8, abs=0.05)
    assert result.logbook[-1]["max"] > result.logbook[0]["max"]


def test_same_seed_same_search_and_resumed_equals_uninterrupted(recorded, tmp_path):
    first = _search(out=str(tmp_path / "a"), generations=4)
    again = _search(generations=4)
    other = _search(generations=4, seed=8)
    assert [r["max"] for r in again.logbook] == [r["max"] for r in first.logbook]
    assert [r["max"] for r in other.logbook] != [r["max"] for r in first.logbook]
    _search(out=str(tmp_path / "b"), generations=2)
    resumed = _search(out=str(tmp_path / "b"), generations=4, resume=True)
    assert resumed.evaluated_now == 12 and resumed.evaluations == 24
    assert recorded[-1].jobs == recorded[0].jobs[12:]  # no finished generation redone
    checkpoints = [json.load(open(tmp_path / name / "checkpoint.json")) for name in "ab"]
    for checkpoint in checkpoints:
        for record in checkpoint["logbook"]:
            for key in TIMINGS:
                record.pop(key)
    assert checkpoints[0] == checkpoints[1]
    assert (
        checkpoints[0]["settings"]["algorithm"] == "static" and checkpoints[0]["population"] == []
    )
    assert [ind.genome for ind in resumed.hall_of_fame] == [
        ind.genome for ind in first.hall_of_fame
    ]
    assert resumed.best.genome == first.best.genome


class _Ranked(list):
    """A position DEAP's `cma.Strategy.update` ranks by its `fitness`."""

    def __init__(self, position, fitness):
        super().__init__(position)
        self.fitness = fitness


def test_the_static_search_is_deaps_cma_es_sample_for_sample(recorded, tmp_path):
    """Computed apart from the search's code: DEAP's strategy from the centre of the box
    with step 0.3, sampled from the seed's first child stream, clipped, told the scores."""
    from deap import cma

    from keras_neuromod.evolution.static import FixedHyperparameters

    population, generations, seed = 6, 4, 7
    _search(population=population, generations=generations, seed=seed, out=str(tmp_path))
    jobs = recorded[0].jobs
    suite = _suite()
    strategy = cma.Strategy(centroid=[0.5] * 4, sigma=0.3, lambda_=population)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    for generation in range(generations):
        z = rng.standard_normal((population, 4))
        positions = np.clip(strategy.centroid + strategy.sigma * np.dot(z, strategy.BD.T), 0, 1)
        batch = jobs[generation * population : (generation + 1) * population]
        assert [job["genome"] for job in batch] == [
            FixedHyperparameters.at("adam", p, suite.ranges, suite.outputs).to_dict()
            for p in positions
        ]
        strategy.update([_Ranked(list(p), Recorder.score(j)) for p, j in zip(positions, batch)])
    search = read_json(str(tmp_path / "checkpoint.json"))["search"]
    assert search["update_count"] == generations
    for field in ("centroid", "sigma", "pc", "ps", "C", "B", "diagD"):
        assert search[field] == np.asarray(getattr(strategy, field)).tolist(), field
    assert search["rng_state"] == rng.bit_generator.state


def test_the_zoos_static_checkpoint_loads_unchanged_and_resumes(recorded, tmp_path):
    """A real static run's checkpoint (zoo/runs/static_adam_sensing) gives back exactly what
    it holds, and goes on with one more generation, the same from the same file."""
    from keras_neuromod.evolution import GRNEATConfig
    from keras_neuromod.evolution import SuiteTask
    from keras_neuromod.evolution import evolve
    from keras_neuromod.evolution.engine import _Run

    path = os.path.join(os.path.dirname(HERE), "zoo", "runs", "static_adam_sensing")
    data = read_json(os.path.join(path, "checkpoint.json"))
    settings, config = data["settings"], GRNEATConfig.from_dict(data["config"])
    loaded = _Run.load(os.path.join(path, "checkpoint.json"), settings, config)
    assert json.loads(json.dumps(loaded.to_dict())) == data
    done = data["generation"]
    options = dict(
        task=SuiteTask.from_dict(settings["task"]),
        population=config.population,
        generations=done + 1,
        seed=settings["seed"],
        hall_of_fame=settings["hall_of_fame"],
        algorithm="static",
        resume=True,
        progress=False,
        verbose=False,
    )
    checkpoints = []
    for name in "ab":
        shutil.copytree(path, tmp_path / name)
        result = evolve(out=str(tmp_path / name), **options)
        assert result.evaluated_now == config.population and result.generations == done + 1
        checkpoints.append(read_json(str(tmp_path / name / "checkpoint.json")))
    assert recorded[0].jobs == recorded[1].jobs
    assert checkpoints[0]["search"] == checkpoints[1]["search"] != data["search"]
    assert checkpoints[0]["search"]["update_count"] == data["search"]["update_count"] + 1
    assert checkpoints[0]["logbook"][:done] == data["logbook"]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda c: c.pop("search"), "lacks the field 'search'"),
        (
            lambda c: c["search"].update(C=[[1.0, 0.0], [0.0, 1.0]]),
            "'search'.*'C'.*shaped \\[4, 4\\]",
        ),
        (lambda c: c["search"].update(sigma=-0.1), "'sigma' must be positive"),
        (lambda c: c["search"].update(centroid="nan"), "'centroid'"),
        (lambda c: c["search"]["pc"].__setitem__(0, "inf"), "'pc' must be finite"),
        (lambda c: c["search"].pop("rng_state"), "missing field"),
        (
            lambda c: c["hall_of_fame"][0]["genome"]["hyperparameters"].pop("beta_2"),
            "hall_of_fame\\[0\\]",
        ),
        (lambda c: c["best"]["genome"].update(base="sgd"), "'best.genome'"),
        (lambda c: c["population"].append({}), "'population' must have 0 items"),
    ],
)
def test_a_malformed_static_checkpoint_is_refused_naming_the_field(
    recorded, tmp_path, change, match
):
    _search(out=str(tmp_path), generations=2)
    path = tmp_path / "checkpoint.json"
    checkpoint = json.load(open(path))
    change(checkpoint)
    path.write_text(json.dumps(checkpoint))
    with pytest.raises(ValueError, match=match):
        _search(out=str(tmp_path), generations=3, resume=True)


def test_a_static_checkpoint_does_not_resume_another_algorithm(recorded, tmp_path):
    _search(out=str(tmp_path), generations=1)
    with pytest.raises(ValueError, match="algorithm"):
        _search(out=str(tmp_path), generations=2, resume=True, algorithm="random")


def test_static_search_needs_a_suite_and_a_population_of_two():
    from keras_neuromod.evolution import evolve

    with pytest.raises(ValueError, match="SuiteTask"):
        evolve(task="digits", algorithm="static", generations=1)
    with pytest.raises(ValueError, match="population must be an integer >= 2"):
        _search(population=1)
    from keras_neuromod.evolution.static import StaticSearch

    with pytest.raises(ValueError, match="population"):
        StaticSearch("adam", None, 1, np.random.default_rng(0))


# -- real trainings --------------------------------------------------------------


@pytest.mark.slow
def test_static_search_trains_in_a_jax_worker_deterministically_and_resumes(tmp_path):
    options = dict(population=3, workers=1)
    first = _search(out=str(tmp_path / "a"), generations=2, **options)
    assert all(-3.0 <= r["min"] <= r["max"] <= 3.0 and r["std"] > 0 for r in first.logbook)
    assert first.evaluations == 6
    _search(out=str(tmp_path / "b"), generations=1, **options)
    resumed = _search(out=str(tmp_path / "b"), generations=2, resume=True, **options)
    assert resumed.evaluated_now == 3
    assert [r["max"] for r in resumed.logbook] == [r["max"] for r in first.logbook]
    assert resumed.best.genome == first.best.genome


@pytest.mark.slow
def test_evolve_example_writes_the_static_agent_chosen_on_the_validation_draw(tmp_path, capsys):
    from examples_loader import load_example
    from keras_neuromod.evolution import score_on_validation

    example = load_example("evolve")
    argv = [
        "--suite",
        "--algorithm",
        "static",
        "--population",
        "3",
        "--generations",
        "2",
        "--instances",
        "1",
        "--tasks",
        "breast_cancer",
        "--validation-draws",
        "1",
        "--reference",
        "default",
        "--workers",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    example.main(argv)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    agent = zoo.load(summary["agent"])
    record = agent.provenance
    assert agent.name == "static_adam_general" and record["algorithm"] == "static"
    assert summary["evaluations"] == record["evaluations"] == 6
    assert "--algorithm static" in record["command"]
    # the sets it searched with, which its agent (of fixed values) cannot hold
    assert (record["inputs"], record["outputs"]) == ("sensing", "centred")
    assert load_example("generalization").control_label(agent) == "static search (adam, sensing)"
    # the CPU time is measured: every generation's, and the selection's
    with open(tmp_path / "logbook.csv") as stream:
        assert all(float(row["cpu_seconds"]) > 0 for row in csv.DictReader(stream))
    assert record["selection"]["cpu_seconds"] > 0 and "cpu_hours_estimated" not in record
    assert all(lo == hi for lo, hi in agent.ranges.values())
    # the agent is the candidate the selection scored: the same draw scores it the same
    from keras_neuromod.evolution.static import FixedHyperparameters

    chosen = FixedHyperparameters("adam", {name: lo for name, (lo, _) in agent.ranges.items()})
    again = score_on_validation([chosen], _suite(max_regulatory=32), draws=1, workers=1)
    assert (
        round(float(again.mean()), 4) == record["selection"]["score"] == summary["validation_score"]
    )
    with pytest.raises(SystemExit) as exit_info:
        example.parse_args(["--algorithm", "static"])  # a control of the suite only
    assert exit_info.value.code == 2
    # a search centred on the chosen values: a silent agent of it is that constant
    centred_argv = list(argv)
    centred_argv[centred_argv.index("--algorithm") + 1] = "random"
    centred_argv[centred_argv.index("--generations") + 1] = "1"
    centred_argv[centred_argv.index("--out") + 1] = str(tmp_path / "centred")
    example.main(centred_argv + ["--centre-on", summary["agent"]])
    centred = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    around = zoo.load(centred["agent"])
    values = {name: lo for name, (lo, _) in agent.ranges.items()}
    assert around.provenance["centred_on"] == {"agent": agent.name, "values": values}
    assert around.ranges == bases.get("adam").centred_ranges(values, outputs="centred")
    # the command holds the ranges themselves: it reproduces without the static agent's file
    command = around.provenance["command"]
    assert "--centre-on" not in command and "--ranges learning_rate=" in command
    replay = example.parse_args(command.split()[2:])
    assert replay.task_spec.ranges == around.ranges and replay.centred_on is None
