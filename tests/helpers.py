"""Helpers the tests share: agents, ranges, logbooks and small trainings (importable from
the tests and from their subprocess scripts)."""

import time

import keras
import numpy as np

from keras_neuromod import Genome
from keras_neuromod import zoo
from keras_neuromod.evolution import evolve


def sgd_agent(seed=0, n_regulatory=3):
    """A random Nm-SGD genome of the core paper's 13 inputs."""
    return Genome.random(13, 4, n_regulatory, rng=seed)


def adam_agent(seed=0, n_regulatory=3):
    """A random Nm-Adam genome of the core paper's 13 inputs."""
    return Genome.random(13, 8, n_regulatory, rng=seed)


def fixed(**values):
    """Ranges that hold each named hyperparameter at one value."""
    return {name: (value, value) for name, value in values.items()}


# the logbook's columns that time a generation (wall and CPU seconds): they vary from run to run
TIMINGS = ("seconds", "cpu_seconds")
# The flags of a tiny evolution on the bundled digits: 4 genomes, one epoch of an MLP on
# 64 examples, trained in this process (a generation takes seconds).
TINY_EVOLVE = (
    "--population",
    "4",
    "--epochs",
    "1",
    "--models",
    "mlp",
    "--width",
    "0.25",
    "--train-subset",
    "64",
    "--backend",
    "serial",
    "--no-progress",
)


def logbook_records(result):
    """An evolution's logbook without its timings, which differ from run to run."""
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in result.logbook]


def train_weights(optimizer, steps=12):
    """A small regression model's weights after `steps` batches of `fit` with `optimizer`.

    The data, the model and its starting weights are the same at every call, so
    that two optimizers that should agree give the same weights.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * 8, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 2)) + 0.1 * rng.normal(size=(steps * 8, 2))).astype("float32")
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)]
    )
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


def toy_fitness(genome, architecture, seed):
    """Deterministic, cheap, task-dependent: rewards high output identifiers."""
    ids = np.asarray(genome["identifiers"])
    shift = {"A": 0.0, "B": 0.05, "C": 0.1, "mlp": 0.02}[architecture]
    return float(ids[13:21].mean() + shift + 0.001 * (seed % 10))


def slow_toy_fitness(genome, architecture, seed):
    """`toy_fitness`, 20 ms later (long enough for a process to be stopped mid-run)."""
    time.sleep(0.02)
    return toy_fitness(genome, architecture, seed)


def toy_evolution(**kwargs):
    """A serial GRNEAT run of 12 individuals for 4 generations on `toy_fitness`; `kwargs`
    change any of `evolve`'s arguments."""
    options = dict(
        population=12,
        generations=4,
        backend="serial",
        fitness=toy_fitness,
        progress=False,
        verbose=False,
        models=("A", "B", "C"),
    )
    options.update(kwargs)
    return evolve(**options)


def cpu_toy_fitness(genome, architecture, seed):
    """`toy_fitness`, after spending 0.02 s of CPU."""
    end = time.process_time() + 0.02
    while time.process_time() < end:
        pass
    return toy_fitness(genome, architecture, seed)


def sphere(genomes, rng):
    """An evolution strategy's fitness: the negated squared distance to all ones."""
    return -np.sum((genomes - 1.0) ** 2, axis=1)


def make_agent(name="nm_adam_test", base="adam", seed=0, ranges=None):
    """A zoo agent of a random genome, with settings, provenance and a benchmark note."""
    genome = Genome.random(13, 8 if base == "adam" else 4, 2, rng=seed)
    return zoo.Agent(
        name=name,
        base=base,
        genome=genome,
        ranges=ranges,
        settings={"warmup_steps": 7, "grn_steps_per_update": 2},
        provenance={
            "task": "digits",
            "seed": seed,
            "command": "python examples/evolve.py --seed 0",
        },
        benchmark={"note": "made in a test"},
    )
