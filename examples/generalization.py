"""Do agents generalise? Tasks no agent evolved on, 10 seeds, every baseline, paired.

The story: general agents (`nm_adam_general`, `nm_sgd_general`) evolved over the
task suite's training tasks. Here each trains, with plain `model.fit`, every
model of every held-out task of `keras_neuromod.tasks` (never drawn during
evolution: images, tabular, signals, sequences with recurrent models, a
regression) from 10 seeds, next to

* Keras's optimizers with their default settings: SGD, Adam, AdamW,
  ScheduleFreeAdamW and Lamb (evaluated as `model.evaluate` sees the weights);
* SGD* and Adam*: Keras's SGD and Adam tuned per (task, model) by a grid
  (`GRIDS`), each point trained once on a seed of its own and chosen on its
  validation loss; the grid's size is its budget, printed next to the
  evolution's;
* `--control`: agents of the random-search control (`examples/evolve.py --suite
  --algorithm random`, the best of as many random genomes as the evolution
  evaluated), so that what evolution adds is told from what the search budget
  buys;
* `--ablations [AGENT ...]`: every agent (or the agents named) with each
  tensor's hyperparameters frozen at their time average over its own training
  (same seed), and with every tensor given the network's mean at each step
  (`keras_neuromod.optimizers.ablation`).

Every method trains a seed's model from the same initial weights on the same
batches (the seed sets both: a permutation of the training split per epoch),
for the task's epochs and batch size, on its training split (one compiled model
per method, reset for every seed, as a fresh one would start); the figures are the test split's metric (accuracy, or MSE for
the regression) and loss. A training whose loss turns NaN or Inf has diverged:
its metric is then the worst of the row (0 accuracy, or the test MSE of
predicting 0) and it is counted. For each agent and baseline, the paired
differences over seeds (agent minus baseline, in the direction where positive is
better) give a mean and a 95% confidence interval (Student's t); an interval
that contains 0 is a difference within noise. Across (task, model) pairs: the
share of pairs where the agent's mean metric is better, and the mean over
pairs of the log ratio of test losses (baseline over agent; positive: the
agent's loss is lower) with its 95% interval over pairs.

Every finished (task, model, method) is recorded in OUT as it ends, so
`--resume` continues without redoing one; agents, controls and ablations can be
added to a record later (an agent's runs are redone only if its genome or
settings changed), while the seeds and grids must stay the same. Figures: the paired differences per
pair against each Keras default (PNG), and the tracer's figure of each agent on
the first pair of `--trace` (seed 0). The last line is one JSON object of the
headline figures. `--record` stores the summary in each zoo agent's card.

    python examples/generalization.py --quick
    python examples/generalization.py \\
        --agent nm_adam_general nm_sgd_general nm_adam_digits nm_sgd_digits \\
        --control zoo/runs/random_adam/best_agent.json zoo/runs/random_sgd/best_agent.json \\
        --ablations nm_adam_general nm_sgd_general --out zoo/evidence/general --resume --record
"""

import hashlib
import itertools
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_neuromod import bases  # noqa: E402
from keras_neuromod import datasets  # noqa: E402
from keras_neuromod import tasks  # noqa: E402
from keras_neuromod import zoo  # noqa: E402
from keras_neuromod.callbacks import ModulationTracer  # noqa: E402
from keras_neuromod.io import atomic_write_json  # noqa: E402
from keras_neuromod.io import read_json  # noqa: E402
from keras_neuromod.optimizers.ablation import ablate  # noqa: E402
from keras_neuromod.optimizers.ablation import time_average  # noqa: E402

