"""The evolution loop: determinism, checkpoints, real fitness, crashes, Ray.

Engine tests use cheap fitness functions defined here (real functions run in
real worker processes); the fitness tests train real Keras models.
"""

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import helpers
from helpers import TINY_EVOLVE
from helpers import logbook_records
from helpers import slow_toy_fitness
from helpers import toy_evolution
from helpers import toy_fitness
from keras_neuromod.agrn import Genome
from keras_neuromod.evolution import Evaluator
from keras_neuromod.evolution import FitnessTask
from keras_neuromod.evolution import GenomeEvaluator
from keras_neuromod.evolution import evolve
from keras_neuromod.evolution.parallel import ProcessBackend
from keras_neuromod.evolution.parallel import SerialBackend
from keras_neuromod.evolution.parallel import evaluate_job
from keras_neuromod.evolution.parallel import make_backend
from keras_neuromod.io import read_json

HERE = os.path.dirname(os.path.abspath(__file__))


def _key(genome):
    return hashlib.sha1(json.dumps(genome, sort_keys=True).encode()).hexdigest()


def crashes(genome):
    return int(_key(genome), 16) % 3 == 0


def crashing_fitness(genome, architecture, seed):
    """Kills its worker process for about a third of the genomes, always."""
    if crashes(genome):
        os._exit(3)
    return toy_fitness(genome, architecture, seed)


# Where the flaky fitness functions leave their markers: KNM_FLAKY_DIR for
# process workers (they inherit the environment); Ray's workers, started
# before the test, get this module by value, with this global as it is then.
MARKER_DIR = None


def first_time(name):
    """True the first time any worker asks about `name` (a marker file)."""
    marker = os.path.join(MARKER_DIR or os.environ["KNM_FLAKY_DIR"], name)
    if os.path.exists(marker):
        return False
    open(marker, "w").close()
    return True


def flaky_fitness(genome, architecture, seed):
    """Kills its worker the first time it sees a genome, succeeds the second."""
    if first_time(_key(genome)):
        os._exit(4)
    return toy_fitness(genome, architecture, seed)


def stalling_fitness(genome, architecture, seed):
    """Stops its worker (SIGSTOP) the first time it sees a third of the genomes."""
    if crashes(genome) and first_time("stalled-" + _key(genome)):
        os.kill(os.getpid(), signal.SIGSTOP)
    return toy_fitness(genome, architecture, seed)


def always_stalling_fitness(genome, architecture, seed):
    """Stops its worker (SIGSTOP) for a third of the genomes, every time."""
    if crashes(genome):
        os.kill(os.getpid(), signal.SIGSTOP)
    return toy_fitness(genome, architecture, seed)


def stall_once_fitness(genome, architecture, seed):
    """Stops its worker (SIGSTOP) on the first job of the run only."""
    if first_time("stalled"):
        os.kill(os.getpid(), signal.SIGSTOP)
    return toy_fitness(genome, architecture, seed)


def late_crash_fitness(genome, architecture, seed):
    """Seed 0 kills its worker after a short delay; other seeds return at once."""
    if seed == 0:
        time.sleep(0.3)
        os._exit(5)
    return 1.0


def pid_fitness(genome, architecture, seed):
    """The worker's process id: shows which process ran a job."""
    return float(os.getpid())


def raising_fitness(genome, architecture, seed):
    raise RuntimeError("this fitness always fails")


def cpu_fitness(genome, architecture, seed):
    """Seed 0 spends 0.2 s of CPU, any other seed sleeps 0.3 s: CPU time is not wall time."""
    if seed == 0:
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
    else:
        time.sleep(0.3)
    return 1.0


def toy_jobs(genomes, architecture="A", seed=1):
    """Jobs that evaluate `genomes`, and what `toy_fitness` scores them."""
    jobs = [{"genome": g, "architecture": architecture, "seed": seed} for g in genomes]
    return jobs, [toy_fitness(g, architecture, seed) for g in genomes]


