"""Vectorized evaluation: the fitness of `model.fit`, from compiled, batched JAX trainings.

The JAX-side comparisons run once, in a fresh JAX process (`tests/vectorized_jax.py`),
whatever backend runs the tests; the backend tests start real JAX worker processes
from this (TensorFlow) process, and a real local Ray cluster.
"""

import collections
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from helpers import TIMINGS
from helpers import logbook_records
from keras_neuromod import Genome
from keras_neuromod import tasks
from keras_neuromod.evolution import ENUFitness
from keras_neuromod.evolution import Evaluator
from keras_neuromod.evolution import FitnessTask
from keras_neuromod.evolution import evolve
from keras_neuromod.evolution.batched import evaluate_population
from keras_neuromod.evolution.parallel import VectorizedBackend
from keras_neuromod.evolution.parallel import make_backend
from keras_neuromod.io import read_json

HERE = os.path.dirname(os.path.abspath(__file__))
TASK = dict(
    dataset="digits",
    base="adam",
    epochs=2,
    batch_size=32,
    width=0.25,
    train_subset=250,
    max_regulatory=6,
)


@pytest.fixture(scope="module")
def jax_run():
    """vectorized_jax.py's record, its two parts run at once in two JAX processes."""
    environment = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    parts = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "vectorized_jax.py"), part],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in ("fit", "suite")
    ]
    try:
        outputs = [process.communicate(timeout=900) for process in parts]
    finally:  # a timeout or an interrupt leaves no process behind
        for process in parts:
            if process.poll() is None:
                process.kill()
                process.wait()
    result = {}
    for process, (stdout, stderr) in zip(parts, outputs):
        assert process.returncode == 0, stderr[-3000:]
        result.update(json.loads(stdout.strip().splitlines()[-1]))
    assert result["backend"] == "jax"
    return result


SCENARIOS = ("adam-mlp", "adam-A", "sgd-val-mlp", "sgd-A")


