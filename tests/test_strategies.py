"""Tests of the evolution-strategies trainer and of the batched ENU fitness."""

import json
import os

import keras
import numpy as np
import pytest
from deap import tools
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_neuromod.evolution.enu_fitness import ENUFitness
from keras_neuromod.evolution.enu_fitness import enu_outputs
from keras_neuromod.evolution.strategies import EvolutionStrategy
from keras_neuromod.evolution.strategies import centered_ranks
from keras_neuromod.layers.enu import ENUCell
from keras_neuromod.layers.enu import enu_num_params

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = np.linspace(-1.0, 1.0, 12)


def sphere(genomes, rng):
    """Known objective with random environments: a noisy shifted sphere, optimum TARGET."""
    shift = rng.normal(0.0, 0.01, TARGET.shape)
    return -np.sum((genomes - (TARGET + shift)) ** 2, axis=1)


def comparable(logbook):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in logbook]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_subnormal=False), min_size=2, max_size=40), st.randoms())
def test_centered_ranks_invariants(values, random):
    ranks = centered_ranks(values)
    assert ranks.min() == -0.5 and ranks.max() == 0.5
    np.testing.assert_allclose(ranks.sum(), 0.0, atol=1e-9)
    assert len(set(ranks.tolist())) == len(values)
    # Order preserving: a strictly better fitness never gets a lower rank.
    values = np.asarray(values)
    for i in range(len(values)):
        for j in range(len(values)):
            if values[i] > values[j]:
                assert ranks[i] > ranks[j]
    # Invariant under (exactly representable) increasing transforms of the fitness.
    np.testing.assert_array_equal(centered_ranks(4.0 * values), ranks)


def test_centered_ranks_values():
    np.testing.assert_allclose(centered_ranks([3.0, -1.0, 10.0]), [0.0, -0.5, 0.5])
    # ties broken by position
    np.testing.assert_allclose(centered_ranks([0.0, 2.0, 2.0, 5.0]), [-0.5, -1 / 6, 1 / 6, 0.5])


def test_flat_fitness_takes_a_random_step():
    # On a plateau every mirrored pair ties; its -eps twin wins by position, so the
    # step is along -sum(eps), a new random direction every generation.
    es = EvolutionStrategy(
        lambda g, rng: np.full(len(g), -1.0),
        np.zeros(5),
        population=8,
        sigma=0.1,
        learning_rate=1.0,
        momentum=0.0,
        seed=3,
    )
    genomes, noise, _ = es.ask()
    es.tell(noise, np.full(8, -1.0))
    np.testing.assert_allclose(es.theta, -(4 / 7) * noise.sum(axis=0) / (8 * 0.1))
    previous = es.theta.copy()
    genomes, noise_2, _ = es.ask()
    es.tell(noise_2, np.full(8, -1.0))
    np.testing.assert_allclose(es.theta - previous, -(4 / 7) * noise_2.sum(axis=0) / 0.8)
    assert not np.allclose(noise_2, noise)  # a new direction


def test_mirrored_sampling_and_update_by_hand():
    es = EvolutionStrategy(
        sphere, np.zeros(3), population=4, sigma=0.1, learning_rate=0.5, momentum=0.9, seed=7
    )
    genomes, noise, _ = es.ask()
    np.testing.assert_allclose(genomes[:2] + genomes[2:], 0.0, atol=1e-7)
    np.testing.assert_allclose(genomes[:2], 0.1 * noise, rtol=1e-6)
    fitness = np.array([1.0, 4.0, 3.0, 2.0])
    es.tell(noise, fitness)
    u = np.array([-0.5, 0.5, 1 / 6, -1 / 6])
    grad = ((u[:2] - u[2:])[:, None] * noise).sum(axis=0) / (4 * 0.1)
    np.testing.assert_allclose(es.velocity, grad)
    np.testing.assert_allclose(es.theta, 0.5 * grad)
    es.tell(noise, fitness)
    np.testing.assert_allclose(es.velocity, 1.9 * grad)
    np.testing.assert_allclose(es.theta, 0.5 * grad + 0.5 * 1.9 * grad)