def test_same_seed_same_evolution_and_other_seed_differs():
    a, b, c = toy_evolution(seed=3), toy_evolution(seed=3), toy_evolution(seed=4)
    assert logbook_records(a) == logbook_records(b)
    assert a.best.genome == b.best.genome
    assert [i.genome for i in a.hall_of_fame] == [i.genome for i in b.hall_of_fame]
    assert logbook_records(a) != logbook_records(c)
    assert a.generations == 4 and a.evaluations >= 4 * 12 and a.evaluated_now == a.evaluations


def test_evolution_improves_a_simple_objective():
    result = toy_evolution(seed=0, generations=12, population=20, models=("A",))
    first, last = result.logbook[0], result.logbook[-1]
    assert last["max"] > first["max"] and last["mean"] > first["mean"] + 0.05


def test_population_size_is_kept_and_genomes_are_valid(tmp_path):
    result = toy_evolution(seed=1, out=str(tmp_path))
    checkpoint = read_json(tmp_path / "checkpoint.json")
    assert checkpoint["generation"] == 4
    assert len(checkpoint["population"]) == 12
    for data in checkpoint["population"]:
        Genome.from_dict(data)
    assert result.last_best.fitness.values[0] == result.logbook[-1]["max"]
    # the checkpoint is plain JSON written in one step (no temporary file is left
    # beside it), and resuming reads it with pickle out of reach
    assert json.loads((tmp_path / "checkpoint.json").read_bytes()) == checkpoint
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle was used")

    with pytest.MonkeyPatch.context() as patch:
        for name in ("load", "loads", "dump", "dumps", "Pickler", "Unpickler"):
            patch.setattr(pickle, name, no_pickle)
        resumed = toy_evolution(seed=1, generations=5, out=str(tmp_path), resume=True)
    assert resumed.evaluated_now > 0 and logbook_records(resumed)[:4] == logbook_records(result)


def test_best_is_the_runs_best_and_last_best_the_last_generations(tmp_path):
    result = toy_evolution(seed=4, generations=6, out=str(tmp_path))
    maxima = [r["max"] for r in result.logbook]
    assert maxima[-1] < max(maxima), "a late generation is worse than an early one"
    assert result.best.fitness.values[0] == max(maxima)
    assert result.best.generation == maxima.index(max(maxima)) < 5
    assert result.best.genome == result.hall_of_fame[0].genome
    assert result.last_best.fitness.values[0] == maxima[-1] and result.last_best.generation == 5
    # each generation's best, oldest first (at most RECENT_BESTS of them)
    assert [ind.generation for ind in result.recent_bests] == list(range(6))
    assert [ind.fitness.values[0] for ind in result.recent_bests] == maxima
    assert result.recent_bests[-1] is result.last_best
    # a finished run resumed, and a checkpoint of an earlier version (no "run_best"), agree
    again = toy_evolution(seed=4, generations=6, out=str(tmp_path), resume=True)
    assert (
        again.best.genome == result.best.genome
        and again.last_best.genome == result.last_best.genome
    )
    path = tmp_path / "checkpoint.json"
    checkpoint = read_json(path)
    assert checkpoint["best"]["fitness"] == maxima[-1], (
        "the checkpoint's 'best' stays the last generation's"
    )
    assert [ind.genome for ind in again.recent_bests] == [ind.genome for ind in result.recent_bests]
    del checkpoint["run_best"], checkpoint["recent_bests"]
    path.write_text(json.dumps(checkpoint))
    old = toy_evolution(seed=4, generations=6, out=str(tmp_path), resume=True)
    assert old.best.fitness.values[0] == max(maxima) and old.best.genome == result.best.genome
    assert old.last_best.fitness.values[0] == maxima[-1]
    assert [ind.genome for ind in old.recent_bests] == [result.last_best.genome]


def test_the_runs_best_is_a_later_higher_score_of_a_genome_already_in_the_hall_of_fame():
    from deap import tools

    from keras_neuromod.evolution.engine import Individual
    from keras_neuromod.evolution.engine import _run_best

    hall = tools.HallOfFame(3)
    hall.update([Individual("elite", 0.5, 0), Individual("other", 0.4, 0)])
    again = Individual("elite", 0.9, 1)
    hall.update([again])
    assert hall[0].fitness.values[0] == 0.5, "DEAP keeps the genome's first fitness"
    assert _run_best(hall, None, again) is again
    assert _run_best(hall, Individual("old", 0.3, 0)) is hall[0]
    assert _run_best(tools.HallOfFame(3), None) is None


