"""Runs in a fresh process under Keras's JAX backend (see test_vectorized.py).

Trains the same genomes with `Evaluator` (`model.fit`) and with
`VectorizedEvaluator` in every plan (batched or one by one, one compiled loop
or one call per batch, several group widths), and prints one JSON object of
the fitnesses and the facts the tests check. Its two parts, the `FitnessTask`
evaluators' (``fit``) and the task suite's (``suite``), can run in two processes
at once (their compilations are mostly single-threaded).

    KERAS_BACKEND=jax python tests/vectorized_jax.py [fit|suite]
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from keras_neuromod import Genome  # noqa: E402
from keras_neuromod.evolution import Evaluator  # noqa: E402
from keras_neuromod.evolution import FitnessTask  # noqa: E402
from keras_neuromod.evolution.vectorized import VectorizedEvaluator  # noqa: E402

# 250 examples: 7 full batches of 32 and a last one of 26, as `fit` makes them
BASE = dict(
    dataset="digits", epochs=2, batch_size=32, width=0.25, train_subset=250, max_regulatory=6
)

# (name, task options, architecture, plans other than the default)
SCENARIOS = [
    (
        "adam-mlp",
        {"base": "adam"},
        "mlp",
        [
            {"vmap": True, "scan": False, "width": 2},
            {"vmap": False, "scan": True},
            {"vmap": False, "scan": False},
        ],
    ),
    ("adam-A", {"base": "adam"}, "A", [{"vmap": True, "scan": True, "width": 4}]),
    (
        "sgd-val-mlp",
        {"base": "sgd", "metric": "val_accuracy"},
        "mlp",
        [{"vmap": False, "scan": False}],
    ),
    ("sgd-A", {"base": "sgd"}, "A", []),
]


def genomes(n_outputs, count=5):
    return [Genome.random(13, n_outputs, size % 5, rng=100 + size) for size in range(count)]


def main(part=None):
    keras.utils.set_random_seed(0)
    out = {"backend": keras.backend.backend()}
    if part in (None, "fit"):
        out.update(evaluator_checks())
    if part in (None, "suite"):
        out["suite"] = suite_programs()
        out["suite_fitness"] = suite_fitness()
        out["seed_states"] = seed_state_checks()
        out["varied"] = varied_trainings()
    print(json.dumps(out))


def evaluator_checks():
    """`VectorizedEvaluator` against `Evaluator` (`fit`), its plans, compilations and
    divergence."""
    out = {"scenarios": {}}
    for name, options, architecture, plans in SCENARIOS:
        task = FitnessTask(**BASE, **options)
        # three genomes on the convolutional model, whose `fit` is slow on CPU
        population = genomes(task.n_outputs, 5 if architecture == "mlp" else 3)
        fit = Evaluator(task)
        default = VectorizedEvaluator(task)
        record = {
            "fit": [fit.evaluate(g, architecture, 3) for g in population],
            "vectorized": default.evaluate_many(population, architecture, 3),
            "plan": default.plan(architecture),
            "plans": [],
        }
        for plan in plans:
            evaluator = VectorizedEvaluator(task, **plan)
            record["plans"].append(
                {"plan": plan, "values": evaluator.evaluate_many(population, architecture, 3)}
            )
        out["scenarios"][name] = record

    # one compiled program for every genome size and every seed
    task = FitnessTask(**BASE, base="adam")
    evaluator = VectorizedEvaluator(task, width=4)
    for seed in (1, 2):
        evaluator.evaluate_many(genomes(8, 6), "mlp", seed)
    out["mlp_compilations"] = evaluator._program("mlp").program.train._cache_size()

    # divergence: learning rates up to 1e20 overflow the weights of some individuals
    task = FitnessTask(
        **{**BASE, "epochs": 1},
        base="adam",
        ranges={"learning_rate": (1e-3, 1e20)},
        worst_fitness=-1.0,
    )
    population = [Genome.random(13, 8, 2, rng=s) for s in range(8)]
    together = VectorizedEvaluator(task, vmap=True, width=8).evaluate_many(population, "mlp", 0)
    alone = VectorizedEvaluator(task, vmap=True, width=1).evaluate_many(population, "mlp", 0)
    fit = Evaluator(task)
    out["divergence"] = {
        "together": together,
        "alone": alone,
        "fit": [fit.evaluate(g, "mlp", 0) for g in population],
    }
    return out


def varied_trainings():
    """TrainingProgram runs of other lengths than its budget, and of scaled losses."""
    from keras_neuromod import tasks
    from keras_neuromod.evolution.vectorized import TrainingProgram

    task = tasks.get("breast_cancer")
    splits = task.splits(0)
    weights = task.build_model("linear", seed=0).get_weights()
    orders = task.data_order(0, epochs=6)

    def program(rate, **plan):
        model = task.build_model("linear", seed=0)
        optimizer = keras.optimizers.SGD(rate)
        return TrainingProgram.for_task(task, model, optimizer, splits, 3, max_epochs=4, **plan)

    scanned, alone = program(0.01, scan=True), program(0.01, vmap=False, scan=False)
    lengths = {
        epochs: [float(p.run(None, weights, orders[:epochs]).loss[0]) for p in (scanned, alone)]
        for epochs in (1, 2, 4)
    }
    compiled = [scanned.train._cache_size()]
    lengths[6] = [float(p.run(None, weights, orders).loss[0]) for p in (scanned, alone)]
    compiled.append(scanned.train._cache_size())
    refused = []
    for bad in ({"orders": orders[:0]}, {"loss_scale": 0.0}, {"loss_scale": float("nan")}):
        try:
            scanned.run(None, weights, **{"orders": orders[:2], **bad})
        except ValueError as error:
            refused.append(str(error))
    return {
        "lengths": lengths,
        "compiled": compiled,
        # SGD on a loss 4 times larger takes the steps of a learning rate 4 times larger
        "scaled": float(scanned.run(None, weights, orders[:2], loss_scale=4.0).loss[0]),
        "faster": float(program(0.04, scan=True).run(None, weights, orders[:2]).loss[0]),
        "refused": refused,
    }


def seed_state_checks():
    """A dropout model's program: which seed-generator states its trainings start from."""
    import numpy as np

    from keras_neuromod import tasks
    from keras_neuromod.evolution.vectorized import TrainingProgram
    from keras_neuromod.evolution.vectorized import seed_states

    task = tasks.get("digits_residual")
    (x, y), (x_val, y_val) = (tuple(a[:64] for a in part) for part in task.splits(0)[:2])
    model = task.build_model("residual_mlp", seed=1)
    optimizer = keras.optimizers.SGD(0.1)
    task.compile(model, optimizer)
    optimizer.build(model.trainable_variables)
    program = TrainingProgram(
        model, optimizer, task.loss_function(), "accuracy", 1, 16, x, y, x_val, y_val
    )
    start, orders = model.get_weights(), np.arange(64)[None]

    def loss(states=None):
        return float(program.run(None, start, orders, seed_states=states).loss[0])

    first = loss()
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)  # advances them
    advanced = seed_states(model)
    try:
        loss([])
        refused = ""
    except ValueError as error:
        refused = str(error)
    return {
        "generators": len(advanced),
        "advanced_by_fit": not any(
            np.array_equal(a, b) for a, b in zip(advanced, program.seed_start)
        ),
        "first": first,
        "after_fit": loss(),
        "same_seed": loss(seed_states(task.build_model("residual_mlp", seed=1))),
        "other_seed": loss(seed_states(task.build_model("residual_mlp", seed=2))),
        "refused": refused,
        "without_dropout": len(seed_states(tasks.get("digits_mlp").build_model("mlp", seed=1))),
    }


