"""Do agents generalise? Held-out workloads, 10 seeds, reviewer-grade baselines, paired.

The story: general agents (`nm_adam_general`, `nm_sgd_general`) evolved over the
task suite's training tasks. Here each trains, with plain `model.fit`, every
model of every held-out task of `keras_neuromod.tasks` (never drawn during
evolution: new data sets, and models and trainings unlike the suite's:
residual CNNs with batch normalization, a Transformer block, forecasters of
real time series, an autoencoder, a long training with dropout) from 10
seeds, next to

* Keras's optimizers with their default settings: SGD, Adam, AdamW,
  ScheduleFreeAdamW and Lamb;
* tuned baselines, searched per (task, model) on the validation split of 3
  seeds of their own (`keras_neuromod.evidence.Tuned`): Adam* over the
  learning rate, beta_1, beta_2 and epsilon, SGD* over the learning rate,
  momentum and Nesterov, with a constant learning rate; and each with cosine
  decay after a warm-up ("cosine"), its peak learning rate searched with the
  other settings of the constant search's choice; each grid is extended while
  its best point is on an edge, and its size (trainings) is recorded next to
  the agents' evolution budgets;
* `--control`: agents of the controls with the evolution's budget
  (`examples/evolve.py --suite --algorithm random` or `--algorithm static`:
  the best random genome, or the best fixed hyperparameters), so that what
  the evolved modulation adds is told from what the search budget buys;
* `--ablations [AGENT ...]`: every agent (or those named) with each tensor's
  hyperparameters frozen at their time average over its own training of the
  same seed, and with every tensor given the network's mean at each step;
* `--versus AGENT ...`: every other agent of the same base against these (among
  `--agent`), told and untold: a candidate against the zoo agent it would
  replace, in the default usage too.

An agent that reads the training's progress (the "sensing" input set) is told
each training's length, as `callbacks.TrainingHorizon` tells it in `fit` and
the docs ask users to do (`evidence.WithHorizon`; so are its ablations and
controls), and is also trained untold ("NAME / not told"), as for a user who
leaves the callback out.

Everything is computed by `keras_neuromod.evidence.compare` (the same initial
weights, batches and dropout draws for every method of a seed; a divergence
counts against the method that diverged) and the verdicts by
`evidence.aggregate`: per (task, model) pair, the paired differences of the
test metric with their 95% interval (better / within noise / worse); across
pairs, wins, ties and losses, and the mean log ratio of test errors (1 -
accuracy, or the MSE) with its interval taken over tasks.

Every finished run is recorded in OUT/records/TASK.json as it ends, so a
rerun continues without redoing one (agents, controls and ablations can be
added later; a method whose settings changed is trained again). The last line
is one JSON object of the headline figures; `--record` stores the summary in
each zoo agent's card.

    python examples/generalization.py --quick
    python examples/generalization.py \\
        --agent nm_adam_general nm_sgd_general nm_adam_digits nm_sgd_digits \\
                zoo/runs/nm_adam_sensing/best_agent.json \\
                zoo/runs/nm_adam_sensing/narrowed_agent.json \\
                zoo/runs/nm_sgd_sensing/best_agent.json \\
                zoo/runs/nm_adam_narrow/best_agent.json \\
        --control zoo/runs/random_adam/best_agent.json zoo/runs/random_sgd/best_agent.json \\
                  zoo/runs/static_adam/best_agent.json zoo/runs/static_sgd/best_agent.json \\
                  zoo/runs/static_adam_sensing/best_agent.json \\
        --ablations nm_adam_general nm_sgd_general nm_adam_sensing nm_adam_sensing_narrowed \\
                    nm_sgd_sensing nm_adam_narrow \\
        --versus nm_adam_general nm_sgd_general \\
        --out zoo/evidence/general --record
"""

import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from keras_neuromod import datasets  # noqa: E402
from keras_neuromod import evidence  # noqa: E402
from keras_neuromod import inputs as input_sets  # noqa: E402
from keras_neuromod import tasks  # noqa: E402
from keras_neuromod import zoo  # noqa: E402
from keras_neuromod.callbacks import ModulationTracer  # noqa: E402
from keras_neuromod.io import atomic_write_json  # noqa: E402
from keras_neuromod.io import read_json  # noqa: E402