def test_a_second_run_on_a_locked_folder_is_refused_and_the_lock_released(tmp_path):
    from keras_neuromod.io import FolderLockedError
    from test_io import lock_held_by_another_process

    out = tmp_path / "run"
    tiny = [*TINY_EVOLVE, "--generations", "1", "--out", str(out)]
    with lock_held_by_another_process(out) as child:
        with pytest.raises(FolderLockedError, match=f"in use by another run: process {child.pid}"):
            toy_evolution(seed=1, generations=2, out=str(out))
        with pytest.raises(SystemExit) as exit_info:  # examples/evolve.py exits with the message
            _evolve_example().main(tiny)
        assert f"{out}" in str(exit_info.value.code) and f"process {child.pid}" in str(
            exit_info.value.code
        )
        assert os.listdir(out) == [".lock"], "nothing written"
    # the holder killed, its lock is stale: the next run takes it over and releases it
    with pytest.warns(RuntimeWarning, match=f"stale lock.*process {child.pid}"):
        result = toy_evolution(seed=1, generations=2, out=str(out))
    assert result.generations == 2 and os.listdir(out) == ["checkpoint.json"]
    with pytest.raises(ValueError, match="fitness"):  # a failing run releases it too
        toy_evolution(seed=1, generations=3, out=str(out), resume=True, fitness=slow_toy_fitness)
    assert os.listdir(out) == ["checkpoint.json"]


def test_resume_continues_without_redoing_work(tmp_path):
    straight = toy_evolution(seed=5, generations=5)
    first = toy_evolution(seed=5, generations=2, out=str(tmp_path))
    assert first.generations == 2
    resumed = toy_evolution(seed=5, generations=5, out=str(tmp_path), resume=True)
    assert resumed.evaluated_now == straight.evaluations - first.evaluations
    assert logbook_records(resumed) == logbook_records(straight)
    assert resumed.best.genome == straight.best.genome
    again = toy_evolution(seed=5, generations=5, out=str(tmp_path), resume=True)
    assert again.evaluated_now == 0 and again.best.genome == straight.best.genome
    with pytest.raises(ValueError, match="seed"):
        toy_evolution(seed=6, generations=6, out=str(tmp_path), resume=True)
    with pytest.raises(FileExistsError, match="resume"):
        toy_evolution(seed=5, generations=6, out=str(tmp_path))


def test_random_search_draws_fresh_genomes_of_every_size_and_keeps_the_best(tmp_path):
    from keras_neuromod.evolution.grneat import GRNEATConfig

    config = GRNEATConfig(max_regulatory=6)
    searched = toy_evolution(
        seed=5, generations=4, algorithm="random", config=config, out=str(tmp_path)
    )
    checkpoint = read_json(str(tmp_path / "checkpoint.json"))
    assert checkpoint["settings"]["algorithm"] == "random" and checkpoint["species"] == []
    # every generation's individuals are new: no genome is evaluated twice
    hall = [ind.genome for ind in searched.hall_of_fame]
    assert len(set(map(repr, hall))) == len(hall)
    sizes = {Genome.from_dict(g).n_regulatory for g in checkpoint["population"]}
    assert sizes <= set(range(1, 7)) and len(sizes) > 1
    assert searched.evaluations == 4 * 12 and all(r["species"] == 0 for r in searched.logbook)
    best = max(searched.hall_of_fame, key=lambda ind: ind.fitness.values[0])
    assert best.fitness.values[0] == max(r["max"] for r in searched.logbook)
    # the same seed gives the same search, resumed or not; GRNEAT differs
    resumed = toy_evolution(
        seed=5, generations=6, algorithm="random", config=config, out=str(tmp_path), resume=True
    )
    straight = toy_evolution(seed=5, generations=6, algorithm="random", config=config)
    assert resumed.evaluated_now == 2 * 12 and logbook_records(resumed) == logbook_records(straight)
    assert logbook_records(toy_evolution(seed=5, generations=6, config=config)) != logbook_records(
        straight
    )
    with pytest.raises(ValueError, match="algorithm"):
        toy_evolution(seed=5, generations=7, config=config, out=str(tmp_path), resume=True)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        toy_evolution(algorithm="anneal")