@pytest.mark.slow
@pytest.mark.parametrize("name", SCENARIOS)
def test_vectorized_training_gives_the_fitness_of_fit(jax_run, name):
    """The same initial weights, batches, loss, update and metric: the same fitness."""
    record = jax_run["scenarios"][name]
    fit, vectorized = np.asarray(record["fit"]), np.asarray(record["vectorized"])
    assert len(set(np.round(fit, 6))) > 1  # the genomes train differently
    np.testing.assert_allclose(vectorized, fit, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", SCENARIOS)
def test_every_plan_gives_the_same_fitness(jax_run, name):
    """Batched or one by one, one loop or a call per batch, any group width."""
    record = jax_run["scenarios"][name]
    for plan in record["plans"]:
        np.testing.assert_allclose(
            plan["values"], record["fit"], rtol=0, atol=1e-6, err_msg=str(plan["plan"])
        )


@pytest.mark.slow
def test_dense_models_are_batched_and_convolutional_ones_stepped_on_cpu(jax_run):
    scenarios = jax_run["scenarios"]
    assert scenarios["adam-mlp"]["plan"] == {"vmap": True, "scan": True}
    assert scenarios["adam-A"]["plan"] == {"vmap": False, "scan": False}


@pytest.mark.parametrize(
    "task, model, convolutional",
    [
        ("digits_conv", "conv2d", True),
        ("waveforms", "conv1d", True),
        ("shapes_resnet", "resnet_bn", True),
        ("token_majority", "attention", False),  # its kernels of rank 3 are matrix products
        ("digits_residual", "residual_mlp", False),
        ("sequence_first", "gru", False),
    ],
)
def test_the_default_plan_steps_convolutions_one_by_one_on_a_cpu_only(task, model, convolutional):
    from keras_neuromod.evolution.vectorized import batches_by_default
    from keras_neuromod.evolution.vectorized import scans_by_default

    built = tasks.get(task).build_model(model, seed=0)
    for choose in (batches_by_default, scans_by_default):
        assert choose(built, "cpu") is not convolutional
        assert choose(built, "gpu")


@pytest.mark.slow
def test_one_compiled_program_serves_every_genome_size_and_seed(jax_run):
    assert jax_run["mlp_compilations"] == 1


@pytest.mark.slow
def test_a_diverging_individual_scores_worst_and_spares_its_batch(jax_run):
    record = jax_run["divergence"]
    together, alone = np.asarray(record["together"]), np.asarray(record["alone"])
    assert (together == -1.0).any() and (together != -1.0).any()
    # the same individuals diverge, batched or alone; the others keep their scores, up to
    # the rounding of batched matrix products, which can flip a prediction or two of 250
    # in these chaotic trainings (the module docstring says so)
    np.testing.assert_array_equal(together == -1.0, alone == -1.0)
    np.testing.assert_allclose(together, alone, rtol=0, atol=0.01)
    np.testing.assert_allclose(together, record["fit"], rtol=0, atol=0.01)
    np.testing.assert_allclose(alone, record["fit"], rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "waveforms/conv1d",
        "diabetes/mlp/sensing",
        "sequence_majority/lstm/sensing",
        "digits_residual/residual_mlp/sensing",
        "token_majority/attention/sensing",
    ],
)
def test_training_program_gives_fit_and_evaluate_values_on_suite_tasks(jax_run, name):
    """Any model, loss, metric and input set: a regression, a 1-D convolutional and a recurrent
    task, each with a last partial batch; agents of the sensing set told the horizon, as the
    suite tells it."""
    record = jax_run["suite"][name]
    fit = np.asarray(record["fit_loss_metric"])
    assert all(record["finite"])
    assert len(set(np.round(fit[:, 0], 5))) > 1  # the genomes train differently
    # trained one by one, a call per batch: fit's arithmetic, to rounding
    np.testing.assert_allclose(record["one_by_one"]["loss"], fit[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(record["one_by_one"]["metric"], fit[:, 1], rtol=1e-5, atol=1e-6)
    # the least validation loss at an epoch's end, as `evaluate` after each epoch reads it
    np.testing.assert_allclose(record["one_by_one"]["best_loss"], record["fit_best"], rtol=1e-5)
    assert (np.asarray(record["best_loss"]) <= np.asarray(record["loss"])).all()
    # the default plan: batched matrix products round differently, which a chaotic
    # training may amplify; most individuals still agree to rounding
    relative = np.abs(np.asarray(record["loss"]) - fit[:, 0]) / np.abs(fit[:, 0])
    assert np.median(relative) < 1e-4


@pytest.mark.slow
def test_dropout_draws_start_from_the_programs_seed_states_or_the_ones_given(jax_run):
    """`set_weights` leaves the seed generators and `fit` advances them: a program starts
    every training from those the model had when it was made, or from those `run` is given."""
    record = jax_run["seed_states"]
    assert record["generators"] == 2 and record["advanced_by_fit"]
    assert record["after_fit"] == record["first"]  # the program's own states, not the model's
    assert record["same_seed"] == record["first"]
    assert record["other_seed"] != record["first"]
    assert "seed_states must be the states of the model's 2" in record["refused"]
    assert record["without_dropout"] == 0


@pytest.mark.slow
def test_a_program_trains_other_lengths_without_compiling_again_and_scales_its_loss(jax_run):
    record = jax_run["varied"]
    for epochs in ("1", "2", "4", "6"):  # a program of 3 epochs, compiled for up to 4
        scanned, alone = record["lengths"][epochs]
        assert scanned == pytest.approx(alone, rel=1e-5)
    losses = [record["lengths"][epochs][1] for epochs in ("1", "2", "4", "6")]
    assert losses == sorted(losses, reverse=True)  # longer trainings, lower losses
    assert record["compiled"] == [1, 2]  # once up to max_epochs, once for the longer one
    assert record["scaled"] == pytest.approx(record["faster"], rel=1e-5)
    assert record["scaled"] != pytest.approx(record["lengths"]["2"][0], rel=1e-3)
    assert "at least one epoch" in record["refused"][0]
    assert all("loss_scale must be a positive number" in r for r in record["refused"][1:])


@pytest.mark.slow
def test_suite_fitness_scores_against_keras_adam_on_validation_loss(jax_run):
    record = jax_run["suite_fitness"]
    table = np.asarray(record["table"])
    assert table.shape == (4, 2) and np.all(np.abs(table) <= 3.0)
    np.testing.assert_array_equal(table, record["again"])  # deterministic
    no_harm = np.asarray(record["no_harm_table"])
    for column, check in enumerate(record["checks"]):
        # each instance varies its task's length and scales, as drawn from its seed
        epochs, loss_scale, weight_scale, batch_size, width, blocks = check["variation"]
        assert batch_size == check["task_batch_size"]  # "varied" keeps the task's batch size
        assert (width, blocks) == (1.0, None)  # and the standard model
        assert check["epochs"] == epochs and check["weights_scaled"]
        assert 0.1 <= loss_scale <= 10 and 0.5 <= weight_scale <= 2
        # the baseline is Keras's default Adam trained on the instance as fit trains it
        assert check["baseline"] == pytest.approx(check["fit_baseline"], rel=1e-4)
        agent_loss, agent_best = np.asarray(check["agent_loss"]), np.asarray(check["agent_best"])
        expected = np.clip(np.log(check["baseline"] / agent_loss), -3, 3)
        np.testing.assert_allclose(table[:, column], expected, rtol=1e-6, atol=1e-9)
        # no harm: less the rise from the best epoch beyond the reference's own rise
        assert (agent_best <= agent_loss).all() and check["baseline_best"] <= check["baseline"]
        rise = np.log(agent_loss / agent_best) - np.log(check["baseline"] / check["baseline_best"])
        expected = np.clip(np.log(check["baseline"] / agent_loss) - np.maximum(rise, 0), -3, 3)
        np.testing.assert_allclose(no_harm[:, column], expected, rtol=1e-6, atol=1e-9)
    assert (no_harm <= table + 1e-9).all()
    assert len({(name, model) for name, model, _ in record["instances"]}) >= 1
    # the draw holds an instance shorter than its task's budget
    assert any(c["epochs"] < c["task_epochs"] for c in record["checks"])
    # the tuned reference: the least validation loss over Adam's learning-rate grid
    tuned = record["tuned"]
    assert tuned["instances"] == record["instances"]  # the reference does not change the draw
    grid, fit_grid = np.asarray(tuned["grid"]), np.asarray(tuned["fit_grid"])
    assert tuned["reference"] == pytest.approx(grid.min(), rel=1e-4)
    assert tuned["rates"][grid.argmin()] != 1e-3  # here Adam's default rate is not the best
    # each grid point trains as Keras's Adam of that rate, to rounding where training is
    # not chaotic (at the larger rates, rounding grows to a few percent and more)
    calm = np.asarray(tuned["rates"]) <= tuned["calm_rate"]
    assert calm.sum() == len(fit_grid) >= 3
    np.testing.assert_allclose(grid[calm], fit_grid, rtol=1e-4)
    expected = np.clip(
        np.log(tuned["reference"] / np.asarray(record["checks"][0]["agent_loss"])), -3, 3
    )
    np.testing.assert_allclose(np.asarray(tuned["table"])[:, 0], expected, rtol=1e-6, atol=1e-9)
    assert (np.asarray(tuned["table"]) <= table + 1e-6).all()  # no easier than the default
    # instances whose splits differ in size train too (one program per size)
    assert len(set(record["varied_sizes"])) > 1
    # every instance trained: a random genome may diverge (-3), not every genome of one size
    assert (np.asarray(record["varied_table"]) > -3.0).any(axis=0).all()
    # varied batch sizes: the reference is Keras's Adam as fit trains it at the instance's
    # batch size (fewer epochs below the task's, as many above); the other draws are "varied"'s
    from keras_neuromod.evolution.suite import HORIZONS

    batched = np.asarray(record["batched_table"])
    assert batched.shape == (4, 2) and np.all(np.abs(batched) <= 3.0)
    checks = record["batch_checks"]
    assert any(c["batch_size"] != c["task_batch_size"] for c in checks)
    for c in checks:
        assert c["reference"] == pytest.approx(c["fit"], rel=1e-4)
        assert c["batches"][1:3] == c["varied"][1:3] and c["batches"][3] == c["batch_size"]
        assert c["batch_size"] in (8, 16, 32, 64, 128, 256)
        assert c["batch_size"] * 4 <= c["examples"] or c["batch_size"] == c["task_batch_size"]
        factor = min(1.0, c["batch_size"] / c["task_batch_size"])
        lengths = {max(1, math.floor(c["task_epochs"] * f * factor + 0.5)) for f, _ in HORIZONS}
        assert c["epochs"] in lengths
    # resized models: the reference is Keras's Adam as fit trains the resized model; the
    # other draws are "varied"'s
    resized = np.asarray(record["resized_table"])
    assert resized.shape == (4, 2) and np.all(np.abs(resized) <= 3.0)
    checks = record["size_checks"]
    assert any(c["size"] is not None for c in checks)
    for c in checks:
        assert c["reference"] == pytest.approx(c["fit"], rel=1e-4)
        assert c["resized"][:4] == c["varied"][:4]
        width, blocks = c["resized"][4:]
        assert c["size"] == (None if (width, blocks) == (1.0, None) else [width, blocks])
        if blocks is None and width != 1.0:  # as deep: more parameters wider, fewer narrower
            more = c["parameters"] > c["standard_parameters"]
            assert more == (width > 1.0)


def test_suite_task_validates_draws_from_its_seed_and_round_trips():
    from keras_neuromod.evolution import SuiteTask

    suite = SuiteTask(tasks=("digits_mlp", "sequence_first", "friedman1"), instances=5)
    assert suite.draw(3) == suite.draw(3) and suite.draw(3) != suite.draw(4)
    assert all(name in suite.tasks for name, _, _ in suite.draw(3))
    assert SuiteTask.from_dict(json.loads(json.dumps(suite.to_dict()))) == suite
    assert suite.worst_fitness == -3.0 and suite.n_outputs == 8
    assert not set(SuiteTask().tasks) & set(tasks.names(held_out=True))
    for kwargs, match in (
        ({"tasks": ("nope",)}, "nope"),
        ({"instances": 0}, "instances"),
        ({"clip": 0}, "clip"),
        ({"base": "nope"}, "base"),
        ({"tasks": ()}, "tasks"),
        ({"sampling": "random"}, "sampling"),
    ):
        with pytest.raises(ValueError, match=match):
            SuiteTask(**kwargs)
    with pytest.raises(ValueError, match="trains vectorized"):
        make_backend("process", suite)


@settings(max_examples=40, deadline=None)
@given(
    chosen=st.sets(st.sampled_from(tasks.names(held_out=False)), min_size=1),
    instances=st.integers(1, 24),
    seed=st.integers(0, 2**31 - 1),
)
def test_stratified_draws_meet_families_tasks_and_models_evenly(chosen, instances, seed):
    from keras_neuromod.evolution import SuiteTask

    suite = SuiteTask(tasks=tuple(sorted(chosen)), instances=instances)
    assert suite.sampling == "stratified"
    drawn = suite.draw(seed)
    assert len(drawn) == instances and drawn == suite.draw(seed)
    families = collections.Counter(tasks.get(name).family for name, _, _ in drawn)
    every_family = {tasks.get(name).family for name in chosen}
    # each family as often as any other, give or take one; none missing while others repeat
    assert max(families.values()) - min(families.values()) <= 1
    assert len(families) == min(instances, len(every_family))
    for family in families:
        in_family = [name for name, _, _ in drawn if tasks.get(name).family == family]
        count = collections.Counter(in_family)
        members = {name for name in chosen if tasks.get(name).family == family}
        assert len(count) == min(len(in_family), len(members))
        assert max(count.values()) - min(count.values()) <= 1


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(["digits_mlp", "friedman1"]))
def test_an_instance_varies_its_training_within_the_bounds_and_as_its_seed_says(seed, name):
    from keras_neuromod.evolution import SuiteTask
    from keras_neuromod.evolution.suite import HORIZONS
    from keras_neuromod.evolution.suite import batch_sizes

    suite, task = SuiteTask(tasks=(name,)), tasks.get(name)
    variation = suite.variation(task, seed)
    assert variation == suite.variation(task, seed)
    allowed = {max(1, math.floor(task.epochs * factor + 0.5)) for factor, _ in HORIZONS}
    assert variation.epochs in allowed and variation.epochs <= suite.most_epochs(task)
    assert 0.1 <= variation.loss_scale <= 10.0 and 0.5 <= variation.weight_scale <= 2.0
    plain = SuiteTask(tasks=(name,), augmentation="none")
    assert plain.variation(task, seed) == (task.epochs, 1.0, 1.0, task.batch_size, 1.0, None)
    assert plain.most_epochs(task) == task.epochs
    assert variation.batch_size == task.batch_size
    # "batches": the same draws, and a batch size of at least 4 batches an epoch
    batched = SuiteTask(tasks=(name,), augmentation="batches").variation(task, seed)
    assert batched[1:3] == variation[1:3]
    examples = len(task.splits(seed).train[0])
    assert batched.batch_size in batch_sizes(task, examples)
    assert batched.batch_size * 4 <= examples or batched.batch_size == task.batch_size
    factor = min(1.0, batched.batch_size / task.batch_size)
    allowed = {max(1, math.floor(task.epochs * f * factor + 0.5)) for f, _ in HORIZONS}
    assert batched.epochs in allowed
    assert batched.epochs <= SuiteTask(augmentation="batches").most_epochs(task, batched.batch_size)
    # "resized": the same draws, then the model's width and blocks; "all": both
    resized = SuiteTask(tasks=(name,), augmentation="resized").variation(task, seed, "mlp")
    assert resized[:4] == variation[:4] and resized.width in (0.5, 1.0, 2.0)
    assert resized.blocks in (None, 1, 3)  # the mlp's 2 blocks, one fewer or one more
    both = SuiteTask(tasks=(name,), augmentation="all").variation(task, seed, "mlp")
    assert both[:4] == batched[:4] and both.width in (0.5, 1.0, 2.0)
    assert both.blocks in (None, 1, 3)
    # a model that cannot be resized, or none named, is the standard one
    for model in ("linear", None):
        unsized = SuiteTask(tasks=(name,), augmentation="all").variation(task, seed, model)
        assert unsized[:4] == batched[:4] and unsized.size is None


def test_instance_lengths_and_scales_are_drawn_as_documented():
    from keras_neuromod.evolution import SuiteTask
    from keras_neuromod.evolution.suite import HORIZONS

    suite, task = SuiteTask(tasks=("friedman1",)), tasks.get("friedman1")
    drawn = [suite.variation(task, seed) for seed in range(4000)]
    counts = collections.Counter(v.epochs for v in drawn)
    for factor, chance in HORIZONS:  # 4,000 draws: a share within 0.03 of its chance
        share = counts[math.floor(task.epochs * factor + 0.5)] / len(drawn)
        assert share == pytest.approx(chance, abs=0.03)
    assert suite.most_epochs(task) == 8 * task.epochs == max(counts)
    # log-uniform factors: the logs' mean halfway between the bounds', their spread uniform's
    for values, (low, high) in (
        ([v.loss_scale for v in drawn], (0.1, 10.0)),
        ([v.weight_scale for v in drawn], (0.5, 2.0)),
    ):
        logs = np.log(values)
        width = math.log(high) - math.log(low)
        assert logs.mean() == pytest.approx((math.log(low) + math.log(high)) / 2, abs=0.03 * width)
        assert logs.std() == pytest.approx(width / math.sqrt(12), rel=0.05)
    # "batches": every allowed batch size as likely (4,000 draws: within 0.03 of its share)
    batched = SuiteTask(tasks=("friedman1",), augmentation="batches")
    sizes = collections.Counter(batched.variation(task, seed).batch_size for seed in range(4000))
    allowed = [b for b in (8, 16, 32, 64, 128, 256) if 4 * b <= len(task.splits(0).train[0])]
    assert sorted(sizes) == allowed
    for size in allowed:
        assert sizes[size] / 4000 == pytest.approx(1 / len(allowed), abs=0.03)
    # "resized": each width and each change of blocks as likely (the mlp's 2 blocks: 1 to 3)
    resized = SuiteTask(tasks=("friedman1",), augmentation="resized")
    sizes = [resized.variation(task, seed, "mlp") for seed in range(4000)]
    widths = collections.Counter(v.width for v in sizes)
    blocks = collections.Counter(v.blocks for v in sizes)
    assert sorted(widths) == [0.5, 1.0, 2.0] and sorted(blocks, key=str) == [1, 3, None]
    for count in (*widths.values(), *blocks.values()):
        assert count / 4000 == pytest.approx(1 / 3, abs=0.03)
    # one block fewer than one is one
    one = SuiteTask(tasks=("sequence_first",), augmentation="resized")
    sequence = tasks.get("sequence_first")
    assert {one.variation(sequence, s, "simple_rnn").blocks for s in range(200)} == {None, 2}
    # a one-epoch task trains at least one epoch
    short = dataclasses.replace(task, name="one_epoch", epochs=1)
    assert min(suite.variation(short, seed).epochs for seed in range(200)) == 1
    with pytest.raises(ValueError, match="augmentation"):
        SuiteTask(tasks=("friedman1",), augmentation="random")
    # a suite written before augmentation reads as none, the draw its agents met
    data = suite.to_dict()
    assert data["augmentation"] == "varied"
    del data["augmentation"]
    assert SuiteTask.from_dict(data).augmentation == "none"


def test_uniform_draws_and_suites_written_before_sampling_keep_their_draw():
    """A suite written without `sampling` draws as it always did: task, model, seed i.i.d."""
    from keras_neuromod.evolution import SuiteTask

    written = SuiteTask(tasks=("digits_mlp", "sequence_first", "friedman1"), instances=6)
    data = written.to_dict()
    del data["sampling"]
    old = SuiteTask.from_dict(data)
    assert old.sampling == "uniform"
    rng = np.random.default_rng(7)  # the draw, written out independently
    expected = []
    for _ in range(6):
        task = tasks.get(old.tasks[int(rng.integers(3))])
        model = task.models[int(rng.integers(len(task.models)))]
        expected.append((task.name, model, int(rng.integers(2**31 - 1))))
    assert old.draw(7) == expected
    assert written.draw(7) != expected


@settings(max_examples=60, deadline=None)
@given(
    reference=st.tuples(st.floats(1e-3, 10.0), st.floats(0.0, 1.0)),
    losses=st.lists(st.tuples(st.floats(1e-3, 100.0), st.floats(0.0, 1.0)), min_size=1),
)
def test_no_harm_scores_subtract_only_a_rise_beyond_the_references(reference, losses):
    from keras_neuromod.evolution.suite import instance_scores
    from keras_neuromod.evolution.vectorized import Results

    # (final, fraction): the best epoch's loss is a fraction of the way from 0 to the final
    final_ref, best_ref = reference[0], reference[0] * max(reference[1], 1e-3)
    final = np.array([f for f, _ in losses])
    best = final * np.maximum([b for _, b in losses], 1e-3)
    finite = np.arange(len(losses)) % 4 != 3  # every fourth diverged
    result = Results(np.zeros_like(final), final, finite, best)
    plain = instance_scores((final_ref, best_ref), result, 3.0, "final")
    no_harm = instance_scores((final_ref, best_ref), result, 3.0, "no_harm")
    for i in range(len(losses)):
        ratio = math.log(final_ref / final[i])
        excess = math.log(final[i] / best[i]) - math.log(final_ref / best_ref)
        assert plain[i] == pytest.approx(max(-3.0, min(3.0, ratio)) if finite[i] else -3.0)
        harmed = max(-3.0, min(3.0, ratio - max(excess, 0.0)))
        assert no_harm[i] == pytest.approx(harmed if finite[i] else -3.0)
    assert (no_harm <= plain + 1e-12).all()
    # a diverged reference scores every candidate worst
    assert (instance_scores((math.nan, math.nan), result, 3.0) == -3.0).all()


def test_variance_components_of_a_score_table_are_the_two_way_anova_s():
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    from keras_neuromod.evolution.suite import reliability
    from keras_neuromod.evolution.suite import variance_components

    rng = np.random.default_rng(4)
    n, m = 30, 12
    table = rng.normal(0, 0.5, (n, 1)) + rng.normal(0, 0.3, (1, m)) + rng.normal(0, 0.4, (n, m))
    frame = pd.DataFrame(
        {"score": table.ravel(), "row": np.repeat(np.arange(n), m), "col": np.tile(np.arange(m), n)}
    )
    anova = anova_lm(smf.ols("score ~ C(row) + C(col)", frame).fit())
    mean_square = anova["sum_sq"] / anova["df"]
    rest = mean_square["Residual"]
    candidates, instances, estimated_rest = variance_components(table)
    assert estimated_rest == pytest.approx(rest, rel=1e-9)
    assert candidates == pytest.approx((mean_square["C(row)"] - rest) / m, rel=1e-9)
    assert instances == pytest.approx((mean_square["C(col)"] - rest) / n, rel=1e-9)
    # on a large table the estimates find the components the table was made of
    large = (
        rng.normal(0, 0.5, (400, 1)) + rng.normal(0, 0.3, (1, 300)) + rng.normal(0, 0.4, (400, 300))
    )
    estimates = variance_components(large)
    np.testing.assert_allclose(estimates, (0.25, 0.09, 0.16), rtol=0.2)
    # Spearman-Brown: k instances' reliability from one's
    one = reliability(estimates, 1)
    for k in (2, 4, 64):
        assert reliability(estimates, k) == pytest.approx(k * one / (1 + (k - 1) * one))
    # candidates that differ only by their draw: a reliability of 0, estimates clipped at 0
    assert reliability(variance_components(rng.normal(0, 1, (50, 8))), 4) < 0.2
    assert variance_components(np.tile(np.arange(5.0), (6, 1)))[0] == 0.0
    with pytest.raises(ValueError, match="2 candidates and 2 instances"):
        variance_components(np.zeros((1, 4)))


def test_suites_measure_against_a_tuned_reference_and_old_ones_against_the_default():
    from keras_neuromod.evolution import SuiteTask
    from keras_neuromod.evolution.suite import REFERENCE_GRIDS
    from keras_neuromod.evolution.suite import reference_grid

    written = SuiteTask(tasks=("friedman1",), base="sgd")
    assert written.reference == "tuned"
    assert SuiteTask.from_dict(json.loads(json.dumps(written.to_dict()))) == written
    assert written.scoring == "no_harm"
    data = written.to_dict()
    del data["reference"], data["scoring"]
    old = SuiteTask.from_dict(data)  # written before the fields
    assert (old.reference, old.scoring) == ("default", "final")
    with pytest.raises(ValueError, match=r"scoring must be one of \['no_harm', 'final'\]"):
        SuiteTask(tasks=("friedman1",), scoring="best")
    with pytest.raises(ValueError, match=r"reference must be one of \['tuned', 'default'\]"):
        SuiteTask(tasks=("friedman1",), reference="best")
    # the grid: every combination, the other hyperparameters at Keras's defaults
    for base, optimizer in (("adam", keras.optimizers.Adam()), ("sgd", keras.optimizers.SGD())):
        grid = REFERENCE_GRIDS[base]
        points = reference_grid(base)
        assert len(points) == math.prod(len(values) for values in grid.values())
        assert {tuple(p.values[name] for name in grid) for p in points} == set(
            itertools.product(*grid.values())
        )
        config = optimizer.get_config()
        for point in points:
            for name, value in point.values.items():
                if name not in grid:
                    assert value == pytest.approx(config[name])


@pytest.mark.slow
def test_evolution_over_the_suite_is_deterministic_and_resumes(tmp_path):
    from keras_neuromod.evolution import SuiteTask

    # against Keras's defaults: the tuned reference's grid is checked in jax_run
    suite = SuiteTask(
        tasks=("breast_cancer", "friedman1"), instances=2, max_regulatory=8, reference="default"
    )
    options = dict(
        task=suite,
        population=6,
        generations=2,
        backend="vectorized",
        workers=1,
        seed=5,
        progress=False,
        verbose=False,
    )
    first = evolve(out=str(tmp_path / "a"), **options)
    assert [r["architecture"] for r in first.logbook] == ["suite", "suite"]
    assert all(-3.0 <= r["min"] <= r["max"] <= 3.0 and r["std"] > 0 for r in first.logbook)
    evolve(out=str(tmp_path / "b"), **{**options, "generations": 1})
    resumed = evolve(out=str(tmp_path / "b"), resume=True, **options)
    assert logbook_records(resumed) == logbook_records(first)
    assert _checkpoint(tmp_path / "b") == _checkpoint(tmp_path / "a")


# -- from a TensorFlow process -------------------------------------------------


def _jobs(genomes, architecture, seed):
    return [{"genome": g.to_dict(), "architecture": architecture, "seed": seed} for g in genomes]


@pytest.mark.slow
def test_vectorized_backend_in_a_jax_worker_matches_tensorflow_fit():
    """A TensorFlow program's evolution trains in a JAX worker, with the same fitness.

    The seeded models start from the same weights on both backends, and the MLP's
    dense arithmetic rounds alike; convolutional models may end a chaotic training
    a little apart, since TensorFlow's and XLA's convolutions round differently.
    """
    task = FitnessTask(**TASK)
    genomes = [Genome.random(13, 8, size, rng=size) for size in range(4)]
    expected = [Evaluator(task).evaluate(g, "mlp", 5) for g in genomes] if _tensorflow() else None
    backend = make_backend("vectorized", task)
    try:
        values = backend.map(_jobs(genomes, "mlp", 5))
    finally:
        backend.close()
    if expected is not None:
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)
    assert all(0.0 <= v <= 1.0 for v in values)


