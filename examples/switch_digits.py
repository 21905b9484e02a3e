"""Digits 0-4 versus 5-9: weight-space switching against the extra-input baseline.

The MNIST experiment of "Neuromodulator-inspired task switching using a fixed
weight-space transformation" (preprint, 2024 or later), on the bundled data: the ten digit classes
are split into task A (0-4) and task B (5-9), both answered by one shared 5-way
softmax head. Two ways to tell the network which task it is doing:

* switch: every layer is switchable (SwitchableConv2D, SwitchableDense); task A
  runs the network f (state 0), task B its transform f' (``W' = M W``,
  ``b' = b + v``, per layer, ``M = I + G / sqrt(n)``, fixed and random).
* extra input: an ordinary network whose input carries a one-hot task code
  (TaskInput: two constant channels appended to the image).

Both train with `keras_neuromod.switching.fit_alternating` (the tasks in turn,
`--period` epochs each, Adam), over a range of hidden sizes (the conv filters
and the dense units), and are compared at equal architecture by test accuracy
(mean of task A in state 0 and task B in state 1) against the trainable
parameter count. The switching network also holds its fixed M and v, which are
not trained and are given by one seed per layer; they are not counted.

Data: the paper uses MNIST. MNIST is not available offline on this machine, so
the default is scikit-learn's bundled 8x8 digits (`keras_neuromod.datasets.
digits()`, 1,797 images, no network). `--dataset mnist` loads MNIST through
`keras.datasets.mnist` where it is cached or downloadable.

Prints progress, a table, saves a PNG of accuracy against parameter count (the
paper's figure 5) and ends with one JSON line holding the rows.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from keras_neuromod import datasets  # noqa: E402
from keras_neuromod.io import atomic_write_json  # noqa: E402
from keras_neuromod.switching import SwitchableConv2D  # noqa: E402
from keras_neuromod.switching import SwitchableDense  # noqa: E402
from keras_neuromod.switching import TaskInput  # noqa: E402
from keras_neuromod.switching import fit_alternating  # noqa: E402
from keras_neuromod.switching import set_task  # noqa: E402

METHODS = ("switch", "extra_input")


def parse_args(argv=None):
    parser = _common.parser(
        "Digits 0-4 vs 5-9: weight-space switching vs an extra task input. "
        "MNIST is not available offline here: the default data are scikit-learn's "
        "bundled 8x8 digits (keras_neuromod.datasets.digits()).",
        "runs/switch_digits",
        quick="hidden 2,4,8,16,32, 3 seeds, 30 cycles",
        seed_help="base seed (default 0)",
    )
    parser.add_argument(
        "--dataset",
        default="digits",
        choices=["digits", "mnist"],
        help="digits (bundled, default) or mnist (needs the network or keras's cache)",
    )
    parser.add_argument(
        "--hidden",
        default="2,4,8,16,32,64",
        help="hidden sizes, comma separated (default 2,4,8,16,32,64)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per point (default 5)")
    parser.add_argument("--cycles", type=int, default=60, help="switching cycles (default 60)")
    parser.add_argument("--period", type=int, default=1, help="epochs per task (default 1)")
    parser.add_argument("--batch-size", type=int, default=32)
    _common.add_learning_rate(parser, 3e-3, "Adam learning rate (default 0.003)")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.seeds, args.cycles = "2,4,8,16,32", 3, 30
    try:
        args.hidden = [int(h) for h in args.hidden.split(",")]
    except ValueError:
        parser.error(f"--hidden must be comma-separated ints, got {args.hidden!r}")
    for name in ("seeds", "cycles", "period", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.hidden) < 1:
        parser.error("--hidden sizes must be at least 1")
    return args


def load(name):
    if name == "digits":
        (x_train, y_train), (x_test, y_test), _ = datasets.digits()
        return x_train, y_train, x_test, y_test
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # noqa: BLE001 - any download failure means the same
        raise SystemExit(
            f"MNIST could not be loaded ({type(error).__name__}: {error}). It needs the "
            "network or keras's cache (~/.keras/datasets/mnist.npz); run with "
            "--dataset digits (the default) instead."
        ) from error

    def images(x):
        return (x.astype("float32") / 255.0)[..., None]

    return images(x_train), y_train.astype("int32"), images(x_test), y_test.astype("int32")


def split(x, y):
    """Task A: classes 0-4 (labels 0-4); task B: classes 5-9 (labels 0-4)."""
    a, b = y < 5, y >= 5
    return (x[a], y[a]), (x[b], y[b] - 5)


def branch(method, hidden, inputs, seed, name):
    """conv(h, 3x3) - maxpool 2 - dense(h) - softmax(5), switchable or plain."""
    init = keras.initializers.GlorotUniform
    if method == "switch":
        h = SwitchableConv2D(
            hidden,
            3,
            activation="relu",
            modulation_seed=3 * seed,
            kernel_initializer=init(3 * seed),
        )(inputs)
        h = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(h))
        h = SwitchableDense(
            hidden, "relu", modulation_seed=3 * seed + 1, kernel_initializer=init(3 * seed + 1)
        )(h)
        return SwitchableDense(
            5,
            "softmax",
            modulation_seed=3 * seed + 2,
            kernel_initializer=init(3 * seed + 2),
            name=name,
        )(h)
    h = keras.layers.Conv2D(hidden, 3, activation="relu", kernel_initializer=init(3 * seed))(inputs)
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(h))
    h = keras.layers.Dense(hidden, "relu", kernel_initializer=init(3 * seed + 1))(h)
    return keras.layers.Dense(5, "softmax", kernel_initializer=init(3 * seed + 2), name=name)(h)


def build(runs, input_shape):
    """Every (method, hidden, seed) run as one independent branch of one model.

    Each branch has its own loss (Keras sums them), so its weights get the
    gradient of its own loss only, and Adam updates each weight from its own
    gradient: every branch trains exactly as it would alone, on the same
    batches. One `fit_alternating` call then trains all runs, which keeps
    Keras's per-epoch overhead from dominating on a small machine. The
    extra-input branches share one TaskInput (it has no weights).
    """
    inputs = keras.Input(input_shape)
    with_task = TaskInput(2)(inputs)
    outputs = {}
    for method, hidden, seed in runs:
        name = f"{method}_h{hidden}_s{seed}"
        source = inputs if method == "switch" else with_task
        outputs[name] = branch(method, hidden, source, seed, name)
    return keras.Model(inputs, outputs)


def trainable_count(model, name):
    """Trainable parameters of the branch that ends in layer `name`."""
    seen, stack, total = set(), [model.get_layer(name)], 0
    while stack:
        layer = stack.pop()
        if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
            continue
        seen.add(id(layer))
        total += int(sum(np.prod(w.shape) for w in layer.trainable_weights))
        for node in layer._inbound_nodes:
            stack.extend(t._keras_history[0] for t in node.input_tensors)
    return total


def accuracy(model, task, x, y):
    set_task(model, task)
    predicted = model.predict(x, batch_size=512, verbose=0)
    return {name: float(np.mean(np.argmax(p, -1) == y)) for name, p in predicted.items()}


def run_all(runs, data, args):
    keras.utils.set_random_seed(args.seed)
    (train_a, train_b), (test_a, test_b) = data
    model = build(runs, train_a[0].shape[1:])
    model.compile(keras.optimizers.Adam(args.learning_rate), "sparse_categorical_crossentropy")
    names = list(model.output_names) if isinstance(model.output, list) else list(model.output)
    tasks = []
    for label, (x, y) in (("A", train_a), ("B", train_b)):
        tasks.append({"x": x, "y": {name: y for name in names}, "name": label})
    start = time.time()

    def progress(cycle, row):
        if (cycle + 1) % max(1, args.cycles // 10) == 0:
            print(
                f"  cycle {cycle + 1:3d}/{args.cycles}  summed loss A {row['A_loss']:.3f}"
                f"  B {row['B_loss']:.3f}  ({time.time() - start:.0f} s)",
                flush=True,
            )

    fit_alternating(
        model,
        tasks,
        period=args.period,
        cycles=args.cycles,
        batch_size=args.batch_size,
        on_cycle_end=progress,
    )
    acc_a = accuracy(model, 0, *test_a)
    acc_b = accuracy(model, 1, *test_b)
    crossed = accuracy(model, 1, *test_a)  # task A in B's state: what the switch does
    results = {}
    for method, hidden, seed in runs:
        name = f"{method}_h{hidden}_s{seed}"
        results[(method, hidden, seed)] = (
            trainable_count(model, name),
            [acc_a[name], acc_b[name]],
            crossed[name],
        )
    return results


def plot(rows, args, path):
    fig, ax = _common.pyplot().subplots(figsize=(7, 4.5))
    styles = {
        "switch": ("o-", "weight-space switching (fixed M, v)"),
        "extra_input": ("s--", "extra task input (baseline)"),
    }
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        container = ax.errorbar(
            [r["params"] for r in mine],
            [100 * r["accuracy"] for r in mine],
            yerr=[100 * r["std"] for r in mine],
            fmt=styles[method][0],
            capsize=3,
            label=styles[method][1],
        )
        offset, align = ((-6, 4), "right") if method == "switch" else ((6, -13), "left")
        for r in mine:
            ax.annotate(
                f"h={r['hidden']}",
                (r["params"], 100 * r["accuracy"]),
                textcoords="offset points",
                xytext=offset,
                ha=align,
                fontsize=8,
                color=container[0].get_color(),
            )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("test accuracy, mean of the two tasks (%)")
    ax.set_title(f"{args.dataset}: classes 0-4 / 5-9, {args.seeds} seeds per point")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    _common.save_figure(fig, path, dpi=120)


def _summarise(results, hidden_sizes, seeds):
    """Print every run's accuracies; return one row per (hidden size, method) with the
    means over the seeds."""
    rows = []
    for hidden in hidden_sizes:
        for method in METHODS:
            mine = [results[(method, hidden, s)] for s in seeds]
            for seed, (params, acc, crossed) in zip(seeds, mine):
                print(
                    f"  hidden {hidden:3d}  {method:11s}  seed {seed:3d}  params {params:6d}  "
                    f"A {acc[0]:.3f}  B {acc[1]:.3f}  (A in B's state {crossed:.3f})"
                )
            means = np.array([np.mean(acc) for _, acc, _ in mine])
            rows.append(
                {
                    "hidden": hidden,
                    "method": method,
                    "params": mine[0][0],
                    "accuracy": float(means.mean()),
                    "std": float(means.std()),
                    "accuracy_a": float(np.mean([acc[0] for _, acc, _ in mine])),
                    "accuracy_b": float(np.mean([acc[1] for _, acc, _ in mine])),
                    "a_in_wrong_state": float(np.mean([c for _, _, c in mine])),
                }
            )
    return rows


def _print_results_table(rows):
    """One line per (hidden size, method): parameters and accuracies in percent."""
    _common.print_table(
        [
            (
                r["hidden"],
                r["method"],
                r["params"],
                f"{100 * r['accuracy']:.1f} +- {100 * r['std']:.1f}",
                f"{100 * r['accuracy_a']:.1f}",
                f"{100 * r['accuracy_b']:.1f}",
                f"{100 * r['a_in_wrong_state']:.1f}",
            )
            for r in rows
        ],
        headers=("hidden", "method", "params", "accuracy", "task A", "task B", "A, wrong state"),
        align="rlrrrrr",
    )


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    x_train, y_train, x_test, y_test = load(args.dataset)
    data = (split(x_train, y_train), split(x_test, y_test))
    print(
        f"{args.dataset}: {len(x_train)} train / {len(x_test)} test images; hidden sizes "
        f"{args.hidden}, {args.seeds} seeds, {args.cycles} cycles of {args.period} "
        "epoch(s) per task."
    )
    start = time.time()
    seeds = [100 * args.seed + index for index in range(args.seeds)]
    runs = [(m, h, s) for h in args.hidden for m in METHODS for s in seeds]
    print(f"Training {len(runs)} runs as independent branches of one model.")
    results = run_all(runs, data, args)
    rows = _summarise(results, args.hidden, seeds)
    _print_results_table(rows)
    seconds = time.time() - start
    figure = os.path.join(args.out, "switch_digits.png")
    plot(rows, args, figure)
    result = {
        "dataset": args.dataset,
        "seeds": args.seeds,
        "cycles": args.cycles,
        "period": args.period,
        "seconds": round(seconds, 1),
        "rows": rows,
    }
    atomic_write_json(os.path.join(args.out, "result.json"), dict(result, figure=figure))
    print(f"\n{seconds:.0f} s; figure: {figure}")
    _common.print_json_line(result)


if __name__ == "__main__":
    main()