def test_checkpoints_without_an_algorithm_resume_as_grneat(tmp_path):
    toy_evolution(seed=5, generations=2, out=str(tmp_path))
    path = tmp_path / "checkpoint.json"
    data = json.loads(path.read_text())
    del data["settings"]["algorithm"]
    path.write_text(json.dumps(data))
    assert toy_evolution(seed=5, generations=3, out=str(tmp_path), resume=True).evaluated_now > 0


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from helpers import slow_toy_fitness, toy_evolution
toy_evolution(seed=9, generations=6, population=12, out={out!r}, fitness=slow_toy_fitness)
"""


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_equals_uninterrupted(tmp_path):
    out = str(tmp_path / "killed")
    script = _KILL_SCRIPT.format(here=HERE, out=out)
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = os.path.join(out, "checkpoint.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if os.path.exists(checkpoint) and read_json(checkpoint)["generation"] >= 1:
            break
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = read_json(checkpoint)["generation"]
    assert 1 <= done < 6, "the run should have been killed mid-way"
    # the checkpoint is complete JSON (it is replaced in one step); the killed run's
    # lock of the folder is stale, and taken over
    with pytest.warns(RuntimeWarning, match=f"stale lock.*process {process.pid}"):
        resumed = toy_evolution(
            seed=9, generations=6, out=out, resume=True, fitness=slow_toy_fitness
        )
    straight = toy_evolution(seed=9, generations=6, fitness=slow_toy_fitness)
    assert logbook_records(resumed) == logbook_records(straight)
    assert resumed.best.genome == straight.best.genome
    assert resumed.evaluated_now < straight.evaluations


def test_corrupt_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoint.json").write_text(
        '{"format": "keras_neuromod.grneat-checkpoint/1", "sett'
    )
    with pytest.raises(ValueError, match="not valid JSON"):
        toy_evolution(seed=1, out=str(tmp_path), resume=True)
    (tmp_path / "checkpoint.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="Not a GRNEAT checkpoint"):
        toy_evolution(seed=1, out=str(tmp_path), resume=True)


@pytest.mark.slow
def test_crashing_workers_lose_only_their_individual(tmp_path, monkeypatch):
    monkeypatch.setenv("KNM_FLAKY_DIR", str(tmp_path))
    genomes = [Genome.random(13, 8, 1, rng=s).to_dict() for s in range(3)]  # the second crashes
    jobs, expected = toy_jobs(genomes)
    backend = ProcessBackend(flaky_fitness, workers=2, threads=1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = backend.map(jobs)
        assert results == expected  # each crashed once, then succeeded
        assert sum("run again" in str(w.message) for w in caught) == 3
    finally:
        backend.close()
    backend = ProcessBackend(crashing_fitness, workers=2, threads=1)
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            results = backend.map(jobs)
    finally:
        backend.close()
    crashing = [crashes(g) for g in genomes]
    assert any(crashing) and not all(crashing)
    for crashed, got, want in zip(crashing, results, expected):
        assert got == (0.0 if crashed else want)


@pytest.mark.slow
def test_a_stopped_worker_is_killed_after_the_timeout_and_its_job_run_again():
    # one genome that stops its worker every time, two that do not
    genomes = [Genome.random(13, 8, 1, rng=s).to_dict() for s in range(12)]
    stalling = [g for g in genomes if crashes(g)][:1]
    genomes = stalling + [g for g in genomes if not crashes(g)][:2]
    jobs, expected = toy_jobs(genomes)
    backend = ProcessBackend(always_stalling_fitness, workers=2, threads=1, timeout=2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = backend.map(jobs)
    finally:
        backend.close()
    assert results == [0.0] + expected[1:]
    messages = [str(w.message) for w in caught if "no answer within 2 s" in str(w.message)]
    assert len(messages) == 2
    assert "run again" in messages[0] and "scored worst" in messages[1]


@pytest.mark.slow
def test_evolution_goes_on_past_a_stopped_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("KNM_FLAKY_DIR", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stalled = toy_evolution(
            seed=3,
            generations=2,
            population=8,
            backend="process",
            workers=2,
            fitness=stall_once_fitness,
            timeout=2,
        )
    assert any("no answer within 2 s" in str(w.message) for w in caught)
    assert logbook_records(stalled) == logbook_records(
        toy_evolution(seed=3, generations=2, population=8)
    )


def test_timeout_needs_a_worker_backend_and_a_positive_number():
    with pytest.raises(ValueError, match="serial backend cannot stop"):
        make_backend("serial", toy_fitness, timeout=10)
    for bad in (0, -1, float("nan"), True, "60"):
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            ProcessBackend(toy_fitness, workers=1, timeout=bad)


def talking_fitness(genome, architecture, seed):
    """Real training (TINY), then a line on the worker's stderr."""
    value = evaluate_job(
        FitnessTask(**TINY), {"genome": genome, "architecture": architecture, "seed": seed}
    )
    print(
        f"evaluated on {architecture}, TF_CPP_MIN_LOG_LEVEL={os.environ['TF_CPP_MIN_LOG_LEVEL']}",
        file=sys.stderr,
        flush=True,
    )
    return value