def _tensorflow():
    return keras.backend.backend() == "tensorflow"


def test_chunks_cover_the_jobs_in_order_in_even_shares():
    task = FitnessTask(**TASK)
    backend = VectorizedBackend.__new__(VectorizedBackend)
    backend.options, backend.workers = {"vmap": None, "scan": None, "width": 4}, 2
    genomes = [Genome.random(13, 8, 0, rng=i).to_dict() for i in range(11)]
    jobs = _jobs([Genome.from_dict(g) for g in genomes[:9]], "mlp", 1) + _jobs(
        [Genome.from_dict(g) for g in genomes[9:]], "A", 2
    )
    chunks, spans = backend.chunks(jobs)
    assert spans == [(0, 5), (5, 9), (9, 10), (10, 11)]  # even shares per worker
    assert [len(c["genomes"]) for c in chunks] == [5, 4, 1, 1]
    assert [(c["architecture"], c["seed"]) for c in chunks] == [("mlp", 1)] * 2 + [("A", 2)] * 2
    assert all(c["width"] == 4 for c in chunks)
    assert [g for c in chunks for g in c["genomes"]] == [j["genome"] for j in jobs]
    del task


def _evolve(**kwargs):
    options = dict(
        task="digits",
        population=6,
        generations=2,
        epochs=2,
        models=("mlp",),
        backend="vectorized",
        seed=3,
        progress=False,
        verbose=False,
        width=0.5,
        train_subset=256,
        max_regulatory=8,
    )
    options.update(kwargs)
    return evolve(**options)