DEFAULTS = ("SGD", "Adam", "AdamW", "ScheduleFreeAdamW", "Lamb")
# name -> (Keras optimizer, schedule, the search it starts from: a cosine schedule's peak
# learning rate is searched with the other settings the constant search chose)
TUNED = {
    "SGD*": ("SGD", None, None),
    "SGD* cosine": ("SGD", "cosine", "SGD*"),
    "Adam*": ("Adam", None, None),
    "Adam* cosine": ("Adam", "cosine", "Adam*"),
}
QUICK_AXES = {
    "SGD": {
        "learning_rate": evidence.Axis((1e-2, 1e-1), "log", (1e-4, 1.0)),
        "momentum": evidence.Axis((0.9,), "complement_log", (0.0, 0.99)),
    },
    "Adam": {"learning_rate": evidence.Axis((1e-3, 1e-2), "log", (1e-5, 0.1))},
}
QUICK_PAIRS = "wine,diabetes:linear"
# the base each Keras default and tuned baseline stands next to
BASE_OF = {"SGD": "sgd", "Adam": "adam"}


def _parser():
    """The command line: agents, controls and ablations; tasks and seeds; trace and record."""
    parser = _common.parser(
        __doc__,
        "runs/generalization",
        seed=None,
        quick="2 held-out pairs, 3 seeds, 2-point tuned grids on 1 seed",
    )
    parser.add_argument(
        "--agent",
        nargs="+",
        default=["nm_adam_general", "nm_sgd_general"],
        help="agent files or zoo names",
    )
    parser.add_argument(
        "--control",
        nargs="*",
        default=[],
        help="agent files of the random-search and static-search controls",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help="comma-separated task names, or task:model pairs (default: every "
        "held-out task that is available, all its models)",
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--ablations",
        nargs="*",
        default=None,
        metavar="AGENT",
        help="also train each agent (or only the agents named) frozen at its "
        "time average and at the network mean",
    )
    parser.add_argument(
        "--versus",
        nargs="*",
        default=[],
        metavar="AGENT",
        help="also compare every other agent of the same base against these agents "
        "(names among --agent), told and untold: a candidate against the zoo agent it "
        "would replace",
    )
    parser.add_argument(
        "--trace",
        default=None,
        help="task:model whose seed-0 training of each agent is traced (default: the first pair)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="store the summary in each zoo agent's card (benchmark['held_out'])",
    )
    return parser


def _load_agents(parser, args):
    """Set `args.agents` and `args.controls` (loaded) and `args.ablated` (the agents'
    names that `--ablations` selects); a parser error for any that does not load."""
    try:
        args.agents = [zoo.load(a) for a in args.agent]
        args.controls = [zoo.load(a) for a in args.control]
    except (OSError, ValueError, KeyError) as error:
        parser.error(str(error).strip("'\""))
    names = [a.name for a in args.agents]
    labels = [control_label(c) for c in args.controls]
    shared = sorted({n for n in labels + names if (labels + names).count(n) > 1})
    if shared:
        parser.error(f"two agents or controls would share the name {shared[0]!r}")
    unknown = sorted(set(args.ablations or ()) - set(names))
    if unknown:
        parser.error(f"--ablations names {unknown}, which are not among the agents {names}")
    args.ablated = (
        []
        if args.ablations is None
        else [n for n in names if not args.ablations or n in args.ablations]
    )
    unknown = sorted(set(args.versus) - set(names))
    if unknown:
        parser.error(f"--versus names {unknown}, which are not among the agents {names}")


