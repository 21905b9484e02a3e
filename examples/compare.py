"""The evidence for an agent: Nm-SGD / Nm-Adam against SGD, Adam and their grid-searched best.

The paper's comparison at reduced scale: on each architecture, the agent trains
the model from 10 random initialisations, 2.5 times longer than during
evolution, next to Keras's default SGD (lr 0.01) and Adam (lr 0.001, 0.9,
0.999), and next to SGD* and Adam*, the best settings of a grid search made per
model on a separate seed. The grid is this project's: the paper (its Table 3)
lists only the settings its own search chose, over learning rate, momentum or
beta_1, epsilon and learning-rate decay; `GRIDS` spans those settings. It
prints the mean and standard deviation of the final train and test accuracy
and, since every method trains from the same seeds, each agent's paired
differences of final test accuracy against every baseline with their 95%
confidence interval (Student's t over the seeds; an interval that contains 0
is a difference within noise). It saves the learning curves (the paper's
figures 2 and 3) as PNG and the numbers as JSON, and ends with one JSON line of
the rows, whatever they show.

Several agents share one set of baselines. Every finished run is recorded in
OUT as it ends, so `--resume` continues an interrupted comparison without
redoing any run; `--record` stores the results in each agent's card (and
refreshes the zoo index for zoo agents).

    python examples/compare.py --agent runs/evolve/best_agent.json --quick
    python examples/compare.py --agent nm_adam_digits nm_sgd_digits    # zoo agents
    python examples/compare.py --agent nm_adam_digits --dataset wine   # a task never evolved on
    python examples/compare.py --agent my_agent.json --dataset cifar10 --models A,B,C --epochs 50
"""

import hashlib
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import numpy as np  # noqa: E402
import keras  # noqa: E402

from keras_neuromod import datasets  # noqa: E402
from keras_neuromod import models  # noqa: E402
from keras_neuromod import zoo  # noqa: E402
from keras_neuromod.io import atomic_write_json  # noqa: E402
from keras_neuromod.io import read_json  # noqa: E402

GRIDS = {
    "SGD*": {"learning_rate": [0.001, 0.01, 0.1], "momentum": [0.0, 0.5, 0.75, 0.9], "decay": [0.0, 0.001]},
    "Adam*": {"learning_rate": [1e-4, 1e-3, 1e-2, 0.1], "beta_1": [0.9, 0.99], "epsilon": [1e-7, 1e-3, 1.0],
              "decay": [0.0, 0.001]},
}
GRID_SEED = 10_000  # the grid search's own initialisation, none of the compared seeds
QUICK_GRIDS = {
    "SGD*": {"learning_rate": [0.01, 0.1], "momentum": [0.0, 0.9], "decay": [0.0]},
    "Adam*": {"learning_rate": [1e-3, 1e-2], "beta_1": [0.9], "epsilon": [1e-7, 1.0], "decay": [0.0]},
}


def parse_args(argv=None):
    parser = _common.parser(__doc__, "runs/compare", quick="3 seeds, a small grid, mlp and A",
                            seed=None,
                            resume="reuse the finished runs recorded in OUT (same protocol only)")
    parser.add_argument("--agent", nargs="*", default=[],
                        help="agent files or zoo names (several share one set of baselines; "
                             "none: the baselines alone, with --epochs and --width given)")
    parser.add_argument("--dataset", default="digits", choices=datasets.NAMES)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", default=None,
                        help="architectures (default: those the agent evolved on; mlp on tabular data)")
    parser.add_argument("--width", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 2.5 x the agent's evolution epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--record", action="store_true",
                        help="store the results in each agent's card (benchmark[DATASET])")
    args = parser.parse_args(argv)
    args.agents = [zoo.load(a) for a in args.agent]
    if not args.agents and (args.epochs is None or args.width is None):
        parser.error("without --agent, give --epochs and --width (the baselines' protocol)")
    provenance = args.agents[0].provenance if args.agents else {}
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