DEFAULTS = ("SGD", "Adam", "AdamW", "ScheduleFreeAdamW", "Lamb")
GRIDS = {
    "SGD*": ("SGD", {"learning_rate": [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3], "momentum": [0.0, 0.9]}),
    "Adam*": ("Adam", {"learning_rate": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2], "beta_1": [0.9, 0.5]}),
}
QUICK_GRIDS = {
    "SGD*": ("SGD", {"learning_rate": [1e-2, 0.1], "momentum": [0.9]}),
    "Adam*": ("Adam", {"learning_rate": [1e-3, 1e-2], "beta_1": [0.9]}),
}
GRID_SEED = 10_000  # the grid's own seed, none of the compared seeds
QUICK_PAIRS = (("wine", "mlp"), ("diabetes", "linear"))
PROTOCOL = 2  # bump when a change makes recorded runs incomparable


def parse_args(argv=None):
    parser = _common.parser(__doc__, "runs/generalization", seed=None,
                            quick="2 held-out pairs, 3 seeds, a 2-point grid",
                            resume="reuse the finished runs recorded in OUT (same protocol only)")
    parser.add_argument("--agent", nargs="+", default=["nm_adam_general", "nm_sgd_general"],
                        help="agent files or zoo names")
    parser.add_argument("--control", nargs="*", default=[],
                        help="agent files of the random-search control (one per base)")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated task names, or task:model pairs (default: every "
                             "held-out task that is available, all its models)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--ablations", nargs="*", default=None, metavar="AGENT",
                        help="also train each agent (or only the agents named) frozen at its "
                             "time average and at the network mean")
    parser.add_argument("--trace", default=None,
                        help="task:model whose seed-0 training of each agent is traced "
                             "(default: the first pair)")
    parser.add_argument("--record", action="store_true",
                        help="store the summary in each zoo agent's card (benchmark['held_out'])")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (a confidence interval needs two)")
    try:
        args.agents = [zoo.load(a) for a in args.agent]
        args.controls = [zoo.load(a) for a in args.control]
    except (OSError, ValueError, KeyError) as error:
        parser.error(str(error).strip("'\""))
    names = [a.name for a in args.agents]
    unknown = sorted(set(args.ablations or ()) - set(names))
    if unknown:
        parser.error(f"--ablations names {unknown}, which are not among the agents {names}")
    args.ablated = ([] if args.ablations is None
                    else [n for n in names if not args.ablations or n in args.ablations])
    if args.quick:
        args.seeds = min(args.seeds, 3)
    args.grids = QUICK_GRIDS if args.quick else GRIDS
    try:
        args.pairs = held_out_pairs(args.tasks, QUICK_PAIRS if args.quick else None)
    except (KeyError, ValueError) as error:
        parser.error(str(error).strip("'\""))
    args.trace_pair = tuple(args.trace.split(":")) if args.trace else args.pairs[0]
    return args


def held_out_pairs(spec, default=None):
    """The (task, model) pairs: from `spec` ("a,b:model"), else `default`, else every held-out one."""
    if spec is None and default is not None:
        return list(default)
    names = tasks.names(held_out=True) if spec is None else [s.strip() for s in spec.split(",") if s.strip()]
    pairs = []
    for name in names:
        task_name, _, model = name.partition(":")
        task = tasks.get(task_name)
        if spec is None:
            try:
                task.splits(0)
            except datasets.DatasetUnavailableError as error:
                print(f"{task_name}: skipped ({str(error).splitlines()[0]})")
                continue
        if model and model not in task.models:
            raise ValueError(f"Task {task_name!r} has no model {model!r} (it has {list(task.models)}).")
        pairs += [(task_name, m) for m in ([model] if model else task.models)]
    if not pairs:
        raise ValueError("No (task, model) pair to compare on.")
    return pairs


# -- the methods ---------------------------------------------------------------


def label(agent, control=False):
    return f"random search ({agent.base})" if control else agent.name