def parse_args(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (a confidence interval needs two)")
    _load_agents(parser, args)
    if args.quick:
        args.seeds = min(args.seeds, 3)
    try:
        args.pairs = held_out_pairs(args.tasks or (QUICK_PAIRS if args.quick else None))
    except (KeyError, ValueError) as error:
        parser.error(str(error).strip("'\""))
    first = next(iter(args.pairs))
    args.trace_pair = tuple(args.trace.split(":")) if args.trace else (first, args.pairs[first][0])
    return args


def held_out_pairs(spec=None):
    """`{task: [models]}` from `spec` ("a,b:model"), else every available held-out task's."""
    names = (
        tasks.names(held_out=True)
        if spec is None
        else [s.strip() for s in spec.split(",") if s.strip()]
    )
    pairs = {}
    for name in names:
        task_name, _, model = name.partition(":")
        task = tasks.get(task_name)
        if model and model not in task.models:
            raise ValueError(
                f"Task {task_name!r} has no model {model!r} (it has {list(task.models)})."
            )
        try:
            task.splits(0)
        except datasets.DatasetUnavailableError as error:
            print(f"{task_name}: skipped ({str(error).splitlines()[0]})", flush=True)
            continue
        pairs.setdefault(task_name, [])
        pairs[task_name] += [
            m for m in ([model] if model else task.models) if m not in pairs[task_name]
        ]
    if not pairs:
        raise ValueError("No (task, model) pair to compare on.")
    return pairs


def control_label(agent):
    """A control's method name: its search and base ("static search (adam)"), and its input
    set where that is not the core paper's ("static search (adam, sensing)").

    A static search's agent reads no inputs (its file holds the paper's set): its input set
    is the one its search evolved with, from its provenance (`inputs`) or, in files written
    before the provenance held it, its recorded command (`--inputs`).
    """
    search = agent.provenance.get("algorithm", "random")
    inputs = (
        agent.settings.get("inputs")
        or agent.provenance.get("inputs")
        or _command_option(agent.provenance.get("command") or "", "--inputs")
    )
    inputs = inputs or input_sets.LEGACY
    where = agent.base if inputs == input_sets.LEGACY else f"{agent.base}, {inputs}"
    return f"{search} search ({where})"


def _command_option(command, flag):
    """The value of `flag` in a recorded command line (`--flag v` or `--flag=v`), or None."""
    tokens = shlex.split(command)
    for i, token in enumerate(tokens):
        if token == flag and i + 1 < len(tokens):
            return tokens[i + 1]
        if token.startswith(flag + "="):
            return token[len(flag) + 1 :]
    return None


def methods(args):
    """Every compared method: name -> factory, `Tuned` or `Ablated`."""
    out = {name: getattr(keras.optimizers, name) for name in DEFAULTS}
    for name, (optimizer, schedule, start) in TUNED.items():
        axes = QUICK_AXES[optimizer] if args.quick else dict(evidence.TUNED_AXES[optimizer])
        if start is not None:
            axes = {"learning_rate": axes["learning_rate"]}
        out[name] = evidence.Tuned(
            optimizer, schedule, axes=axes, seeds=1 if args.quick else 3, start_from=start
        )
    # an agent that reads the training's progress is told it, as the docs ask users to
    for agent in args.agents:
        out[agent.name] = evidence.agent_method(agent)
        if agent.reads_horizon:
            out[f"{agent.name} / not told"] = agent.optimizer
        if agent.name in args.ablated:
            for kind, ablation in (("frozen", "frozen"), ("network mean", "network_mean")):
                ablated = evidence.Ablated(agent.optimizer, ablation)
                out[f"{agent.name} / {kind}"] = evidence.agent_method(agent, ablated)
    for control in args.controls:
        out[control_label(control)] = evidence.agent_method(control)
    return out


def comparisons(args):
    """(method, baseline) pairs to summarise: each agent against every baseline of its base,
    its ablations and its controls; each control against the same baselines; an agent
    that reads the horizon also untold against them (what a `fit` without
    `TrainingHorizon` gets); and each agent, told and untold, against the `--versus`
    agents of its base."""
    baselines = list(DEFAULTS) + list(TUNED)
    pairs = []
    for agent in args.agents:
        own = [
            f"{agent.name} / {kind}"
            for kind in ("frozen", "network mean")
            if agent.name in args.ablated
        ]
        controls = [control_label(c) for c in args.controls if c.base == agent.base]
        untold = [f"{agent.name} / not told"] if agent.reads_horizon else []
        versus = [
            other.name
            for other in args.agents
            if other.name in args.versus and other.base == agent.base and other is not agent
        ]
        pairs += [(agent.name, b) for b in baselines + own + untold + controls + versus]
        pairs += [(method, b) for method in untold for b in baselines + versus]
    for control in args.controls:
        pairs += [(control_label(control), b) for b in baselines]
    return pairs


def trace(args, agent, out):
    """The tracer's figure of `agent` on the trace pair, seed 0; a rerun keeps the figure
    that the same optimizer made (its identity is stored beside it)."""
    task_name, model = args.trace_pair
    path = os.path.join(out, f"trace_{agent.name}_{task_name}_{model}.png")
    stamp, optimizer = path[:-4] + ".json", agent.optimizer()
    made_by = {"identity": evidence.identity(optimizer)}
    if agent.reads_horizon:
        made_by["told the horizon"] = True
    if os.path.exists(path) and os.path.exists(stamp) and read_json(stamp) == made_by:
        return path
    tracer = ModulationTracer(update_freq=1)
    trainer = evidence.Trainer(tasks.get(task_name), model, optimizer)
    trainer.run(0, callbacks=[tracer], horizon=agent.reads_horizon)
    figure = tracer.plot(path, title=f"{agent.name} on {task_name} ({model}), seed 0")
    atomic_write_json(stamp, made_by)
    return figure


def plot(reports, summary, baselines, path):
    """One panel per baseline: each method's mean log error ratio per pair, with its 95% CI."""
    plt = _common.pyplot()
    figure, axes = plt.subplots(
        1, len(baselines), figsize=(3.4 * len(baselines), 5.0), squeeze=False
    )
    pairs = [(r, m) for r in reports for m in r.models]
    labels = [f"{r.task.name}:{m}" for r, m in pairs]
    for axis, baseline in zip(axes[0], baselines):
        shown = [s["method"] for s in summary if s["baseline"] == baseline]
        for k, method in enumerate(shown):
            y = np.arange(len(pairs)) + (k - (len(shown) - 1) / 2) * 0.8 / max(1, len(shown))
            stats = [r.paired(method, baseline, m, what="error") for r, m in pairs]
            mean = np.array([s["mean"] for s in stats])
            low = np.array([s["ci"][0] for s in stats])
            high = np.array([s["ci"][1] for s in stats])
            axis.errorbar(
                mean,
                y,
                xerr=[np.clip(mean - low, 0, 5), np.clip(high - mean, 0, 5)],
                fmt="o",
                capsize=2,
                label=method,
                ms=4,
            )
        axis.axvline(0, color="gray", lw=1)
        axis.set_yticks(range(len(pairs)))
        axis.set_yticklabels(labels if axis is axes[0][0] else [""] * len(pairs), fontsize=7)
        axis.set_title(f"minus {baseline}", fontsize=9)
        axis.set_xlabel(
            "log(baseline's test error / method's)\n(+: the method is better)", fontsize=8
        )
        axis.grid(alpha=0.3)
        axis.invert_yaxis()  # the first pair on top
    handles, names = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=max(1, len(names)), fontsize=8)
    figure.tight_layout(rect=(0, 0.05, 1, 1))  # the legend below the panels, off the data
    return _common.save_figure(figure, path)