def test_adam_update_by_hand():
    es = EvolutionStrategy(
        sphere,
        np.zeros(3),
        population=4,
        sigma=0.1,
        learning_rate=0.01,
        momentum=0.8,
        seed=7,
        update="adam",
        beta_2=0.99,
        epsilon=1e-6,
    )
    u = np.array([-0.5, 0.5, 1 / 6, -1 / 6])  # centred ranks of the fitness below
    fitness = np.array([1.0, 4.0, 3.0, 2.0])
    m = s = theta = np.zeros(3)
    for step in (1, 2):
        genomes, noise, _ = es.ask()
        es.tell(noise, fitness)
        grad = ((u[:2] - u[2:])[:, None] * noise).sum(axis=0) / (4 * 0.1)
        m = 0.8 * m + 0.2 * grad
        s = 0.99 * s + 0.01 * grad**2
        theta = theta + 0.01 * (m / (1 - 0.8**step)) / (np.sqrt(s / (1 - 0.99**step)) + 1e-6)
        np.testing.assert_allclose(es.theta, theta, rtol=1e-12)
        np.testing.assert_allclose(es.second_moment, s, rtol=1e-12)
    assert es.generation == 2
    # The first Adam step moves every parameter by about the learning rate.
    first = EvolutionStrategy(
        sphere, np.zeros(3), population=4, learning_rate=0.01, seed=7, update="adam"
    )
    first.tell(first.ask()[1], fitness)
    np.testing.assert_allclose(np.abs(first.theta), 0.01, rtol=1e-4)


def test_adam_converges_and_resumes_exactly(tmp_path):
    settings_ = dict(population=32, sigma=0.05, learning_rate=0.05, seed=5, update="adam")
    straight = EvolutionStrategy(sphere, np.zeros(TARGET.size), **settings_)
    theta = straight.run(150, progress=False)
    assert straight.logbook[0]["mean"] < -4.0 and straight.logbook[-1]["mean"] > -0.1
    np.testing.assert_allclose(theta, TARGET, atol=0.1)
    path = tmp_path / "adam.json"
    EvolutionStrategy(sphere, np.zeros(TARGET.size), **settings_).run(
        60, checkpoint_path=path, progress=False
    )
    assert len(json.loads(path.read_text())["second_moment"]) == TARGET.size
    resumed = EvolutionStrategy(sphere, np.zeros(TARGET.size), **settings_)
    resumed.run(150, checkpoint_path=path, progress=False, resume=True)
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    np.testing.assert_array_equal(resumed.second_moment, straight.second_moment)
    momentum = EvolutionStrategy(sphere, np.zeros(TARGET.size), population=32, seed=5)
    with pytest.raises(ValueError, match="update"):
        momentum.load_checkpoint(path)


def test_converges_on_known_objective():
    es = EvolutionStrategy(
        sphere, np.zeros(TARGET.size), population=32, sigma=0.05, learning_rate=0.005, seed=0
    )
    theta = es.run(200, progress=False)
    assert es.logbook[0]["mean"] < -4.0
    assert es.logbook[-1]["mean"] > -0.1
    np.testing.assert_allclose(theta, TARGET, atol=0.1)


def test_same_seed_same_run_and_other_seed_differs():
    runs = []
    for seed in (3, 3, 4):
        es = EvolutionStrategy(sphere, np.zeros(TARGET.size), population=8, sigma=0.1, seed=seed)
        runs.append(es.run(5, progress=False))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_resume_equals_uninterrupted(tmp_path):
    settings_ = dict(
        population=8, sigma=0.1, learning_rate=0.02, momentum=0.9, weight_decay=0.001, seed=11
    )
    straight = EvolutionStrategy(sphere, np.zeros(TARGET.size), **settings_)
    straight.run(9, progress=False)

    path = tmp_path / "es.json"
    first = EvolutionStrategy(sphere, np.zeros(TARGET.size), **settings_)
    first.run(4, checkpoint_path=path, progress=False)
    saved = json.loads(path.read_text())
    assert saved["generation"] == 4 and saved["logbook"] == json.loads(json.dumps(first.logbook))
    assert saved["rng_state"]["bit_generator"] == "PCG64"

    calls = []

    def counting(genomes, rng):
        calls.append(1)
        return sphere(genomes, rng)

    resumed = EvolutionStrategy(counting, np.zeros(TARGET.size), **settings_)
    resumed.run(9, checkpoint_path=path, progress=False, resume=True)
    assert len(calls) == 5  # no generation redone
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    np.testing.assert_array_equal(resumed.velocity, straight.velocity)
    assert comparable(resumed.logbook) == comparable(straight.logbook)
    assert resumed.rng.bit_generator.state == straight.rng.bit_generator.state
    # Asking for generations already done runs nothing.
    again = EvolutionStrategy(counting, np.zeros(TARGET.size), **settings_)
    again.run(6, checkpoint_path=path, progress=False, resume=True)
    assert len(calls) == 5 and again.generation == 9


