"""The evidence for an agent: Nm-SGD / Nm-Adam against SGD, Adam and their grid-searched best.

The paper's comparison at reduced scale: on each architecture, the agent trains
the model from 10 random initialisations, 2.5 times longer than during
evolution, next to Keras's default SGD (lr 0.01) and Adam (lr 0.001, 0.9,
0.999), and next to SGD* and Adam*, the best settings of a grid search made per
model on a separate seed (the paper's Table 3 searched learning rate, momentum
or betas, epsilon and learning-rate decay). It prints the mean and standard
deviation of the final train and test accuracy, saves the learning curves (the
paper's figures 2 and 3) as PNG and the numbers as JSON, and ends with one JSON
line of the rows, whatever they show.

    python examples/compare.py --agent runs/evolve/best_agent.json --quick
    python examples/compare.py --agent nm_adam_digits                  # a zoo agent
    python examples/compare.py --agent nm_adam_digits --dataset wine   # a task never evolved on
    python examples/compare.py --agent my_agent.json --dataset cifar10 --models A,B,C --epochs 50
"""

import argparse
import itertools
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402

from keras_neuromod import datasets  # noqa: E402
from keras_neuromod import models  # noqa: E402
from keras_neuromod import zoo  # noqa: E402
from keras_neuromod.io import atomic_write_json  # noqa: E402

GRIDS = {
    "SGD*": {"learning_rate": [0.001, 0.01, 0.1], "momentum": [0.0, 0.5, 0.75, 0.9], "decay": [0.0, 0.001]},
    "Adam*": {"learning_rate": [1e-4, 1e-3, 1e-2, 0.1], "beta_1": [0.9, 0.99], "epsilon": [1e-7, 1e-3, 1.0],
              "decay": [0.0, 0.001]},
}
QUICK_GRIDS = {
    "SGD*": {"learning_rate": [0.01, 0.1], "momentum": [0.0, 0.9], "decay": [0.0]},
    "Adam*": {"learning_rate": [1e-3, 1e-2], "beta_1": [0.9], "epsilon": [1e-7, 1.0], "decay": [0.0]},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", required=True, help="agent file or zoo name")
    parser.add_argument("--dataset", default="digits", choices=datasets.NAMES)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", default=None,
                        help="architectures (default: those the agent evolved on; mlp on tabular data)")
    parser.add_argument("--width", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 2.5 x the agent's evolution epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--quick", action="store_true", help="3 seeds, a small grid, mlp and A")
    args = parser.parse_args(argv)
    args.agent_object = zoo.load(args.agent)
    provenance = args.agent_object.provenance
    if args.epochs is None:
        args.epochs = max(1, int(round(2.5 * provenance.get("epochs", 4))))
    if args.width is None:
        args.width = provenance.get("width", 1.0 if args.dataset.startswith("cifar") else 0.5)
    if args.models is None:
        args.models = "mlp,A" if args.quick else ",".join(provenance.get("architectures", ["A", "B", "C"]))
    args.models = [m for m in args.models.split(",") if m]
    if args.quick:
        args.seeds = min(args.seeds, 3)
    return args


def plain_optimizer(method, params=None):
    params = dict(params or {})
    decay = params.pop("decay", 0.0)
    lr = params.pop("learning_rate", 0.01 if method.startswith("SGD") else 0.001)
    if decay:
        lr = keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=decay)
    if method.startswith("SGD"):
        return keras.optimizers.SGD(lr, **params)
    return keras.optimizers.Adam(lr, **params)