@pytest.mark.slow
def test_workers_start_quiet_but_keep_their_stderr(capfd):
    # TensorFlow's start-up notices in every worker (oneDNN, CUDA probing)
    # flooded the parent's output; what a worker writes once started stays.
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    capfd.readouterr()
    result = evolve(
        population=2,
        generations=1,
        models=("mlp",),
        backend="process",
        workers=1,
        fitness=talking_fitness,
        progress=False,
        verbose=False,
    )
    out, err = capfd.readouterr()
    assert 0.0 <= result.best.fitness.values[0] <= 1.0
    assert err.count("evaluated on mlp, TF_CPP_MIN_LOG_LEVEL=3") == result.evaluations
    for noise in ("oneDNN", "cuInit", "cuda drivers", "absl::InitializeLog", "cpu_feature_guard"):
        assert noise not in out + err
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == level  # the parent's own is left alone


@pytest.mark.slow
def test_workers_are_recycled_when_their_memory_grows():
    jobs = [{"genome": {}, "architecture": "A", "seed": s} for s in range(3)]
    backend = ProcessBackend(pid_fitness, workers=1, threads=1)
    try:
        assert len(set(backend.map(jobs))) == 1  # one worker kept its process
    finally:
        backend.close()
    backend = ProcessBackend(pid_fitness, workers=1, threads=1, max_worker_memory=1)
    try:
        assert len(set(backend.map(jobs))) == 3  # every job grew it past 1 MiB
    finally:
        backend.close()