def agent_key(agent):
    """What identifies an agent's runs in the record: its genome and settings, hashed."""
    text = json.dumps({"base": agent.base, "genome": agent.genome.to_dict(), "ranges": agent.ranges,
                       "settings": agent.settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def keras_optimizer(name, settings=None):
    return getattr(keras.optimizers, name)(**(settings or {}))


def agent_optimizer(agent):
    return bases.get(agent.base).optimizer(agent=agent)


# -- one training ----------------------------------------------------------------


class Trainer:
    """One model compiled with one optimizer, trained from every seed in turn.

    A seed's training starts from the seed's initial weights and the
    optimizer's state as it was when built (step counters, moments and AGRN
    state at zero), and visits the training split in the seed's permutation
    of each epoch, so it is the training a fresh model would have; compiling
    once spares a trace per seed.
    """

    def __init__(self, task, model_name, optimizer):
        self.task, self.model_name, self.optimizer = task, model_name, optimizer
        self.model = task.build_model(model_name, seed=0)
        task.compile(self.model, optimizer)
        optimizer.build(self.model.trainable_variables)
        self.initial_state = [np.array(keras.ops.convert_to_numpy(v)) for v in optimizer.variables]

    def run(self, seed, split="test", tracer=None):
        """The split's loss and metric after training from `seed`, and whether it diverged."""
        task = self.task
        splits = task.splits(seed)
        self.model.set_weights(task.build_model(self.model_name, seed=seed).get_weights())
        for variable, value in zip(self.optimizer.variables, self.initial_state):
            variable.assign(value)
        if hasattr(self.optimizer, "set_hyperparameters"):  # a frozen ablation's own values
            self.optimizer.set_hyperparameters(self.optimizer.frozen_hyperparameters)
        x, y = splits.train
        losses = []
        for batch in task.data_order(seed):
            history = self.model.fit(x[batch], y[batch], epochs=1, batch_size=task.batch_size,
                                     shuffle=False, verbose=0,
                                     callbacks=[tracer] if tracer is not None else None)
            losses += history.history["loss"]
            if not math.isfinite(losses[-1]):
                break
        x, y = splits.test if split == "test" else splits.val
        result = self.model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
        loss, metric = float(result["loss"]), float(result[task.metric])
        diverged = not (math.isfinite(loss) and all(math.isfinite(v) for v in losses))
        return {"loss": loss, "metric": metric, "diverged": diverged}


def worst_metric(task, model_name, seed):
    """A diverged run's metric: 0 accuracy, or the test MSE of predicting 0."""
    if task.higher_is_better:
        return 0.0
    y = task.splits(seed).test[1]
    return float(np.mean(np.asarray(y, np.float64) ** 2))


def tune(task, model_name, grid, log):
    """The grid point with the lowest validation loss on the grid's own seed."""
    keras_name, axes = grid
    points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    losses = []
    for point in points:
        result = Trainer(task, model_name, keras_optimizer(keras_name, point)).run(GRID_SEED, "val")
        losses.append(result["loss"] if math.isfinite(result["loss"]) else math.inf)
    best = points[int(np.argmin(losses))]
    log(f"  {keras_name} tuned on {len(points)} points: {best}")
    return best, len(points)


# -- the comparison ------------------------------------------------------------


def run_pair(task_name, model_name, args, record, save, out):
    """Train every method on one (task, model) from every seed; record each method as it ends."""
    task = tasks.get(task_name)
    seeds = list(range(args.seeds))
    key = f"{task_name}:{model_name}"
    done = record.setdefault(key, {"methods": {}, "grid": {}})

    def finish(method, runs, settings=None, agent=None):
        done["methods"][method] = {"runs": runs, "settings": settings, "agent": agent}
        save()

    def log(text):
        print(text, flush=True)

    for name in DEFAULTS:
        if name not in done["methods"]:
            trainer = Trainer(task, model_name, keras_optimizer(name))
            finish(name, [trainer.run(s) for s in seeds])
    for method, grid in args.grids.items():
        if method not in done["methods"]:
            settings, points = tune(task, model_name, grid, log)
            done["grid"][method] = points
            trainer = Trainer(task, model_name, keras_optimizer(grid[0], settings))
            finish(method, [trainer.run(s) for s in seeds], settings)
    for agent, control in [(a, False) for a in args.agents] + [(a, True) for a in args.controls]:
        name = label(agent, control)
        ablations = [f"{name} / {kind}" for kind in ("frozen", "network mean")]
        ablated = agent.name in args.ablated and not control
        wanted = [name] + (ablations if ablated else [])
        genome = agent_key(agent)
        if all(done["methods"].get(m, {}).get("agent") == genome for m in wanted):
            continue
        own = Trainer(task, model_name, agent_optimizer(agent))
        if ablated:
            count = len(own.model.trainable_variables)
            placeholder = np.tile([[own.optimizer.ranges[n][0] for n in own.optimizer.HYPERPARAMETERS]],
                                  (count, 1))
            frozen = Trainer(task, model_name, ablate(own.optimizer, "frozen", placeholder))
            pooled = Trainer(task, model_name, ablate(own.optimizer, "network_mean"))
        runs, frozen_runs, pooled_runs = [], [], []
        for seed in seeds:
            figure = seed == 0 and (task_name, model_name) == args.trace_pair and not control
            tracer = ModulationTracer(update_freq=1) if ablated or figure else None
            runs.append(own.run(seed, tracer=tracer))
            if figure:
                tracer.plot(os.path.join(out, f"trace_{name}_{task_name}_{model_name}.png"),
                            title=f"{name} on {task_name} ({model_name}), seed 0")
            if ablated:
                frozen.optimizer.set_hyperparameters(time_average(tracer, own.optimizer))
                frozen_runs.append(frozen.run(seed))
                pooled_runs.append(pooled.run(seed))
        finish(name, runs, agent=genome)
        if ablated:
            finish(ablations[0], frozen_runs, agent=genome)
            finish(ablations[1], pooled_runs, agent=genome)
    # a diverged run counts as the worst outcome; the record holds NaN and Inf as text
    for method in done["methods"].values():
        for seed, r in zip(seeds, method["runs"]):
            r["loss"], r["metric"] = float(r["loss"]), float(r["metric"])
            r["score"] = worst_metric(task, model_name, seed) if r["diverged"] else r["metric"]
    return done


def compare(record, pairs, agents, baselines):
    """Paired differences per pair, and each agent's summary across pairs, per baseline."""
    paired, summary = [], []
    for agent in agents:
        for baseline in baselines:
            wins, ratios, diverged = 0, [], 0
            for task_name, model_name in pairs:
                task = tasks.get(task_name)
                methods = record[f"{task_name}:{model_name}"]["methods"]
                mine, theirs = methods[agent]["runs"], methods[baseline]["runs"]
                sign = 1.0 if task.higher_is_better else -1.0
                difference = sign * (np.array([r["score"] for r in mine])
                                     - np.array([r["score"] for r in theirs]))
                mean, half = _common.interval(difference)
                wins += mean > 0
                diverged += sum(r["diverged"] for r in mine)
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = np.log(np.array([r["loss"] for r in theirs]) / np.array([r["loss"] for r in mine]))
                ratio = np.where(np.isfinite(ratio), ratio, -3.0)
                ratios.append(float(np.clip(ratio, -3.0, 3.0).mean()))
                paired.append({"agent": agent, "baseline": baseline, "task": task_name,
                               "model": model_name, "metric": task.metric,
                               "mean_difference": round(mean, 4), "ci_half_width": round(half, 4),
                               "ci": [round(mean - half, 4), round(mean + half, 4)],
                               "seeds_ahead": int((difference > 0).sum()), "seeds": len(difference),
                               "within_noise": bool(mean - half <= 0 <= mean + half)})
            mean, half = _common.interval(ratios)
            summary.append({"agent": agent, "baseline": baseline, "pairs": len(pairs),
                            "better_pairs": int(wins), "share_better": round(wins / len(pairs), 3),
                            "log_loss_ratio": round(mean, 4), "ci_half_width": round(half, 4),
                            "within_noise": bool(mean - half <= 0 <= mean + half),
                            "diverged_runs": int(diverged)})
    return paired, summary


def method_rows(record, pairs):
    rows = []
    for task_name, model_name in pairs:
        task = tasks.get(task_name)
        entry = record[f"{task_name}:{model_name}"]
        for method, data in entry["methods"].items():
            scores = np.array([r["score"] for r in data["runs"]])
            rows.append({"task": task_name, "model": model_name, "method": method,
                         "metric": task.metric, "mean": round(float(scores.mean()), 4),
                         "std": round(float(scores.std()), 4),
                         "test_loss": round(float(np.median([r["loss"] for r in data["runs"]])), 4),
                         "diverged": int(sum(r["diverged"] for r in data["runs"])),
                         "settings": data["settings"]})
    return rows


def plot_differences(paired, baselines, path):
    """One panel per baseline: each agent's mean paired difference per pair, with its 95% CI."""
    plt = _common.pyplot()
    figure, axes = plt.subplots(1, len(baselines), figsize=(3.2 * len(baselines), 4.2), sharey=False,
                                squeeze=False)
    agents = list(dict.fromkeys(p["agent"] for p in paired))
    for axis, baseline in zip(axes[0], baselines):
        rows = [p for p in paired if p["baseline"] == baseline]
        pairs = list(dict.fromkeys(f"{p['task']}:{p['model']}" for p in rows))
        for a, agent in enumerate(agents):
            own = [p for p in rows if p["agent"] == agent]
            y = np.arange(len(pairs)) + (a - (len(agents) - 1) / 2) * 0.8 / max(1, len(agents))
            axis.errorbar([p["mean_difference"] for p in own], y,
                          xerr=[p["ci_half_width"] for p in own], fmt="o", capsize=3, label=agent)
        axis.axvline(0, color="gray", lw=1)
        axis.set_yticks(range(len(pairs)))
        axis.set_yticklabels(pairs if axis is axes[0][0] else [""] * len(pairs), fontsize=8)
        axis.set_title(f"minus {baseline}", fontsize=9)
        axis.set_xlabel("paired difference (+: agent better)", fontsize=8)
        axis.set_xscale("symlog", linthresh=0.01)
    axes[0][0].legend(fontsize=7, loc="best")
    figure.tight_layout()
    return _common.save_figure(figure, path)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "generalization.runs.json")
    protocol = {"protocol": PROTOCOL, "seeds": args.seeds,
                "grids": {k: [v[0], v[1]] for k, v in args.grids.items()}}
    record = {}
    if args.resume and os.path.exists(path):
        saved = read_json(path, "generalization record")
        if saved.get("protocol") == protocol:
            record = saved["pairs"]
        else:
            sys.exit(f"{path} was made with another protocol (seeds or grids): "
                     "use another --out, or drop --resume.")

    def save():
        atomic_write_json(path, {"protocol": protocol, "pairs": record})

    names = ", ".join(a.name for a in args.agents)
    print(f"Held-out evidence for {names}: {len(args.pairs)} (task, model) pairs, {args.seeds} seeds, "
          f"baselines {', '.join(DEFAULTS)}, {', '.join(args.grids)}"
          + (f", {len(args.controls)} random-search control(s)" if args.controls else "")
          + (f", ablations of {', '.join(args.ablated)}" if args.ablated else ""), flush=True)
    start = time.perf_counter()
    for task_name, model_name in args.pairs:
        print(f"{task_name} / {model_name} ...", flush=True)
        run_pair(task_name, model_name, args, record, save, args.out)
    rows = method_rows(record, args.pairs)
    _common.print_table(
        [(r["task"], r["model"], r["method"], r["metric"], f"{r['mean']:.4f} +- {r['std']:.4f}",
          f"{r['test_loss']:.4f}", r["diverged"]) for r in rows],
        headers=("task", "model", "method", "metric", f"test metric (mean +- std, {args.seeds} seeds)",
                 "median test loss", "diverged"), align="llllrrr", title="Test results per method")

    labels = [a.name for a in args.agents] + [label(a, True) for a in args.controls]
    ablated = [f"{name} / {kind}" for name in args.ablated for kind in ("frozen", "network mean")]
    baselines = list(DEFAULTS) + list(args.grids)
    paired, summary = compare(record, args.pairs, labels + ablated, baselines)
    # the agents against their own ablations and the random-search control
    for agent in args.agents:
        others = [m for m in ablated if m.startswith(agent.name + " / ")]
        others += [label(c, True) for c in args.controls if c.base == agent.base]
        extra_paired, extra_summary = compare(record, args.pairs, [agent.name], others)
        paired += extra_paired
        summary += extra_summary
    _common.print_table(
        [(p["task"], p["model"], p["agent"], p["baseline"], f"{p['mean_difference']:+.4f}",
          f"[{p['ci'][0]:+.4f}, {p['ci'][1]:+.4f}]", f"{p['seeds_ahead']}/{p['seeds']}",
          "within noise" if p["within_noise"] else "better" if p["mean_difference"] > 0 else "worse")
         for p in paired if p["agent"] in labels],
        headers=("task", "model", "agent", "minus", "mean difference", "95% CI", "seeds ahead",
                 "verdict"), align="llllrlrl",
        title="Paired differences of the test metric (+: the agent is better; accuracy, or MSE "
              "with the sign turned)")
    _common.print_table(
        [(s["agent"], s["baseline"], f"{s['better_pairs']}/{s['pairs']}",
          f"{s['log_loss_ratio']:+.4f}", f"+-{s['ci_half_width']:.4f}",
          "within noise" if s["within_noise"] else "better" if s["log_loss_ratio"] > 0 else "worse",
          s["diverged_runs"]) for s in summary],
        headers=("method", "minus", "pairs better", "mean log loss ratio", "95% CI", "verdict",
                 "diverged runs"), align="llrrrlr",
        title="Across pairs: share of pairs with a better mean metric; mean over pairs of "
              "log(baseline's test loss / the method's), clipped to [-3, 3]")
    figure = plot_differences([p for p in paired if p["agent"] in labels and p["baseline"] in DEFAULTS],
                              list(DEFAULTS), os.path.join(args.out, "generalization.png"))
    result = {"pairs": [f"{t}:{m}" for t, m in args.pairs], "seeds": args.seeds,
              "grid_trainings_per_pair": {k: int(np.prod([len(v) for v in g[1].values()]))
                                          for k, g in args.grids.items()},
              "rows": rows, "paired": paired, "summary": summary, "figure": figure,
              "command": "python examples/generalization.py " + " ".join(sys.argv[1:] if argv is None
                                                                         else argv)}
    atomic_write_json(os.path.join(args.out, "generalization.json"), result)
    if args.record:
        for name, agent in zip(args.agent, args.agents):
            zoo.record_benchmark(name, "held_out", {
                **{k: result[k] for k in ("pairs", "seeds", "grid_trainings_per_pair", "command",
                                          "figure")},
                "summary": [s for s in summary if s["agent"] == agent.name
                            or s["agent"].startswith(agent.name + " / ")]})
            print(f"Recorded in the card of {name}")
    print(f"\nFigure: {figure}; {time.perf_counter() - start:.0f} s")
    headline = {}
    for s in summary:
        if s["agent"] in labels and s["baseline"] in ("Adam", "SGD", "Adam*", "SGD*"):
            headline[f"{s['agent']} vs {s['baseline']}"] = {
                "share_better": s["share_better"], "log_loss_ratio": s["log_loss_ratio"],
                "ci_half_width": s["ci_half_width"], "diverged_runs": s["diverged_runs"]}
    _common.print_json_line({"pairs": len(args.pairs), "seeds": args.seeds, **headline})


if __name__ == "__main__":
    main()