class RunRecord:
    """Finished runs kept in a JSON file, so that an interrupted comparison resumes.

    Each run is stored under a key naming what it was (model, method, its
    settings or agent, seed) as soon as it ends; the file also holds the
    protocol, and a record made under another protocol is not reused.
    """

    def __init__(self, path, protocol, resume):
        self.path, self.protocol, self.runs = path, protocol, {}
        if resume and os.path.exists(path):
            saved = read_json(path, what="comparison record")
            if saved.get("protocol") != protocol:
                sys.exit(f"{path} was made with another protocol ({saved.get('protocol')}); "
                         "use another --out, or leave out --resume to start over.")
            self.runs = saved["runs"]
            print(f"Resuming: {len(self.runs)} finished run(s) in {path}", flush=True)

    def get(self, key, compute):
        if key not in self.runs:
            self.runs[key] = compute()
            atomic_write_json(self.path, {"protocol": self.protocol, "runs": self.runs})
        return self.runs[key]


def agent_digest(agent):
    """A short digest of what makes an agent train the way it does."""
    data = agent.to_dict()
    text = json.dumps([data["base"], data["genome"], data["ranges"], data["settings"]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    return [np.pad(curve, (0, pad), mode="edge").tolist() for curve in (train_curve, test_curve)]


def grid_search(method, grid, data, architecture, args, record):
    """The grid point with the best final training accuracy, on a seed of its own."""
    best, best_score = None, -1.0
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        key = f"grid/{architecture}/{method}/{json.dumps(params, sort_keys=True)}"
        curve, _ = record.get(key, lambda: train(data, architecture, args.width,
                                                   lambda: plain_optimizer(method, params),
                                                   GRID_SEED, args.epochs, args.batch_size))
        if curve[-1] > best_score:
            best, best_score = params, curve[-1]
    return best


def plot(results, path, title):
    architectures = sorted({r["model"] for r in results})
    figure, axes = _common.pyplot().subplots(2, len(architectures), figsize=(5 * len(architectures), 7),
                                             squeeze=False)
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
    return _common.save_figure(figure, path)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    kwargs = {"data_dir": args.data_dir} if args.dataset.startswith("cifar") else {}
    try:
        data = datasets.load(args.dataset, **kwargs)
    except datasets.DatasetUnavailableError as error:
        sys.exit(str(error))
    if len(data.input_shape) != 3 and any(m != "mlp" for m in args.models):
        print(f"{args.dataset} is tabular: only the mlp applies.")
        args.models = ["mlp"]
    grids = QUICK_GRIDS if args.quick else GRIDS
    labels = [("Nm-SGD" if a.base == "sgd" else "Nm-Adam") for a in args.agents]
    labels = [f"{label} {a.name}" if labels.count(label) > 1 else label
              for label, a in zip(labels, args.agents)]
    protocol = {"dataset": args.dataset, "epochs": args.epochs, "width": args.width,
                "batch_size": args.batch_size, "grid_seed": GRID_SEED}
    record = RunRecord(os.path.join(args.out, f"compare_{args.dataset}.runs.json"), protocol, args.resume)
    print(f"{', '.join(f'{l} ({a.name})' for l, a in zip(labels, args.agents)) or 'Baselines'} on {args.dataset}, "
          f"models {','.join(args.models)}, {args.epochs} epochs, {args.seeds} seeds", flush=True)
    start = time.perf_counter()
    results = []
    for architecture in args.models:
        chosen = {method: grid_search(method, grid, data, architecture, args, record)
                  for method, grid in grids.items()}
        for method, params in chosen.items():
            print(f"  model {architecture}: {method} grid choice {params}", flush=True)
        methods = {label: (lambda a=a: a.optimizer(), f"agent:{agent_digest(a)}")
                   for label, a in zip(labels, args.agents)}
        methods.update({
            "SGD": (lambda: plain_optimizer("SGD"), "SGD"),
            "Adam": (lambda: plain_optimizer("Adam"), "Adam"),
            **{m: (lambda m=m: plain_optimizer(m, chosen[m]), f"{m}:{json.dumps(chosen[m], sort_keys=True)}")
               for m in chosen},
        })
        for method, (make, what) in methods.items():
            runs = [record.get(f"run/{architecture}/{what}/{seed}",
                               lambda seed=seed: train(data, architecture, args.width, make, seed,
                                                       args.epochs, args.batch_size))
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
    names = ", ".join(a.name for a in args.agents) or "baselines"
    figure = os.path.join(args.out, f"compare_{args.dataset}.png")
    plot(results, figure, f"{names} on {args.dataset}: mean +- std over {args.seeds} seeds")
    command = "python examples/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
             if not k.endswith("_curves")} for r in results]
    paired = paired_differences(results, labels)
    summary = {"dataset": args.dataset, "epochs": args.epochs, "seeds": args.seeds,
               "width": args.width, "command": command, "figure": figure, "rows": rows,
               "paired": paired}
    atomic_write_json(os.path.join(args.out, f"compare_{args.dataset}.json"),
                      {**summary, "agents": [a.name for a in args.agents], "results": results})
    print()
    print(markdown_table(rows))
    if paired:
        print()
        print(paired_table(paired))
    print(f"\nFigure: {figure}; {time.perf_counter() - start:.0f} s")
    if args.record:
        for label, name in zip(labels, args.agent):
            own = [r for r in rows if r["method"] == label or not r["method"].startswith("Nm-")]
            mine = [p for p in paired if p["method"] == label]
            zoo.record_benchmark(name, args.dataset,
                                 {**summary, "method": label, "rows": own, "paired": mine})
            print(f"Recorded in the card of {name}")
    _common.print_json_line({"agents": [a.name for a in args.agents], **summary})


def paired_differences(results, labels, confidence=0.95):
    """Each agent's final test accuracy minus each baseline's, seed by seed.

    Every method trains each model from the same seeds, so the differences are
    paired: returns one dict per (agent, model, baseline) with the mean
    difference, the half-width of its `confidence` interval (Student's t with
    seeds - 1 degrees of freedom), the interval, and the seeds on which the
    agent is ahead.
    """
    final = {(r["model"], r["method"]): np.array(r["test_curves"])[:, -1] for r in results}
    baselines = [m for m in dict.fromkeys(r["method"] for r in results) if m not in labels]
    out = []
    for label in labels:
        for model in dict.fromkeys(r["model"] for r in results):
            for baseline in baselines:
                difference = final[(model, label)] - final[(model, baseline)]
                n = len(difference)
                mean, half = _common.interval(difference, confidence)
                out.append({"method": label, "model": model, "baseline": baseline, "seeds": n,
                            "mean_difference": round(mean, 4), "ci_half_width": round(half, 4),
                            "ci": [round(mean - half, 4), round(mean + half, 4)],
                            "ahead": int((difference > 0).sum()),
                            "within_noise": bool(mean - half <= 0.0 <= mean + half)})
    return out


def paired_table(paired):
    """The paired differences as a markdown table."""
    rows = [(p["model"], p["method"], p["baseline"], f"{p['mean_difference']:+.4f}",
             f"[{p['ci'][0]:+.4f}, {p['ci'][1]:+.4f}]", f"{p['ahead']}/{p['seeds']}",
             "within noise" if p["within_noise"] else "better" if p["mean_difference"] > 0 else "worse")
            for p in paired]
    return _common.table(rows, ("model", "agent", "minus", "mean difference (test)", "95% CI",
                                "seeds ahead", "verdict"), align="lllrlrl", markdown=True)


def markdown_table(rows):
    """Rows of mean +- std final accuracies as a markdown table, best test mean in bold per model."""
    best = {}
    for r in rows:
        best[r["model"]] = max(best.get(r["model"], -1.0), r["test_mean"])
    cells = []
    for r in rows:
        test = f"{r['test_mean']:.4f} +- {r['test_std']:.4f}"
        if r["test_mean"] == best[r["model"]]:
            test = f"**{test}**"
        cells.append((r["model"], r["method"], f"{r['train_mean']:.4f} +- {r['train_std']:.4f}", test))
    return _common.table(cells, ("model", "method", "final train accuracy", "final test accuracy"),
                         align="llll", markdown=True)


if __name__ == "__main__":
    main()
