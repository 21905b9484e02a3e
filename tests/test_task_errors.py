"""A broken task stops an evolution with its real error; a user's own tasks reach the workers.

An evaluation error that is the task's (its data, its models, the baseline's
training, a worker that cannot start) must not score every individual worst and
ship an agent: `evolve` raises `TaskError` with the worker's traceback and writes
no checkpoint. Individual failures keep their outcome (run again, then scored
worst; `test_evolution.py`). Tasks and models registered where workers cannot
import them (inside a test function here, as in a notebook or `python -c`) are
sent to the workers.

Every test starts real worker processes: TensorFlow workers for fitness
functions and model.fit, JAX workers for the suite's vectorized trainings.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

from keras_neuromod import tasks
from keras_neuromod.agrn import Genome
from keras_neuromod.bases import N_INPUTS
from keras_neuromod.evolution import FitnessTask
from keras_neuromod.evolution import SuiteTask
from keras_neuromod.evolution import TaskError
from keras_neuromod.evolution import evolve
from keras_neuromod.evolution.parallel import ProcessBackend
from keras_neuromod.evolution.parallel import SerialBackend

QUIET = dict(progress=False, verbose=False)
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def always_failing_fitness(genome, architecture, seed):
    """Fails as a JAX shape error does: the message, then JAX's note on filtered frames."""
    error = TypeError(
        "dot_general requires contracting dimensions to have the same shape, got (8,) and (10,)."
    )
    error.add_note(
        "--------------------\nFor simplicity, JAX has removed its internal frames "
        "from the traceback of the following exception."
    )
    raise error


def sometimes_failing_fitness(genome, architecture, seed):
    """Fails for about a third of the genomes, always."""
    key = hashlib.sha1(json.dumps(genome, sort_keys=True).encode()).hexdigest()
    if int(key, 16) % 3 == 0:
        raise ValueError("this individual fails")
    return 1.0


def _regression_data(bad=None):
    """A small regression task's data function; `bad` spoils it ("nan" or "shape")."""

    def data(seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(160, 4)).astype("float32")
        y = (x @ np.arange(1.0, 5.0)[:, None]).astype("float32")
        if bad == "nan":
            x[7, 2] = np.nan
        if bad == "shape":
            y = np.concatenate([y, y], axis=1)
        return (x[:120], y[:120]), (x[120:], y[120:]), 0

    return data


def _register_local_task(name, bad=None):
    """A task and a one-unit model registered here only: the workers cannot import them.

    `bad` spoils the data ("nan", "shape") or makes the builder ignore its seed
    ("unseeded").
    """

    def one_unit(input_shape, output_dim, seed=None):
        initializer = keras.initializers.GlorotUniform(None if bad == "unseeded" else seed)
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Dense(1, kernel_initializer=initializer)(inputs))

    tasks.register_model(f"{name}_model", one_unit, overwrite=True)
    tasks.register(
        tasks.Task(
            name,
            "regression",
            _regression_data(bad),
            (f"{name}_model",),
            "mean_squared_error",
            epochs=1,
        ),
        overwrite=True,
    )
    return SuiteTask(tasks=(name,), instances=1)


@pytest.mark.slow
def test_tasks_registered_here_train_in_the_workers(tmp_path):
    suite = _register_local_task("local_regression")
    result = evolve(suite, population=3, generations=1, workers=1, seed=0, **QUIET)
    scores = [ind.fitness.values[0] for ind in result.hall_of_fame]
    # real scores against the Adam baseline, not the worst score of a failed evaluation
    assert all(np.isfinite(scores)) and max(scores) > suite.worst_fitness
    assert len(set(scores)) > 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad, error",
    [
        ("nan", r"NaN or infinite value\(s\) in x_train"),
        ("shape", r"TypeError: cannot reshape array of shape \(32, 2\)"),
        ("unseeded", r"ignores its seed: built twice with seed \d+, its weights differ"),
    ],
)
def test_a_broken_task_stops_the_run_with_its_error_and_writes_nothing(tmp_path, bad, error):
    suite = _register_local_task(f"broken_{bad}", bad)
    out = tmp_path / "run"
    with pytest.raises(TaskError, match=error) as raised:
        evolve(suite, population=3, generations=2, workers=1, out=str(out), **QUIET)
    message = str(raised.value)
    assert "the run stops" in message and f"task 'broken_{bad}'" in message
    assert "Traceback" in message  # the worker's
    assert not (out / "checkpoint.json").exists()