def test_an_existing_checkpoint_is_continued_only_when_asked(tmp_path):
    # The convention of `evolve`: resume=False by default, and an existing
    # checkpoint is then refused, never overwritten.
    path = tmp_path / "es.json"
    EvolutionStrategy(sphere, np.zeros(TARGET.size), population=4, seed=0).run(
        2, checkpoint_path=path, progress=False
    )
    saved = path.read_text()
    fresh = EvolutionStrategy(sphere, np.zeros(TARGET.size), population=4, seed=0)
    with pytest.raises(FileExistsError, match="resume=True"):
        fresh.run(3, checkpoint_path=path, progress=False)
    assert path.read_text() == saved and fresh.generation == 0
    fresh.run(3, checkpoint_path=path, progress=False, resume=True)
    assert fresh.generation == 3
    # resume=True without a checkpoint starts afresh
    EvolutionStrategy(sphere, np.zeros(TARGET.size), population=4, seed=0).run(
        1, checkpoint_path=tmp_path / "new.json", progress=False, resume=True
    )
    assert json.loads((tmp_path / "new.json").read_text())["generation"] == 1


def test_the_logbook_is_deap_s_as_grneat_s():
    es = EvolutionStrategy(sphere, np.zeros(TARGET.size), population=8, seed=0)
    es.run(3, progress=False)
    assert isinstance(es.logbook, tools.Logbook)
    assert es.logbook.select("gen") == [0, 1, 2]
    assert set(es.logbook[0]) == {"gen", "max", "mean", "min", "std", "seconds"}
    assert es.logbook[0]["min"] <= es.logbook[0]["mean"] <= es.logbook[0]["max"]
    assert "gen" in es.logbook.stream


# Written by the code of the first checkpoint format (its logbook a list of dicts
# named "history", keyed "generation"), which this version no longer reads.
OLD_CHECKPOINT = os.path.join(HERE, "data", "es_checkpoint_v1.json")