def _checkpoint(folder):
    data = read_json(folder / "checkpoint.json")
    for record in data["logbook"]:
        for key in TIMINGS:
            record.pop(key)
    return data


@pytest.mark.slow
def test_vectorized_evolution_is_deterministic_resumes_and_ignores_the_worker_count(tmp_path):
    first = _evolve(out=str(tmp_path / "a"))
    assert first.generations == 2 and first.evaluations >= 12
    assert all(record["std"] > 0 for record in first.logbook)  # the agents differ
    assert logbook_records(_evolve(workers=2)) == logbook_records(first)
    # interrupted after one generation, then resumed: the uninterrupted result
    _evolve(generations=1, out=str(tmp_path / "b"))
    resumed = _evolve(out=str(tmp_path / "b"), resume=True)
    assert logbook_records(resumed) == logbook_records(first)
    assert resumed.evaluated_now == first.evaluations - first.logbook[0]["evals"]
    assert _checkpoint(tmp_path / "b") == _checkpoint(tmp_path / "a")


@pytest.mark.slow
def test_a_failing_chunk_is_run_again_then_scores_worst_and_a_missing_data_set_stops(tmp_path):
    from keras_neuromod.evolution import TaskError

    task = FitnessTask(**TASK, worst_fitness=-2.0)
    backend = make_backend("vectorized", task, workers=1)
    good = Genome.random(13, 8, 1, rng=0).to_dict()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # a chunk holding a malformed genome fails (an individual's failure)
            jobs = [{"genome": g, "architecture": "mlp", "seed": 0} for g in ({"tags": []}, good)]
            assert backend.map(jobs) == [-2.0, -2.0]
    finally:
        backend.close()
    messages = [str(w.message) for w in caught]
    assert any("run again" in m for m in messages) and any("scored worst" in m for m in messages)
    assert any("ValueError: Unknown genome field(s) ['tags']" in m for m in messages)
    # data that cannot be loaded are the task's failure: the map stops at once
    missing = FitnessTask(dataset="cifar10", data_dir=str(tmp_path / "nothing"))
    backend = make_backend("vectorized", missing, workers=1)
    try:
        with pytest.raises(TaskError, match="DatasetUnavailableError"):
            backend.map(_jobs([Genome.from_dict(good)], "A", 0))
    finally:
        backend.close()