@pytest.mark.slow
def test_a_worker_dying_while_the_parent_is_busy_loses_nothing():
    # The parent is busy with one worker's result (the slow progress callback)
    # while the other worker dies in the middle of its job: that job must be
    # run again (and scored worst when it dies again), not dropped, which left
    # the parent waiting on no worker at all.
    import threading

    jobs = [{"genome": {}, "architecture": "A", "seed": s} for s in (0, 1)]
    backend = ProcessBackend(late_crash_fitness, workers=2, threads=1)
    results = []
    worker = threading.Thread(
        target=lambda: results.extend(backend.map(jobs, progress=lambda n: time.sleep(1.0))),
        daemon=True,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            worker.start()
            worker.join(timeout=120)
        assert not worker.is_alive(), "map() hung: a dead worker's job was lost"
        assert results == [0.0, 1.0]
    finally:
        backend.close()


@pytest.mark.slow
def test_evolution_goes_on_when_workers_crash():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # one individual of the second generation crashes its worker, twice
        result = toy_evolution(
            seed=7,
            generations=2,
            population=6,
            backend="process",
            workers=2,
            fitness=crashing_fitness,
        )
    assert result.generations == 2
    scores = [r["min"] for r in result.logbook]
    assert min(scores) == 0.0  # crashed individuals scored worst
    serial = SerialBackend(raising_fitness)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert serial.map([{"genome": {}, "architecture": "A", "seed": 0}]) == [0.0]


@pytest.mark.slow
def test_process_backend_gives_the_serial_result():
    assert logbook_records(
        toy_evolution(seed=7, generations=2, backend="process", workers=2)
    ) == logbook_records(toy_evolution(seed=7, generations=2))


@pytest.mark.parametrize("backend", ["serial", pytest.param("process", marks=pytest.mark.slow)])
def test_backends_add_up_the_cpu_time_of_their_jobs_not_the_wall_time(backend):
    def jobs(seed, n):
        return [{"genome": {}, "architecture": "A", "seed": seed}] * n

    engine = make_backend(backend, cpu_fitness, workers=2)
    try:
        engine.map(jobs(1, 4))  # (each worker's first job imports what evaluating needs)
        start = engine.cpu_seconds
        engine.map(jobs(0, 3))
        busy = engine.cpu_seconds - start
        engine.map(jobs(1, 2))
        asleep = engine.cpu_seconds - start - busy
    finally:
        engine.close()
    assert 0.6 <= busy < 0.9  # three jobs of 0.2 s each
    assert 0.0 <= asleep < 0.1  # two jobs of 0.3 s asleep


def test_the_logbook_records_each_generations_cpu_time_and_resumes_without_it(tmp_path):
    def cpu(r):
        return r.get("cpu_seconds")

    out = str(tmp_path / "run")
    first = toy_evolution(
        seed=3, generations=2, population=6, fitness=helpers.cpu_toy_fitness, out=out
    )
    # every evaluation spends 0.02 s of CPU in the (serial) worker
    for record in first.logbook:
        assert 0.02 * record["evals"] <= cpu(record) < 0.02 * record["evals"] + 0.1
    # a checkpoint written before the CPU time was recorded resumes, and keeps it unknown
    path = os.path.join(out, "checkpoint.json")
    data = read_json(path)
    for record in data["logbook"]:
        del record["cpu_seconds"]
    with open(path, "w") as stream:
        json.dump(data, stream)
    resumed = toy_evolution(
        seed=3, generations=3, population=6, fitness=helpers.cpu_toy_fitness, out=out, resume=True
    )
    assert [cpu(r) is None for r in resumed.logbook] == [True, True, False]
    assert logbook_records(resumed)[:2] == logbook_records(first)
    with open(os.path.join(out, "checkpoint.json")) as stream:
        saved = json.load(stream)["logbook"]
    assert ["cpu_seconds" in r for r in saved] == [False, False, True]


# -- real training ------------------------------------------------------------

TINY = dict(dataset="digits", base="adam", epochs=1, batch_size=32, width=0.25, train_subset=256)


@pytest.mark.slow
def test_real_fitness_is_deterministic_and_reuses_the_compiled_model():
    evaluator = Evaluator(FitnessTask(**TINY))
    genomes = [Genome.random(13, 8, n, rng=n) for n in (1, 3, 6)]
    first = [evaluator.evaluate(g, "mlp", 11) for g in genomes]
    model, optimizer, _ = evaluator._models["mlp"]
    again = [evaluator.evaluate(g.to_dict(), "mlp", 11) for g in genomes]
    assert first == again
    assert evaluator.evaluate_many(genomes, "mlp", 11) == first  # GenomeEvaluator's interface
    assert all(0.0 <= f <= 1.0 for f in first) and len(set(first)) > 1
    assert evaluator._models["mlp"][0] is model
    train_function = model.train_function
    if hasattr(train_function, "experimental_get_tracing_count"):
        assert train_function.experimental_get_tracing_count() == 1
    # the same genome from other initial weights trains differently
    assert (
        evaluator.evaluate(genomes[0], "mlp", 12) != first[0]
        or evaluator.evaluate(genomes[1], "mlp", 12) != first[1]
    )


class _OneAtATime(GenomeEvaluator):
    def evaluate(self, genome, architecture, seed):
        return float(genome.n_regulatory + seed)


class _ManyAtOnce(GenomeEvaluator):
    def __init__(self):
        self.calls = []

    def evaluate_many(self, genomes, architecture, seed):
        self.calls.append(len(genomes))
        return [float(g.n_regulatory + seed) for g in genomes]


def test_an_evaluator_implements_one_of_evaluate_and_evaluate_many():
    genomes = [Genome.random(13, 4, n, rng=n) for n in (1, 3, 6)]
    expected = [g.n_regulatory + 2.0 for g in genomes]
    assert _OneAtATime().evaluate_many(genomes, "mlp", 2) == expected
    many = _ManyAtOnce()
    assert [many.evaluate(g, "mlp", 2) for g in genomes] == expected
    assert many.evaluate_many(genomes, "mlp", 2) == expected
    assert many.calls == [1, 1, 1, 3]  # one genome per evaluate, all at once per evaluate_many


@pytest.mark.slow
def test_a_diverging_individual_scores_worst():
    task = FitnessTask(
        **{**TINY, "base": "sgd", "ranges": {"learning_rate": (1e6, 1e6)}, "worst_fitness": -1.0}
    )
    evaluator = Evaluator(task)
    assert evaluator.evaluate(Genome.random(13, 4, 1, rng=0), "A", 0) == -1.0
    sane = FitnessTask(**{**TINY, "base": "sgd"})
    assert Evaluator(sane).evaluate(Genome.random(13, 4, 1, rng=0), "A", 0) >= 0.0


@pytest.mark.slow
def test_evolve_with_real_training(tmp_path):
    result = evolve(
        task="digits",
        base="sgd",
        population=6,
        generations=2,
        epochs=1,
        models=("mlp", "A"),
        backend="serial",
        seed=0,
        out=str(tmp_path),
        progress=False,
        verbose=False,
        width=0.25,
        train_subset=192,
    )
    assert result.generations == 2
    assert 0.0 <= result.best.fitness.values[0] <= 1.0
    assert result.best.genome.n_outputs == 4
    assert read_json(tmp_path / "checkpoint.json")["settings"]["task"]["base"] == "sgd"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"task": "mnist"}, "Unknown dataset"),
        ({"base": "rmsprop"}, "base"),
        ({"models": ("D",)}, "Unknown architecture"),
        ({"backend": "dask"}, "backend"),
        ({"generations": -1}, "generations"),
        ({"epochs": 0}, "epochs"),
        ({"timeout": 60}, "timeout needs the 'process' or the 'ray' backend"),
        ({"backend": "process", "timeout": -1}, "timeout must be a positive number"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        toy_evolution(**{"population": 6, "generations": 1, **kwargs})


# -- examples/evolve.py --------------------------------------------------------


def _evolve_example():
    from examples_loader import load_example

    return load_example("evolve")


@pytest.mark.slow
def test_evolve_example_with_no_generation_writes_no_agent(tmp_path, capsys):
    example = _evolve_example()
    out = str(tmp_path / "run")
    tiny = [*TINY_EVOLVE, "--out", out]
    example.main(tiny + ["--generations", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "No generation was run (--generations 0)" in lines[-2]
    assert json.loads(lines[-1]) == {
        "best_fitness": None,
        "validation_score": None,
        "generations": 0,
        "evaluations": 0,
        "evaluated_now": 0,
        "agent": None,
    }
    assert os.listdir(out) == []

    example.main(tiny + ["--generations", "1"])
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # --generations 0 on a finished run writes its agent again, with the command of the run
    example.main(tiny + ["--generations", "0", "--resume"])
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again == {**first, "evaluated_now": 0}
    command = read_json(again["agent"])["provenance"]["command"]
    assert "--generations 1 " in command

    serial_with_timeout = ["--timeout", "60", "--backend", "serial"]
    for bad in (["--generations", "-1"], ["--timeout", "0"], serial_with_timeout):
        with pytest.raises(SystemExit) as exit_info:
            example.parse_args(bad)
        assert exit_info.value.code == 2
    assert "--timeout" not in example.reproducing_command(example.parse_args([]), 1)
    args = example.parse_args(["--timeout", "90", "--workers", "2"])
    assert example.reproducing_command(args, 8).endswith("--workers 2 --timeout 90")


def test_evolve_example_quick_selects_the_small_settings():
    example = _evolve_example()
    for argv in (["--quick"], ["--quick", "--task", "cifar10"]):
        args = example.parse_args(argv)
        assert {name: getattr(args, name) for name in example.QUICK if name != "models"} == {
            name: value for name, value in example.QUICK.items() if name != "models"
        }
        assert args.models == tuple(example.QUICK["models"].split(","))
    assert example.parse_args(["--task", "cifar10"]).population == 50, "without --quick: full scale"
    assert example.parse_args(["--quick", "--population", "6"]).population == 6
    suite = example.parse_args(["--quick", "--suite"])
    assert {name: getattr(suite, name) for name in example.QUICK_SUITE} == example.QUICK_SUITE


# -- Ray ---------------------------------------------------------------------

ray = pytest.importorskip("ray", reason="the Ray backend needs the [ray] extra")


@pytest.fixture(scope="module")
def local_ray():
    import ray.cloudpickle

    # The cheap fitness functions live in this test module and in helpers.py,
    # which Ray's workers cannot import: send them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(helpers)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend_on_a_local_cluster(local_ray):
    from keras_neuromod.evolution.parallel import RayBackend

    assert logbook_records(
        toy_evolution(seed=7, generations=2, backend="ray", workers=2)
    ) == logbook_records(toy_evolution(seed=7, generations=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # one individual of the second generation crashes: its actor is lost twice
        crashed = toy_evolution(
            seed=7,
            generations=2,
            population=4,
            backend="ray",
            workers=2,
            fitness=crashing_fitness,
        )
    assert crashed.generations == 2 and min(r["min"] for r in crashed.logbook) == 0.0

    task = FitnessTask(**TINY)
    genomes = [Genome.random(13, 8, 1, rng=s) for s in range(3)]
    jobs = [{"genome": g.to_dict(), "architecture": "mlp", "seed": 4} for g in genomes]
    backend = RayBackend(task, workers=2)
    try:
        results = backend.map(jobs)
    finally:
        backend.close()
    local = Evaluator(task)
    expected = [local.evaluate(g, "mlp", 4) for g in genomes]
    np.testing.assert_allclose(results, expected, atol=0.02)


@pytest.mark.slow
def test_ray_actors_train_chunks_vectorized_with_the_local_result(local_ray):
    options = dict(
        task="digits",
        population=6,
        generations=2,
        epochs=2,
        models=("mlp",),
        seed=3,
        progress=False,
        verbose=False,
        width=0.5,
        train_subset=256,
        max_regulatory=8,
    )
    on_ray = evolve(backend="ray", vectorized=True, workers=2, **options)
    assert all(record["std"] > 0 for record in on_ray.logbook)
    assert logbook_records(on_ray) == logbook_records(evolve(backend="vectorized", **options))


def log_level_fitness(genome, architecture, seed):
    return float(os.environ["TF_CPP_MIN_LOG_LEVEL"])


@pytest.mark.slow
def test_ray_backend_kills_a_stopped_actor_and_runs_its_job_again(local_ray, tmp_path, monkeypatch):
    from keras_neuromod.evolution.parallel import RayBackend

    monkeypatch.setattr(sys.modules[__name__], "MARKER_DIR", str(tmp_path))
    genomes = [Genome.random(13, 8, 1, rng=s).to_dict() for s in range(4)]
    jobs, expected = toy_jobs(genomes, "B", 2)
    backend = RayBackend(stall_once_fitness, workers=2, timeout=3)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert backend.map(jobs) == expected
            assert backend.map(jobs) == expected  # the killed actor is back
        messages = [str(w.message) for w in caught]
        assert sum("no answer within 3 s" in m and "run again" in m for m in messages) == 1
        assert len(messages) == 1
    finally:
        backend.close()
    backend = RayBackend(log_level_fitness, workers=1)
    try:
        assert backend.map(jobs[:1]) == [3.0]  # TensorFlow starts quiet in the actors
    finally:
        backend.close()