def budgets(reports, args):
    """Trainings per (task, model) of each tuned baseline's search, and each agent's evolution."""
    tuned = {
        name: {
            f"{r.task.name}:{m}": r.searches[(m, name)]["trainings"]
            for r in reports
            for m in r.models
        }
        for name in TUNED
    }
    agents = {
        a.name: {
            k: a.provenance.get(k) for k in ("evaluations", "trainings", "cpu_hours", "algorithm")
        }
        for a in args.agents + args.controls
    }
    return {"tuned_search_trainings": tuned, "agents": agents}


def _compare_on_every_task(args, compared, records):
    """Train every method on every (task, model) pair from every seed, each task's finished
    runs recorded in `records`; one `evidence` report per task."""
    reports = []
    for task_name, models in args.pairs.items():
        print(f"{task_name} ({', '.join(models)}) ...", flush=True)
        reports.append(
            evidence.compare(
                task_name,
                compared,
                models=models,
                seeds=args.seeds,
                record=os.path.join(records, f"{task_name}.json"),
                verbose=True,
            )
        )
    return reports


def _print_results_table(rows, seeds):
    """Each method's test metric and loss per (task, model) pair."""
    _common.print_table(
        [(r["task"], r["model"], r["method"], *evidence.result_cells(r)) for r in rows],
        headers=(
            "task",
            "model",
            "method",
            f"test metric (mean +- std, {seeds} seeds)",
            "median test loss",
            "diverged",
        ),
        align="lllrrr",
        title="Test results per method (accuracy, or MSE for regression and forecasting)",
    )


def _print_paired_table(paired):
    """The paired differences against Adam, SGD, Adam* and SGD*, per pair, with verdicts."""
    _common.print_table(
        [
            (p["task"], p["model"], p["method"], p["baseline"], *evidence.paired_cells(p))
            for p in paired
            if p["baseline"] in ("Adam", "SGD", "Adam*", "SGD*")
        ],
        headers=(
            "task",
            "model",
            "method",
            "minus",
            "mean difference",
            "95% CI",
            "seeds ahead",
            "verdict",
        ),
        align="llllrlrl",
        title="Paired differences of the test metric (+: the method is better; "
        "MSE with the sign turned)",
    )


