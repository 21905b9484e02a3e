"""Train-step time of Nm-Adam and Nm-SGD against Keras's Adam and SGD.

Measured side by side in one process, interleaved round by round (the order of
the optimizers rotates each round), on

* the paper's model A on CIFAR-shaped random data (32x32x3, 10 classes), batch 128;
* an MLP (64-128-10, 9.6 k parameters) on the bundled digits, batch 32;
* Keras's `MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
  classes=10)` (158 trainable tensors, 423 k parameters) on CIFAR-shaped random
  data, batch 64;
* a transformer-like stack (a Dense embedding, 50 residual blocks of Dense 128
  with GELU, LayerNormalization and Dense 64, and a classifier: 304 trainable
  tensors, 844 k parameters) on random sequences of 16 steps of 32 features,
  batch 64.

The optimizer's overhead per tensor shows in the last two, whose tensors are
many and mostly small.

Each timing is one `model.fit` epoch (20 batches for MobileNetV2 and the
stack, 12 for model A, 200 for the MLP; the same batches for every optimizer),
timed from the epoch's start to its end by a callback. `fit`'s own setup and
teardown are left out: on TensorFlow the teardown sometimes waits hundreds of
milliseconds in native code, whatever the optimizer (a model A epoch of 12
steps then seems to run at 215 rather than 120 ms a step).
Every optimizer trains `--instances` separately built models (3 by default).
The table gives, per optimizer, the median over its instances of each
instance's median milliseconds per step (and those medians), and the ratio to
the plain optimizer: the median of the paired ratios, instance k of one
optimizer against instance k of the other in the same round. Targets: Nm-Adam
at most 1.10x Adam on model A, 1.5x on the MLP and 1.05x on MobileNetV2 and the
stack.

A second table times the optimizer step alone, which is all that differs
between the optimizers: each optimizer applies the same fixed gradients
(passed in as arguments, so that nothing computed from them is folded into
constants) to one shared model's variables, `--repeats` times in one
`tf.function` (the graph mode Keras trains in on TensorFlow; on JAX this table
is left out), in interleaved rounds. The optimizer's added milliseconds over
the plain optimizer, divided by the plain optimizer's whole train step from the
first table, give its overhead apart from the noise of whole train steps:
`1 + added / plain step`.

    python benchmarks/optimizer_overhead.py            # about 40 minutes on 2 cores
    python benchmarks/optimizer_overhead.py --quick    # fewer rounds and steps
    python benchmarks/optimizer_overhead.py --backend jax --cases mobilenet stack
    python benchmarks/optimizer_overhead.py --inputs sensing   # agents of the sensing set
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "--backend" in sys.argv[:-1]:  # Keras reads its backend when first imported
    os.environ["KERAS_BACKEND"] = sys.argv[sys.argv.index("--backend") + 1]

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_neuromod import Genome  # noqa: E402
from keras_neuromod import NmAdam  # noqa: E402
from keras_neuromod import NmSGD  # noqa: E402
from keras_neuromod import bases  # noqa: E402
from keras_neuromod import datasets  # noqa: E402
from keras_neuromod import inputs as input_sets  # noqa: E402
from keras_neuromod import models  # noqa: E402

TARGETS = {
    ("model A", "Nm-Adam"): 1.10,
    ("MLP", "Nm-Adam"): 1.5,
    ("MobileNetV2", "Nm-Adam"): 1.05,
    ("stack", "Nm-Adam"): 1.05,
}
CASES = {"A": "model A", "mlp": "MLP", "mobilenet": "MobileNetV2", "stack": "stack"}


INPUTS = "paper"  # the agents' input set (--inputs)


def optimizers(seed):
    size = input_sets.get(INPUTS).size
    adam_agent = Genome.random(size, bases.get("adam").n_outputs, n_regulatory=4, rng=seed)
    sgd_agent = Genome.random(size, bases.get("sgd").n_outputs, n_regulatory=4, rng=seed)
    return {
        "Adam": lambda: keras.optimizers.Adam(),
        "Nm-Adam": lambda: NmAdam(agent=adam_agent, inputs=INPUTS),
        "SGD": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
        "Nm-SGD": lambda: NmSGD(agent=sgd_agent, inputs=INPUTS),
    }


def mobilenet(seed):
    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    )


def stack(seed, blocks=50, steps=16, features=32, width=64, hidden=128):
    """A transformer-like stack: residual blocks of Dense, LayerNormalization, Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((steps, features))
    x = keras.layers.Dense(width)(inputs)
    for _ in range(blocks):
        h = keras.layers.Dense(hidden, activation="gelu")(x)
        h = keras.layers.LayerNormalization()(h)
        x = keras.layers.Add()([x, keras.layers.Dense(width)(h)])
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def cases(steps, seed, names):
    rng = np.random.default_rng(seed)
    found = {}
    for name in names:
        if name == "A":
            x = rng.random((128 * steps["A"], 32, 32, 3), dtype=np.float32)
            y = rng.integers(0, 10, len(x)).astype("int32")
            found[CASES[name]] = (lambda: models.build("A", (32, 32, 3), 10, seed=seed), x, y, 128)
        elif name == "mlp":
            (dx, dy), _, _ = datasets.digits()
            repeat = -(-32 * steps["mlp"] // len(dx))
            dx = np.concatenate([dx] * repeat)[: 32 * steps["mlp"]]
            dy = np.concatenate([dy] * repeat)[: 32 * steps["mlp"]]
            found[CASES[name]] = (
                lambda: models.build("mlp", (8, 8, 1), 10, hidden=(128,), seed=seed),
                dx,
                dy,
                32,
            )
        elif name == "mobilenet":
            x = rng.random((64 * steps["big"], 32, 32, 3), dtype=np.float32)
            y = rng.integers(0, 10, len(x)).astype("int32")
            found[CASES[name]] = (lambda: mobilenet(seed), x, y, 64)
        elif name == "stack":
            x = rng.normal(size=(64 * steps["big"], 16, 32)).astype(np.float32)
            y = rng.integers(0, 10, len(x)).astype("int32")
            found[CASES[name]] = (lambda: stack(seed), x, y, 64)
    return found


class EpochTimer(keras.callbacks.Callback):
    """Seconds from the start to the end of each epoch: the train steps and
    their data, without `fit`'s own setup and teardown."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def rotated(items, shift):
    """`items` in the order of round `shift`: each round starts one later."""
    shift %= len(items)
    return items[shift:] + items[:shift]


def measure(case, rounds, seed, instances=1):
    """Milliseconds per step of each optimizer: `{name: [[per round] per instance]}`.

    Each optimizer trains `instances` separately built and compiled models; a
    round times one epoch of every instance of every optimizer, in an order
    that rotates from round to round, timed by an `EpochTimer`.
    """
    build, x, y, batch_size = case
    trainers = []
    for name, make in optimizers(seed).items():
        for instance in range(instances):
            model = build()
            model.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
            model.fit(x, y, batch_size=batch_size, shuffle=False, verbose=0)  # trace and warm up
            trainers.append((name, instance, model))
    steps = len(x) // batch_size
    times = {}
    for r in range(rounds):
        for name, instance, model in rotated(trainers, r):
            timer = EpochTimer()
            model.fit(
                x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[timer]
            )
            times.setdefault(name, [[] for _ in range(instances)])[instance].append(
                timer.seconds[0] / steps * 1000
            )
    return times


def measure_apply(case, rounds, seed, repeats=10):
    """Milliseconds per optimizer step alone: `{name: [per round]}`.

    Every optimizer applies the same fixed gradients to the variables of one
    model, `repeats` times per call of one compiled function (TensorFlow only).
    The gradients are the function's argument, not constants of its graph,
    which TensorFlow would fold together with everything computed from them.
    """
    import tensorflow as tf

    build, _, _, _ = case
    variables = build().trainable_variables
    rng = np.random.default_rng(seed)
    gradients = [
        tf.constant(rng.normal(scale=1e-3, size=v.shape).astype("float32")) for v in variables
    ]
    steps = {}
    for name, make in optimizers(seed).items():
        optimizer = make()
        optimizer.build(variables)

        @tf.function(autograph=False)  # a Python loop: unrolled `repeats` times
        def step(gradients, optimizer=optimizer):
            for _ in range(repeats):
                optimizer.apply(gradients, variables)

        step(gradients)  # trace
        steps[name] = step
    times = {name: [] for name in steps}
    for r in range(rounds):
        for name in rotated(list(steps), r):
            start = time.perf_counter()
            steps[name](gradients)
            times[name].append((time.perf_counter() - start) / repeats * 1000)
    return times


def paired_ratio(times, name, base):
    """The median over rounds and instances of `name`'s time over `base`'s.

    Instance k of one optimizer is paired with instance k of the other, round
    by round, so that the machine's slow drifts cancel within each pair.
    """
    return float(
        np.median(
            [
                mine / theirs
                for own, plain in zip(times[name], times[base])
                for mine, theirs in zip(own, plain)
            ]
        )
    )


def typical(per_instance):
    """The median over instances of each instance's median milliseconds."""
    return float(np.median([np.median(values) for values in per_instance]))


def _parser():
    """The command line: rounds, seed, instances, cases, repeats, backend and input set."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 rounds, fewer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--instances",
        type=int,
        default=3,
        help="models built per optimizer (their medians' median is reported)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=list(CASES),
        default=list(CASES),
        help="the models to time (default: all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="optimizer steps per timed call in the step-alone table",
    )
    parser.add_argument(
        "--backend",
        choices=["tensorflow", "jax"],
        default=None,
        help="Keras backend (default: KERAS_BACKEND, else TensorFlow)",
    )
    parser.add_argument(
        "--inputs",
        choices=sorted(input_sets.INPUT_SETS),
        default="paper",
        help="the agents' input set (default: the core paper's)",
    )
    return parser


def _step_alone_rows(label, case, rounds, args, medians):
    """Time the optimizer step alone on one case: a row per modulated optimizer, its
    added milliseconds over the plain one's against the plain one's train step."""
    applied = {
        name: float(np.median(v))
        for name, v in measure_apply(case, 5 * rounds, args.seed, args.repeats).items()
    }
    rows = []
    for name, base in (("Nm-Adam", "Adam"), ("Nm-SGD", "SGD")):
        added = applied[name] - applied[base]
        rows.append(
            {
                "case": label,
                "optimizer": name,
                "step_ms": round(applied[name], 3),
                "plain_step_ms": round(applied[base], 3),
                "added_ms": round(added, 3),
                "ratio": round(1 + added / medians[base], 3),
                "target": TARGETS.get((label, name)),
            }
        )
    return rows


def _train_step_rows(label, times, medians):
    """A row per optimizer of one case: its median train step and its paired ratio to the
    plain optimizer."""
    spread = {
        name: [round(float(np.median(v)), 1) for v in values] for name, values in times.items()
    }
    rows = []
    for name, base in (
        ("Adam", "Adam"),
        ("Nm-Adam", "Adam"),
        ("SGD", "SGD"),
        ("Nm-SGD", "SGD"),
    ):
        ratio = paired_ratio(times, name, base)
        rows.append(
            {
                "case": label,
                "optimizer": name,
                "median_ms_per_step": round(medians[name], 3),
                "ratio": round(ratio, 3),
                "target": TARGETS.get((label, name)),
                "instances_ms_per_step": spread[name],
            }
        )
    return rows


def _print_train_step_table(rows):
    """The train-step rows as a Markdown table."""
    print("| case | optimizer | median ms/step | ratio to plain | target | instances' medians |")
    print("|---|---|---:|---:|---:|---|")
    for row in rows:
        target = f"<= {row['target']:.2f}x" if row["target"] else ""
        each = ", ".join(f"{v:.1f}" for v in row["instances_ms_per_step"])
        print(
            f"| {row['case']} | {row['optimizer']} | {row['median_ms_per_step']:.2f} | "
            f"{row['ratio']:.3f}x | {target} | {each} |"
        )


def _print_step_alone_table(alone):
    """The step-alone rows as a Markdown table, under its title."""
    print("The optimizer step alone (the same gradients and variables for every optimizer):")
    print()
    print(
        "| case | optimizer | its step, ms | plain optimizer's step, ms | added ms | "
        "1 + added / plain train step | target |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in alone:
        target = f"<= {row['target']:.2f}x" if row["target"] else ""
        print(
            f"| {row['case']} | {row['optimizer']} | {row['step_ms']:.2f} | "
            f"{row['plain_step_ms']:.2f} | {row['added_ms']:+.2f} | {row['ratio']:.3f}x | "
            f"{target} |"
        )


def main(argv=None):
    args = _parser().parse_args(argv)
    global INPUTS
    INPUTS = args.inputs
    rounds = 3 if args.quick else args.rounds
    steps = {"A": 4, "mlp": 60, "big": 8} if args.quick else {"A": 12, "mlp": 200, "big": 20}
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
        f"{rounds} interleaved rounds; agents of the {args.inputs!r} input set"
    )
    rows, alone = [], []
    tensorflow = keras.backend.backend() == "tensorflow"
    for label, case in cases(steps, args.seed, args.cases).items():
        print(f"timing {label} ...", file=sys.stderr, flush=True)
        times = measure(case, rounds, args.seed, args.instances)
        medians = {name: typical(values) for name, values in times.items()}
        if tensorflow:
            alone += _step_alone_rows(label, case, rounds, args, medians)
        rows += _train_step_rows(label, times, medians)
    print()
    _print_train_step_table(rows)
    met = all(row["ratio"] <= row["target"] for row in rows if row["target"])
    if alone:
        print()
        _print_step_alone_table(alone)
    alone_met = all(row["ratio"] <= row["target"] for row in alone if row["target"])
    print(
        json.dumps(
            {
                "rows": rows,
                "targets_met": met,
                "step_alone": alone,
                "step_alone_targets_met": alone_met if alone else None,
            }
        )
    )


if __name__ == "__main__":
    main()
