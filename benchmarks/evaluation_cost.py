"""Cost of evaluating one individual against a plain Adam `fit`.

An evaluation resets the cached model's weights and the optimizer's state,
swaps the genome into the optimizer's variables and fits, with no rebuild and
no retrace. This script times it against `model.fit` with Keras's Adam on the
same model, data and epochs (also compiled once, weights reset each time),
interleaved round by round in one process, and prints the median seconds and
the ratio of medians. Target: at most 1.2x.

    python benchmarks/evaluation_cost.py            # model A and the MLP on digits
    python benchmarks/evaluation_cost.py --quick
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_neuromod import Genome  # noqa: E402
from keras_neuromod import models  # noqa: E402
from keras_neuromod.bases import N_INPUTS  # noqa: E402
from keras_neuromod.evolution import Evaluator  # noqa: E402
from keras_neuromod.evolution import FitnessTask  # noqa: E402


def plain_adam(evaluator, architecture, seed):
    task = evaluator.task
    model = models.build(
        architecture, evaluator.input_shape, evaluator.num_classes, width=task.width
    )
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    initial = evaluator.initial_weights(architecture, seed)
    model.fit(evaluator.x[:64], evaluator.y[:64], batch_size=task.batch_size, verbose=0)  # build
    state = [v for v in model.optimizer.variables if "learning_rate" not in v.path]

    def fit():
        # the same reset as an evaluation: initial weights, zero moments and step
        model.set_weights(initial)
        for variable in state:
            variable.assign(np.zeros(variable.shape, variable.dtype))
        model.fit(
            evaluator.x,
            evaluator.y,
            batch_size=task.batch_size,
            epochs=task.epochs,
            shuffle=True,
            verbose=0,
        )

    return fit


def _time_model(architecture, width, epochs, rounds):
    """Median seconds of an evaluation and of a plain Adam fit of one model, interleaved
    over `rounds` rounds; one table row."""
    task = FitnessTask(dataset="digits", base="adam", epochs=epochs, width=width)
    evaluator = Evaluator(task)
    seed = 3
    genomes = [Genome.random(N_INPUTS, task.n_outputs, 4, rng=r) for r in range(rounds + 1)]
    evaluator.evaluate(genomes[-1], architecture, seed)  # trace once
    fit = plain_adam(evaluator, architecture, seed)
    fit()
    times = {"evaluation": [], "adam_fit": []}
    for r in range(rounds):
        pair = [
            (
                "evaluation",
                lambda e=evaluator, g=genomes[r], a=architecture, s=seed: e.evaluate(g, a, s),
            ),
            ("adam_fit", fit),
        ]
        for name, call in pair if r % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    evaluation, plain = np.median(times["evaluation"]), np.median(times["adam_fit"])
    return {
        "model": f"{architecture} (width {width})",
        "epochs": epochs,
        "evaluation_s": round(float(evaluation), 3),
        "adam_fit_s": round(float(plain), 3),
        "ratio": round(float(evaluation / plain), 3),
    }


def _print_table(rows):
    """The rows as a Markdown table, each ratio beside the 1.2x target."""
    print("| model | epochs | evaluation (median s) | Adam fit (median s) | ratio | target |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['epochs']} | {row['evaluation_s']:.2f} | "
            f"{row['adam_fit_s']:.2f} | {row['ratio']:.2f}x | <= 1.20x |"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    rows = [
        _time_model(architecture, width, args.epochs, rounds)
        for architecture, width in (("mlp", 1.0), ("A", 0.5))
    ]
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, {os.cpu_count()} cores, "
        f"{rounds} interleaved rounds, digits, batch 32"
    )
    print()
    _print_table(rows)
    print(json.dumps({"rows": rows, "targets_met": all(r["ratio"] <= 1.2 for r in rows)}))


if __name__ == "__main__":
    main()