def _print_summary_table(summary):
    """Across pairs, per comparison: wins, ties and losses, and the mean log error ratio."""
    _common.print_table(
        [
            (
                s["method"],
                s["baseline"],
                f"{s['better']}/{s['within_noise']}/{s['worse']}",
                f"{s['log_error_ratio']['mean']:+.3f} [{s['log_error_ratio']['ci'][0]:+.3f}, "
                f"{s['log_error_ratio']['ci'][1]:+.3f}]",
                s["log_error_ratio"]["verdict"],
                f"{s['diverged'][0]}/{s['diverged'][1]}",
            )
            for s in summary
        ],
        headers=(
            "method",
            "minus",
            "pairs better/within noise/worse",
            "log error ratio [95% CI over tasks]",
            "verdict",
            "diverged runs (method/baseline)",
        ),
        align="llrrlr",
        title="Across pairs: verdicts on the test metric per pair; "
        "mean over tasks of log(baseline's "
        "test error / the method's)",
    )


def _save_figures(args, reports, summary):
    """The agents' log error ratios against Adam, Adam*, SGD and SGD*, and each agent's
    modulation trace; their paths."""
    figure = plot(
        reports,
        [s for s in summary if s["method"] in [a.name for a in args.agents]],
        ["Adam", "Adam*", "SGD", "SGD*"],
        os.path.join(args.out, "generalization.png"),
    )
    traces = [trace(args, a, args.out) for a in args.agents]
    return figure, traces


def _record_in_cards(args, result, summary):
    """Store the held-out summary of each agent in its zoo card (`--record`)."""
    for name, agent in zip(args.agent, args.agents):
        zoo.record_benchmark(
            name,
            "held_out",
            {
                **{k: result[k] for k in ("pairs", "tasks", "seeds", "command", "figure")},
                "summary": [s for s in summary if s["method"] == agent.name],
            },
        )
        print(f"Recorded in the card of {name}")


def _headline(summary):
    """The JSON line's verdicts: each comparison against Adam, SGD, Adam* or SGD*."""
    return {
        f"{s['method']} vs {s['baseline']}": {
            "better": s["better"],
            "within_noise": s["within_noise"],
            "worse": s["worse"],
            "log_error_ratio": round(s["log_error_ratio"]["mean"], 4),
            "ci": [round(v, 4) for v in s["log_error_ratio"]["ci"]],
            "diverged": s["diverged"][0],
        }
        for s in summary
        if s["baseline"] in ("Adam", "SGD", "Adam*", "SGD*")
    }


def main(argv=None):
    args = parse_args(argv)
    records = os.path.join(args.out, "records")
    os.makedirs(records, exist_ok=True)
    compared = methods(args)
    print(
        f"Held-out evidence for {', '.join(a.name for a in args.agents)}: "
        f"{sum(len(m) for m in args.pairs.values())} (task, model) pairs of "
        f"{len(args.pairs)} tasks, "
        f"{args.seeds} seeds, {len(compared)} methods",
        flush=True,
    )
    start = time.perf_counter()
    reports = _compare_on_every_task(args, compared, records)
    rows = [row for r in reports for row in r.rows()]
    _print_results_table(rows, args.seeds)
    summary = [evidence.aggregate(reports, a, b) for a, b in comparisons(args)]
    paired = [r.paired(a, b, m) for a, b in comparisons(args) for r in reports for m in r.models]
    _print_paired_table(paired)
    _print_summary_table(summary)

    figure, traces = _save_figures(args, reports, summary)
    command = "python examples/generalization.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    result = {
        "pairs": [f"{r.task.name}:{m}" for r in reports for m in r.models],
        "tasks": len(reports),
        "seeds": args.seeds,
        "budgets": budgets(reports, args),
        "rows": rows,
        "paired": paired,
        "summary": summary,
        "figure": figure,
        "traces": traces,
        "command": command,
    }
    atomic_write_json(os.path.join(args.out, "generalization.json"), result)
    if args.record:
        _record_in_cards(args, result, summary)
    print(f"\nFigure: {figure}; {time.perf_counter() - start:.0f} s")
    _common.print_json_line(
        {
            "pairs": len(result["pairs"]),
            "tasks": len(reports),
            "seeds": args.seeds,
            **_headline(summary),
        }
    )


if __name__ == "__main__":
    main()