@pytest.mark.slow
def test_every_individual_failing_stops_the_run_with_the_error_not_jax_note(tmp_path):
    out = tmp_path / "run"
    for backend, workers in (("serial", None), ("process", 1)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(TaskError, match="every evaluation failed") as raised:
                evolve(
                    population=3,
                    generations=2,
                    models=("mlp",),
                    backend=backend,
                    workers=workers,
                    fitness=always_failing_fitness,
                    out=str(out),
                    **QUIET,
                )
        assert "TypeError: dot_general requires contracting dimensions" in str(raised.value)
        reasons = [
            str(w.message) for w in caught if "Evaluating an individual failed" in str(w.message)
        ]
        assert reasons and all("(TypeError: dot_general requires" in r for r in reasons)
        assert not (out / "checkpoint.json").exists()


def test_individual_failures_alone_do_not_stop_the_run():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evolve(
            population=8,
            generations=2,
            models=("mlp",),
            backend="serial",
            seed=1,
            fitness=sometimes_failing_fitness,
            **QUIET,
        )
    assert result.generations == 2
    scores = [s for record in result.logbook for s in (record["min"], record["max"])]
    assert 0.0 in scores and 1.0 in scores
    final = [str(w.message) for w in caught if "scored worst" in str(w.message)]
    assert final and all("ValueError: this individual fails" in m for m in final)
    assert all("Traceback" in m for m in final)  # a scored-worst failure carries its traceback


def test_a_task_error_is_not_retried_by_the_serial_backend():
    calls = []

    def fitness(genome, architecture, seed):
        calls.append(1)
        raise TaskError("the data are gone")

    with pytest.raises(TaskError, match="the data are gone"):
        SerialBackend(fitness).map([{"genome": {}, "architecture": "A", "seed": 0}] * 3)
    assert len(calls) == 1


@pytest.mark.slow
def test_a_missing_dependency_in_the_workers_stops_the_run(tmp_path, monkeypatch):
    # A worker whose scikit-learn cannot be imported (a package of that name
    # first on its path that raises ImportError): the digits cannot load.
    # first on its path that raises ImportError): the digits cannot load. A
    # spawned worker takes its path from this process.
    fake = tmp_path / "site" / "sklearn"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no scikit-learn here')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    task = FitnessTask(dataset="digits", epochs=1, train_subset=64, width=0.25)
    genome = Genome.random(N_INPUTS, task.n_outputs, 1, rng=0).to_dict()
    backend = ProcessBackend(task, workers=1, threads=1)
    try:
        with pytest.raises(TaskError, match="pip install scikit-learn"):
            backend.map([{"genome": genome, "architecture": "mlp", "seed": 0}])
    finally:
        backend.close()


@pytest.mark.slow
def test_a_script_without_a_main_guard_stops_with_a_message_that_says_so(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(f"""
        from keras_neuromod.evolution import evolve

        def fitness(genome, architecture, seed):
            return 1.0

        evolve(population=2, generations=1, models=("mlp",), backend="process", workers=1,
               fitness=fitness, progress=False, verbose=False, out={str(tmp_path / "run")!r})
        print("an agent was evolved")
    """)
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode != 0
    assert "an agent was evolved" not in done.stdout
    assert "TaskError" in done.stderr and 'if __name__ == "__main__":' in done.stderr
    assert not (tmp_path / "run" / "checkpoint.json").exists()


@pytest.mark.slow
def test_on_ray_tasks_registered_here_train_and_a_task_error_stops_the_map():
    ray = pytest.importorskip("ray", reason="the Ray backend needs the [ray] extra")
    from keras_neuromod.evolution.parallel import RayBackend

    def fitness(genome, architecture, seed):
        raise TaskError("the data are gone")

    suite = _register_local_task("ray_regression")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        backend = RayBackend(fitness, workers=1)
        try:
            with pytest.raises(TaskError, match="the data are gone"):
                backend.map([{"genome": {}, "architecture": "A", "seed": 0}] * 2)
        finally:
            backend.close()
        result = evolve(
            suite,
            population=3,
            generations=1,
            backend="ray",
            vectorized=True,
            workers=1,
            seed=0,
            **QUIET,
        )
        scores = [ind.fitness.values[0] for ind in result.hall_of_fame]
        assert all(np.isfinite(scores)) and max(scores) > suite.worst_fitness
    finally:
        if started:
            ray.shutdown()


@pytest.mark.slow
def test_the_evolve_example_exits_non_zero_and_writes_no_agent_on_a_task_error(tmp_path):
    # its workers cannot import scikit-learn (as above), so the digits cannot load
    fake = tmp_path / "site" / "sklearn"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no scikit-learn here')\n")
    out = tmp_path / "run"
    environment = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
    )
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(EXAMPLES, "evolve.py"),
            "--quick",
            "--backend",
            "process",
            "--workers",
            "1",
            "--generations",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    assert done.returncode != 0
    assert "TaskError" in done.stderr and "pip install scikit-learn" in done.stderr
    assert not (out / "best_agent.json").exists() and not (out / "checkpoint.json").exists()


def _toy_fitness(genome, architecture, seed):
    return 0.5


def test_a_fitness_a_backend_cannot_train_is_refused_with_one_message_everywhere():
    from keras_neuromod.evolution.parallel import check_trainable
    from keras_neuromod.evolution.parallel import evaluate_job
    from keras_neuromod.evolution.parallel import make_backend

    suite = SuiteTask(instances=1)
    chunk = {
        "genomes": [],
        "architecture": "mlp",
        "seed": 0,
        "vmap": None,
        "scan": None,
        "width": 16,
    }
    refusals = {
        "A SuiteTask trains vectorized: use backend='vectorized'": [
            lambda: make_backend("process", suite),
            lambda: make_backend("serial", suite),
            lambda: evaluate_job(suite, {"genome": {}, "architecture": "suite", "seed": 0}),
            lambda: check_trainable(suite, vectorized=False),
        ],
        "Vectorized evaluation trains a FitnessTask or a SuiteTask; a fitness function": [
            lambda: make_backend("vectorized", _toy_fitness),
            lambda: evaluate_job(_toy_fitness, chunk),
            lambda: check_trainable(_toy_fitness, vectorized=True),
        ],
    }
    for message, calls in refusals.items():
        for call in calls:
            with pytest.raises(ValueError, match=message):
                call()
    check_trainable(suite, vectorized=True)
    check_trainable(_toy_fitness, vectorized=False)