def train(data, architecture, width, make_optimizer, seed, epochs, batch_size):
    (x, y), (x_test, y_test), num_classes = data
    keras.utils.set_random_seed(seed)
    model = models.build(architecture, data.input_shape, num_classes, width=width, seed=seed)
    model.compile(optimizer=make_optimizer(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, validation_data=(x_test, y_test), epochs=epochs, batch_size=batch_size,
                        verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    train_curve = np.nan_to_num(np.array(history.history["accuracy"], float))
    test_curve = np.nan_to_num(np.array(history.history["val_accuracy"], float))
    # a run stopped on NaN keeps its last values for the remaining epochs
    pad = epochs - len(train_curve)
    return np.pad(train_curve, (0, pad), mode="edge"), np.pad(test_curve, (0, pad), mode="edge")


def grid_search(method, grid, data, architecture, args):
    best, best_score = None, -1.0
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        curve, _ = train(data, architecture, args.width, lambda: plain_optimizer(method, params),
                         10_000, args.epochs, args.batch_size)
        if curve[-1] > best_score:
            best, best_score = params, curve[-1]
    return best


def plot(results, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    architectures = sorted({r["model"] for r in results})
    figure, axes = plt.subplots(2, len(architectures), figsize=(5 * len(architectures), 7), squeeze=False)
    for column, architecture in enumerate(architectures):
        for row, key in enumerate(("train", "test")):
            axis = axes[row][column]
            for r in (r for r in results if r["model"] == architecture):
                curves = np.array(r[f"{key}_curves"])
                epochs = np.arange(1, curves.shape[1] + 1)
                mean, std = curves.mean(0), curves.std(0)
                axis.plot(epochs, mean, label=r["method"], lw=2 if r["method"].startswith("Nm") else 1.2)
                axis.fill_between(epochs, mean - std, mean + std, alpha=0.15)
            axis.set(title=f"model {architecture}: {key} accuracy", xlabel="epoch", ylabel="accuracy")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    agent = args.agent_object
    os.makedirs(args.out, exist_ok=True)
    kwargs = {"data_dir": args.data_dir} if args.dataset.startswith("cifar") else {}
    try:
        data = datasets.load(args.dataset, **kwargs)
    except datasets.DatasetUnavailableError as error:
        sys.exit(str(error))
    if len(data.input_shape) != 3 and any(m != "mlp" for m in args.models):
        print(f"{args.dataset} is tabular: only the mlp applies.")
        args.models = ["mlp"]
    nm = "Nm-SGD" if agent.base == "sgd" else "Nm-Adam"
    grids = QUICK_GRIDS if args.quick else GRIDS
    print(f"{nm} agent {agent.name!r} on {args.dataset}, models {','.join(args.models)}, "
          f"{args.epochs} epochs, {args.seeds} seeds", flush=True)
    start = time.perf_counter()
    results = []
    for architecture in args.models:
        chosen = {}
        for method, grid in grids.items():
            chosen[method] = grid_search(method, grid, data, architecture, args)
            print(f"  model {architecture}: {method} grid choice {chosen[method]}", flush=True)
        methods = {
            nm: lambda: agent.optimizer(),
            "SGD": lambda: plain_optimizer("SGD"),
            "Adam": lambda: plain_optimizer("Adam"),
            "SGD*": lambda: plain_optimizer("SGD*", chosen["SGD*"]),
            "Adam*": lambda: plain_optimizer("Adam*", chosen["Adam*"]),
        }
        for method, make in methods.items():
            runs = [train(data, architecture, args.width, make, seed, args.epochs, args.batch_size)
                    for seed in range(args.seeds)]
            train_curves = np.array([r[0] for r in runs])
            test_curves = np.array([r[1] for r in runs])
            results.append({
                "model": architecture, "method": method, "settings": chosen.get(method),
                "train_mean": float(train_curves[:, -1].mean()), "train_std": float(train_curves[:, -1].std()),
                "test_mean": float(test_curves[:, -1].mean()), "test_std": float(test_curves[:, -1].std()),
                "train_curves": train_curves.tolist(), "test_curves": test_curves.tolist(),
            })
            print(f"  model {architecture}: {method:8s} train {results[-1]['train_mean']:.4f} "
                  f"+- {results[-1]['train_std']:.4f}  test {results[-1]['test_mean']:.4f} "
                  f"+- {results[-1]['test_std']:.4f}", flush=True)
    figure = os.path.join(args.out, f"compare_{args.dataset}.png")
    plot(results, figure, f"{agent.name} on {args.dataset}: mean +- std over {args.seeds} seeds")
    atomic_write_json(os.path.join(args.out, f"compare_{args.dataset}.json"),
                      {"agent": agent.name, "dataset": args.dataset, "epochs": args.epochs,
                       "seeds": args.seeds, "results": results})
    print()
    print(f"| model | method | final train accuracy | final test accuracy |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['method']} | {r['train_mean']:.4f} +- {r['train_std']:.4f} | "
              f"{r['test_mean']:.4f} +- {r['test_std']:.4f} |")
    print(f"\nFigure: {figure}; {time.perf_counter() - start:.0f} s")
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
             if not k.endswith("_curves")} for r in results]
    print(json.dumps({"agent": agent.name, "dataset": args.dataset, "epochs": args.epochs,
                      "seeds": args.seeds, "rows": rows}))


if __name__ == "__main__":
    main()