def constant_fitness(genome, architecture, seed):
    return 1.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: make_backend("vectorized", constant_fitness), "trains a FitnessTask"),
        (
            lambda: make_backend("serial", FitnessTask(**TASK), vectorized=True),
            "goes with backend='ray'",
        ),
        (
            lambda: make_backend("process", FitnessTask(**TASK), vmap=True),
            "vectorized evaluation only",
        ),
        (lambda: make_backend("vectorized", FitnessTask(**TASK), width=0), "width"),
        (lambda: VectorizedBackend(FitnessTask(**TASK), place="moon"), "place"),
    ],
)
def test_bad_vectorized_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="checks the refusal outside JAX")
def test_vectorized_evaluator_needs_jax():
    from keras_neuromod.evolution.vectorized import VectorizedEvaluator

    with pytest.raises(RuntimeError, match="KERAS_BACKEND=jax"):
        VectorizedEvaluator(FitnessTask(**TASK))


def test_evolve_defaults_to_vectorized_for_tasks_and_process_for_functions(monkeypatch):
    from keras_neuromod.evolution import engine

    chosen = []

    def spy(backend, *args, **kwargs):
        chosen.append(backend)
        raise KeyboardInterrupt  # stop before any worker starts

    monkeypatch.setattr(engine, "make_backend", spy)
    for kwargs in ({}, {"fitness": constant_fitness}):
        with pytest.raises(KeyboardInterrupt):
            _evolve(backend=None, **kwargs)
    assert chosen == ["vectorized", "process"]