def _fit_loss(task, model_name, seed, instance, optimizer):
    """The validation loss of `model.fit` with `optimizer`, on the instance's batches, from
    its initial weights and with its loss scaled (the loss measured unscaled)."""
    width, blocks = (None, None) if instance.size is None else instance.size
    model = task.build_model(model_name, seed=seed, width=width, blocks=blocks)
    model.set_weights(instance.weights)
    loss, scale = task.loss_function(), instance.loss_scale
    task.compile(model, optimizer, loss=lambda y, p: scale * loss(y, p))
    splits = instance.splits
    for permutation in instance.orders:
        model.fit(
            splits.train[0][permutation],
            splits.train[1][permutation],
            batch_size=instance.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
    return float(model.evaluate(*splits.val, batch_size=64, verbose=0)[0]) / scale


# the largest learning rate of Adam's grid at which the reference's training rounds as fit's
CALM_RATE = 3e-3


def _first_draw(suite, changed):
    """The first draw seed from 11 on with an instance whose `Variation` is `changed`."""
    from keras_neuromod import tasks

    for seed in range(11, 100):
        for name, model, instance_seed in suite.draw(seed):
            task = tasks.get(name)
            if changed(task, model, suite.variation(task, instance_seed, model)):
                return seed
    raise AssertionError("no draw from seed 11 to 99 varies as asked")


def suite_fitness():
    """SuiteEvaluator: the reference is Keras's Adam as `fit` trains it (at its defaults, or
    the best over the learning-rate grid) on each varied instance; scores are log loss
    ratios."""
    import dataclasses

    import keras
    import numpy as np

    from keras_neuromod import tasks
    from keras_neuromod.evolution import SuiteTask
    from keras_neuromod.evolution.suite import REFERENCE_GRIDS
    from keras_neuromod.evolution.suite import SuiteEvaluator
    from keras_neuromod.evolution.suite import reference_grid

    suite = SuiteTask(
        tasks=("breast_cancer", "friedman1"),
        instances=2,
        max_regulatory=6,
        inputs="paper",
        reference="default",
        scoring="final",
    )
    evaluator = SuiteEvaluator(suite)
    population = genomes(8, 4)
    table, instances = evaluator.scores(population, 11)
    checks = []
    for task_name, model_name, seed in instances:
        task = tasks.get(task_name)
        instance = evaluator._instance(task, model_name, seed)
        splits = instance.splits
        _, agents = evaluator._programs_for(task_name, model_name, splits)
        fit_loss = _fit_loss(task, model_name, seed, instance, keras.optimizers.Adam())
        agents.use_data(*splits.train, *splits.val)
        result = agents.run(
            population,
            instance.weights,
            instance.orders,
            loss_scale=instance.loss_scale,
        )
        final, best = evaluator._references[(task_name, model_name, seed)]
        variation = suite.variation(task, seed)
        unscaled = task.build_model(model_name, seed=seed).get_weights()
        checks.append(
            {
                "baseline": final,
                "baseline_best": best,
                "fit_baseline": fit_loss,
                "agent_loss": result.loss.tolist(),
                "agent_best": result.best_loss.tolist(),
                "variation": list(variation),
                "task_epochs": task.epochs,
                "task_batch_size": task.batch_size,
                "epochs": len(instance.orders),
                # kernels times the weight scale; biases and statistics as initialised
                "weights_scaled": all(
                    np.allclose(w, u * variation.weight_scale, rtol=1e-6)
                    if w.ndim >= 2
                    else np.array_equal(w, u)
                    for w, u in zip(instance.weights, unscaled)
                ),
            }
        )
    # varied batch sizes: a draw (the first from seed 11 on) with an instance at another
    # batch size than its task's; the reference trains at it as `fit` does
    batched = SuiteEvaluator(dataclasses.replace(suite, augmentation="batches"))
    draw = _first_draw(
        batched.suite, lambda task, model, variation: variation.batch_size != task.batch_size
    )
    batched_table, batched_instances = batched.scores(population, draw)
    batch_checks = []
    for task_name, model_name, seed in batched_instances:
        task = tasks.get(task_name)
        instance = batched._instance(task, model_name, seed)
        batch_checks.append(
            {
                "batch_size": instance.batch_size,
                "task_batch_size": task.batch_size,
                "examples": len(instance.splits.train[0]),
                "epochs": len(instance.orders),
                "task_epochs": task.epochs,
                "varied": list(suite.variation(task, seed)),
                "batches": list(batched.suite.variation(task, seed)),
                "reference": batched._references[(task_name, model_name, seed)][0],
                "fit": _fit_loss(task, model_name, seed, instance, keras.optimizers.Adam()),
            }
        )
    # resized models: a draw (the first from seed 11 on) with an instance of another model
    # size than its builder's; the reference trains that model as `fit` does
    resized = SuiteEvaluator(dataclasses.replace(suite, augmentation="resized"))
    draw = _first_draw(resized.suite, lambda task, model, variation: variation.size is not None)
    resized_table, resized_instances = resized.scores(population, draw)
    size_checks = []
    for task_name, model_name, seed in resized_instances:
        task = tasks.get(task_name)
        instance = resized._instance(task, model_name, seed)
        size_checks.append(
            {
                "model": model_name,
                "size": instance.size,
                "varied": list(suite.variation(task, seed)),
                "resized": list(resized.suite.variation(task, seed, model_name)),
                "parameters": sum(int(np.size(w)) for w in instance.weights),
                "standard_parameters": task.build_model(model_name, seed=seed).count_params(),
                "reference": resized._references[(task_name, model_name, seed)][0],
                "fit": _fit_loss(task, model_name, seed, instance, keras.optimizers.Adam()),
            }
        )
    # the no-harm score: the same trainings, less the excess rise from the best epoch
    no_harm = SuiteEvaluator(dataclasses.replace(suite, scoring="no_harm"))
    no_harm_table, _ = no_harm.scores(population, 11)
    # the tuned reference: the same instances, against Adam's best learning rate of the grid
    tuned = SuiteEvaluator(dataclasses.replace(suite, reference="tuned"))
    tuned_table, tuned_instances = tuned.scores(population, 11)
    task_name, model_name, seed = tuned_instances[0]
    task = tasks.get(task_name)
    instance = tuned._instance(task, model_name, seed)
    rates = REFERENCE_GRIDS["adam"]["learning_rate"]
    # `fit` at the rates where training is not chaotic, to compare with the grid's points
    fit_grid = [
        _fit_loss(task, model_name, seed, instance, keras.optimizers.Adam(rate))
        for rate in rates
        if rate <= CALM_RATE
    ]
    # the grid trained one by one, a call per batch
    alone = SuiteEvaluator(tuned.suite, vmap=False, scan=False)
    instance = alone._instance(task, model_name, seed)
    splits = instance.splits
    program = alone._static_program(task, model_name, splits, kind="reference")
    program.use_data(*splits.train, *splits.val)
    grid = program.run(
        reference_grid("adam"),
        instance.weights,
        instance.orders,
        seed_states=instance.draws,
        loss_scale=instance.loss_scale,
    ).loss
    # a generated task whose split sizes differ from seed to seed
    varied = SuiteEvaluator(
        SuiteTask(
            tasks=("tabular_synthetic",),
            instances=6,
            max_regulatory=6,
            inputs="paper",
            reference="default",
            augmentation="none",
        )
    )
    varied_table, varied_instances = varied.scores(population, 3)
    sizes = [len(tasks.get(name).splits(seed).train[0]) for name, _, seed in varied_instances]
    return {
        "table": table.tolist(),
        "instances": instances,
        "checks": checks,
        "again": evaluator.scores(population, 11)[0].tolist(),
        "no_harm_table": no_harm_table.tolist(),
        "tuned": {
            "instances": tuned_instances,
            "table": tuned_table.tolist(),
            "reference": tuned._references[(task_name, model_name, seed)][0],
            "rates": list(rates),
            "grid": grid.tolist(),
            "fit_grid": fit_grid,
            "calm_rate": CALM_RATE,
        },
        "varied_sizes": sizes,
        "varied_table": varied_table.tolist(),
        "batched_table": batched_table.tolist(),
        "batch_checks": batch_checks,
        "resized_table": resized_table.tolist(),
        "size_checks": size_checks,
    }


# (task, model, input set) of the suite: a 1-D convolution with the core paper's inputs;
# with the sensing set and the horizon told (its progress input), a regression loss and a
# recurrent model
SUITE = [
    ("waveforms", "conv1d", "paper"),
    ("diabetes", "mlp", "sensing"),
    ("sequence_majority", "lstm", "sensing"),
    ("digits_residual", "residual_mlp", "sensing"),
    ("token_majority", "attention", "sensing"),
]
# The comparison needs neither the tasks' whole training sets nor their schedules: 200
# examples (6 full batches of 32 and a last one of 8) for 2 epochs
SUITE_EXAMPLES, SUITE_EPOCHS = 200, 2


def suite_programs():
    """`TrainingProgram` against `fit` + `evaluate` on the validation split of suite tasks."""
    import numpy as np

    from keras_neuromod import NmAdam
    from keras_neuromod import tasks
    from keras_neuromod.evolution.vectorized import TrainingProgram

    results = {}
    for name, model_name, inputs in SUITE:
        task = tasks.get(name)
        splits = task.splits(seed=0)
        (x, y), (x_val, y_val) = splits.train, splits.val
        x, y = x[:SUITE_EXAMPLES], y[:SUITE_EXAMPLES]
        model = task.build_model(model_name, seed=1)
        size = 13 if inputs == "paper" else 18
        optimizer = NmAdam(agent=Genome.random(size, 8, 0, rng=0), max_regulatory=6, inputs=inputs)
        task.compile(model, optimizer)
        optimizer.build(model.trainable_variables)
        start = model.get_weights()
        # and the dropout layers' seed-generator states, which `set_weights` leaves and `fit`
        # advances: every genome's fit starts from them, as every program's training does
        first_state = [np.array(v.value) for v in model.variables]
        order = np.random.default_rng(2)
        orders = np.stack([order.permutation(len(x)) for _ in range(SUITE_EPOCHS)])
        population = [Genome.random(size, 8, k % 5, rng=100 + k) for k in range(3)]
        horizon = SUITE_EPOCHS * -(-len(x) // task.batch_size) if inputs == "sensing" else None
        program = TrainingProgram(
            model,
            optimizer,
            task.loss_function(),
            task.metric,
            SUITE_EPOCHS,
            task.batch_size,
            x,
            y,
            x_val,
            y_val,
        )
        measured = program.run(population, start, orders, horizon=horizon)
        alone = TrainingProgram(
            model,
            optimizer,
            task.loss_function(),
            task.metric,
            SUITE_EPOCHS,
            task.batch_size,
            x,
            y,
            x_val,
            y_val,
            vmap=False,
            scan=False,
        )
        one_by_one = alone.run(population, start, orders, horizon=horizon)
        fit, fit_best = [], []
        optimizer.set_horizon(horizon)
        for genome in population:
            model.set_weights(start)
            for variable, value in zip(model.variables, first_state):
                variable.assign(value)
            optimizer.set_genome(genome, reset=True)
            epoch_losses = []
            for permutation in orders:
                model.fit(
                    x[permutation],
                    y[permutation],
                    batch_size=task.batch_size,
                    epochs=1,
                    shuffle=False,
                    verbose=0,
                )
                epoch_losses.append(model.evaluate(x_val, y_val, batch_size=64, verbose=0))
            fit.append([float(v) for v in epoch_losses[-1]])
            fit_best.append(min(float(values[0]) for values in epoch_losses))
        results[f"{name}/{model_name}" + ("" if inputs == "paper" else f"/{inputs}")] = {
            "metric": measured.metric.tolist(),
            "loss": measured.loss.tolist(),
            "best_loss": measured.best_loss.tolist(),
            "fit_best": fit_best,
            "finite": measured.finite.tolist(),
            "fit_loss_metric": fit,
            "one_by_one": {
                "metric": one_by_one.metric.tolist(),
                "loss": one_by_one.loss.tolist(),
                "best_loss": one_by_one.best_loss.tolist(),
            },
            "plan": {"vmap": program.batched, "scan": program.scanned},
        }
    return results


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