def test_a_checkpoint_of_the_first_format_is_refused_naming_its_format(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(open(OLD_CHECKPOINT).read())
    resumed = EvolutionStrategy(sphere, np.zeros(TARGET.size), population=4, sigma=0.1, seed=1)
    with pytest.raises(
        ValueError,
        match="format is 'keras_neuromod.EvolutionStrategy/1', "
        "expected 'keras_neuromod.EvolutionStrategy/2'",
    ):
        resumed.run(5, checkpoint_path=path, progress=False, resume=True)
    assert json.loads(path.read_text())["format"] == "keras_neuromod.EvolutionStrategy/1"


def test_checkpoint_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "es.json"
    EvolutionStrategy(sphere, np.zeros(TARGET.size), population=4, seed=1).run(
        1, checkpoint_path=path, progress=False
    )
    other = EvolutionStrategy(sphere, np.zeros(TARGET.size), population=6, seed=1)
    with pytest.raises(ValueError, match="population"):
        other.run(2, checkpoint_path=path, progress=False, resume=True)
    path.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not an EvolutionStrategy checkpoint"):
        EvolutionStrategy(sphere, np.zeros(TARGET.size), population=4, seed=1).load_checkpoint(path)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"population": 5}, "population"),
        ({"population": 0}, "population"),
        ({"population": 4.0}, "population"),
        ({"seed": True}, "seed"),
        ({"seed": -1}, "seed"),
        ({"sigma": 0.0}, "sigma"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"initial": np.zeros((2, 2))}, "initial"),
        ({"fitness_fn": 3}, "fitness_fn"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"update": "sgd"}, "update"),
        ({"beta_2": 1.0}, "beta_2"),
        ({"epsilon": 0.0}, "epsilon"),
    ],
)
def test_bad_arguments(kwargs, name):
    args = {"fitness_fn": sphere, "initial": np.zeros(3)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        EvolutionStrategy(**args)


def test_bad_fitness_output():
    es = EvolutionStrategy(lambda g, rng: np.zeros(3), np.zeros(2), population=4)
    with pytest.raises(ValueError, match="returned 3 values"):
        es.step()
    es = EvolutionStrategy(lambda g, rng: np.full(4, np.nan), np.zeros(2), population=4)
    with pytest.raises(ValueError, match="non-finite"):
        es.step()


# ------------------------------------------------- evolving an ENU, batched and compiled
MEMORY, CHANNELS, STEPS, ENVS = 3, 2, 6, 4


def levels(rng):
    """One generation's environments: a random level per environment, held."""
    return (rng.uniform(0.1, 0.9, (1, ENVS, 1)) * np.ones((STEPS, 1, 1))).astype(np.float32)


def score(genomes, inputs):
    """Output channel 0 should track the level given as input."""
    out = enu_outputs(genomes, inputs, MEMORY, CHANNELS)
    return -keras.ops.mean(keras.ops.square(out[..., 0] - inputs[:, None, :, 0]), axis=(0, 2))


def enu_fitness():
    return ENUFitness(score, levels)


def test_enu_outputs_equal_the_rnn_layer_per_individual():
    # The batched path (one weight set per individual) against Keras's RNN layer
    # running an ENUCell with each genome in turn.
    rng = np.random.default_rng(3)
    population, input_dim = 3, 2
    genomes = rng.normal(0, 0.7, (population, enu_num_params(input_dim, MEMORY, CHANNELS)))
    genomes = genomes.astype(np.float32)
    inputs = rng.uniform(-1, 1, (STEPS, ENVS, input_dim)).astype(np.float32)
    got = keras.ops.convert_to_numpy(enu_outputs(genomes, inputs, MEMORY, CHANNELS))
    assert got.shape == (STEPS, population, ENVS, CHANNELS)
    cell = ENUCell(memory=MEMORY, channels=CHANNELS)
    layer = keras.layers.RNN(cell, return_sequences=True)
    layer.build((ENVS, STEPS, input_dim))
    for i in range(population):
        cell.set_flat_weights(genomes[i])
        want = keras.ops.convert_to_numpy(layer(inputs.transpose(1, 0, 2)))  # (E, T, C)
        np.testing.assert_allclose(got[:, i], want.transpose(1, 0, 2), rtol=1e-5, atol=1e-6)
        alone = keras.ops.convert_to_numpy(enu_outputs(genomes[i], inputs, MEMORY, CHANNELS))
        np.testing.assert_allclose(alone, got[:, i], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[:, 0], got[:, 1])  # the individuals really differ


def test_batched_enu_fitness_equals_loop():
    fitness = enu_fitness()
    rng = np.random.default_rng(0)
    genomes = rng.normal(0, 0.5, (4, enu_num_params(1, MEMORY, CHANNELS))).astype(np.float32)
    together = fitness(genomes, np.random.default_rng(9))
    assert isinstance(together, np.ndarray) and together.shape == (4,)
    inputs = levels(np.random.default_rng(9))
    np.testing.assert_array_equal(fitness.evaluate(genomes, inputs), together)
    for i in range(4):
        alone = keras.ops.convert_to_numpy(score(genomes[i : i + 1], inputs))
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-5, atol=1e-7)


def test_enu_fitness_takes_the_first_of_several_outputs():
    def score_and_outputs(genomes, inputs):
        return score(genomes, inputs), enu_outputs(genomes, inputs, MEMORY, CHANNELS)

    fitness = ENUFitness(score_and_outputs, levels)
    genomes = (
        np.random.default_rng(1)
        .normal(0, 0.5, (2, enu_num_params(1, MEMORY, CHANNELS)))
        .astype(np.float32)
    )
    np.testing.assert_allclose(
        fitness(genomes, np.random.default_rng(2)),
        enu_fitness()(genomes, np.random.default_rng(2)),
        rtol=1e-6,
    )
    values, outputs = fitness.evaluate(genomes, levels(np.random.default_rng(2)))
    assert values.shape == (2,) and outputs.shape == (STEPS, 2, ENVS, CHANNELS)
    with pytest.raises(ValueError, match="callable"):
        ENUFitness(score, None)


def test_evolves_enu_and_resumes_exactly(tmp_path):
    fitness = enu_fitness()
    initial = np.random.default_rng(1).normal(0, 0.3, enu_num_params(1, MEMORY, CHANNELS))
    settings_ = dict(population=16, sigma=0.05, learning_rate=0.01, seed=2)
    straight = EvolutionStrategy(fitness, initial, **settings_)
    straight.run(40, progress=False)
    assert straight.logbook[-1]["mean"] > straight.logbook[0]["mean"] + 0.02
    path = tmp_path / "enu.json"
    EvolutionStrategy(fitness, initial, **settings_).run(15, checkpoint_path=path, progress=False)
    resumed = EvolutionStrategy(fitness, initial, **settings_)
    resumed.run(40, checkpoint_path=path, progress=False, resume=True)
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    assert comparable(resumed.logbook) == comparable(straight.logbook)