# -- the machinery shared with the ENU evolution strategy ----------------------


@settings(max_examples=40, deadline=None)
@given(size=st.integers(0, 23), width=st.one_of(st.none(), st.integers(1, 9)))
def test_evaluate_population_scores_each_individual_once_whatever_the_width(size, width):
    population = np.arange(size * 3, dtype=np.float64).reshape(size, 3)
    calls = []

    def call(group):
        calls.append(len(group))
        return group.sum(axis=1)

    scores = evaluate_population(call, population, width)
    np.testing.assert_array_equal(scores, population.sum(axis=1))
    if size:
        assert set(calls) == {width or size}  # every call sees a full group
        assert len(calls) == math.ceil(size / (width or size))


def test_evaluate_population_gives_non_finite_scores_the_worst_fitness():
    population = (np.array([1.0, np.nan, 3.0, np.inf, -np.inf]), np.ones(5))
    scores = evaluate_population(
        lambda group: group[0] * group[1], population, 2, worst_fitness=-7.0
    )
    np.testing.assert_array_equal(scores, [1.0, -7.0, 3.0, -7.0, -7.0])


def test_evaluate_population_refuses_mismatched_input_and_output():
    with pytest.raises(ValueError, match="disagree"):
        evaluate_population(lambda g: g[0], (np.ones(3), np.ones(4)))
    with pytest.raises(ValueError, match="returned 1 scores for a group of 2"):
        evaluate_population(lambda g: g[:1], np.ones(4), width=2)
    with pytest.raises(ValueError, match="width"):
        evaluate_population(lambda g: g, np.ones(4), width=0)


def test_enu_fitness_scores_the_same_in_groups_and_gives_blown_up_offspring_the_worst():
    def score(genomes, environment):
        return ops.sum(genomes * environment, axis=1), genomes  # a tuple: fitness first

    def environments(rng):
        return rng.normal(size=(4,)).astype("float32")

    genomes = np.random.default_rng(0).normal(size=(7, 4)).astype("float32")
    genomes[5, 2] = np.inf
    whole = ENUFitness(score, environments, worst_fitness=-100.0)(genomes, np.random.default_rng(1))
    grouped = ENUFitness(score, environments, width=3, worst_fitness=-100.0)(
        genomes, np.random.default_rng(1)
    )
    environment = environments(np.random.default_rng(1))
    expected = (genomes.astype(np.float64) * environment).sum(axis=1)
    expected[5] = -100.0
    np.testing.assert_allclose(whole, expected, rtol=1e-5)
    np.testing.assert_allclose(grouped, whole, rtol=0, atol=0)


@pytest.mark.slow
def test_evolve_example_over_the_suite_picks_its_agent_on_a_validation_draw(tmp_path, capsys):
    from examples_loader import load_example
    from keras_neuromod import zoo
    from keras_neuromod.evolution import SuiteTask
    from keras_neuromod.evolution import score_on_validation

    example = load_example("evolve")
    argv = [
        "--suite",
        "--population",
        "4",
        "--generations",
        "2",
        "--instances",
        "1",
        "--tasks",
        "breast_cancer",
        "--validation-draws",
        "2",
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
    selection = record["selection"]
    assert agent.name == "nm_adam_general" and record["tasks"] == ["breast_cancer"]
    assert summary["validation_score"] == selection["score"] == max(selection["scores"])
    assert selection["candidates"] == len(selection["scores"]) >= 2
    # one training per evaluation, and the tuned reference's grid once per generation's instance
    grid = SuiteTask(tasks=("breast_cancer",)).reference_trainings
    assert record["trainings"] == record["evaluations"] + 2 * grid and selection["instances"] == 2
    # the same draw scores the chosen agent the same again
    again = score_on_validation(
        [agent.genome], SuiteTask(tasks=("breast_cancer",), instances=1), draws=2, workers=1
    )
    assert round(float(again.mean()), 4) == selection["score"]
    # the recorded command parses back to the same run
    replay = example.parse_args(record["command"].split()[2:] + ["--out", str(tmp_path)])
    assert (replay.task_spec, replay.population, replay.seed) == (
        SuiteTask(tasks=("breast_cancer",), instances=1),
        4,
        0,
    )
    # a default suite's command names its tasks, so that a grown suite reproduces it still
    default = example.reproducing_command(example.parse_args(["--suite"]), 1)
    from keras_neuromod import tasks

    assert f"--tasks {','.join(tasks.names(held_out=False))}" in default
    for bad in (
        ["--suite", "--backend", "process"],
        ["--instances", "3"],
        ["--suite", "--tasks", "no_such_task"],
        ["--suite", "--reference", "best"],
        ["--suite", "--sampling", "even"],
        ["--suite", "--scoring", "best"],
        ["--suite", "--augmentation", "more"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            example.parse_args(bad)
        assert exit_info.value.code == 2


def test_the_command_line_sets_the_suites_reference_draw_and_validation_instances(tmp_path):
    from examples_loader import load_example
    from keras_neuromod.evolution import SuiteTask

    example = load_example("evolve")
    default = example.parse_args(["--suite", "--instances", "3", "--tasks", "friedman1"])
    spec = default.task_spec
    assert (spec.reference, spec.scoring, spec.sampling, spec.augmentation) == (
        "tuned",
        "no_harm",
        "stratified",
        "varied",
    )
    assert default.validation_draws == 22  # at least 64 validation instances: 22 draws of 3
    assert example.parse_args(["--quick", "--suite"]).validation_draws == 4  # a quick choice
    chosen = example.parse_args(
        ["--suite", "--tasks", "friedman1", "--reference", "default", "--sampling", "uniform"]
        + ["--scoring", "final", "--augmentation", "none"]
    )
    assert chosen.task_spec == SuiteTask(
        tasks=("friedman1",),
        instances=2,
        reference="default",
        sampling="uniform",
        scoring="final",
        augmentation="none",
    )
    command = example.reproducing_command(chosen, 4)
    assert "--reference default --scoring final --sampling uniform --augmentation none" in command
    replay = example.parse_args(command.split()[2:] + ["--out", str(tmp_path)])
    assert replay.task_spec == chosen.task_spec and replay.validation_draws == 32
