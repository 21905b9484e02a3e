"""`keras-neuromod compare`: an agent on the paper's models against SGD, Adam and tuned SGD*, Adam*.

`examples/compare.py` is this command, flag for flag (it passes its own name,
which the summary's reproducing command records).

The paper's comparison at reduced scale: on each of its architectures (A, B, C,
and an MLP), the agent trains the model from 10 seeds, 2.5 times longer than
during evolution, next to Keras's default SGD (lr 0.01) and Adam (lr 0.001,
0.9, 0.999), and next to SGD* and Adam*, tuned per model on the validation
split of seeds of their own (`keras_neuromod.evidence.Tuned`: the learning
rate, then momentum and Nesterov, or beta_1, beta_2 and epsilon, on grids
extended while their best point is on an edge). The paper (its Table 3) lists
only the settings its own search chose; this search spans them.

Everything is computed by `keras_neuromod.evidence.compare`: every method of
a seed starts from the same weights and sees the same batches, a diverged run
counts against the method that diverged, and each agent's paired differences
of final test accuracy against every baseline come with their 95% confidence
interval and a verdict (better / within noise / worse). It prints the table,
saves the training curves (the paper's figures 2 and 3, training accuracy per
epoch, mean +- std over the seeds) as PNG and the numbers as JSON, and ends
with one JSON line of the rows, whatever they show.

Several agents share one set of baselines. Every finished run is recorded in
OUT as it ends, so a rerun continues an interrupted comparison without redoing
any run; `--record` stores the results in each agent's card (and refreshes the
zoo index for zoo agents).

    keras-neuromod compare --agent runs/evolve/best_agent.json --quick
    keras-neuromod compare --agent nm_adam_digits nm_sgd_digits    # zoo agents
    keras-neuromod compare --agent nm_adam_digits --dataset wine   # a task never evolved on
    keras-neuromod compare --agent my_agent.json --dataset cifar10 --models A,B,C --epochs 50
"""

import os
import sys
import time

import keras
import numpy as np

from keras_neuromod import datasets
from keras_neuromod import evidence
from keras_neuromod import models
from keras_neuromod import tasks
from keras_neuromod import zoo
from keras_neuromod.cli import _output
from keras_neuromod.io import atomic_write_json

PROG = "keras-neuromod compare"

BASELINES = ("SGD", "Adam", "SGD*", "Adam*")
QUICK_AXES = {
    "SGD": {
        "learning_rate": evidence.Axis((1e-2, 1e-1), "log", (1e-4, 1.0)),
        "momentum": evidence.Axis((0.0, 0.9), "complement_log", (0.0, 0.99)),
    },
    "Adam": {
        "learning_rate": evidence.Axis((1e-3, 1e-2), "log", (1e-5, 0.1)),
        "epsilon": evidence.Axis((1e-7, 1.0), "log", (1e-9, 1.0)),
    },
}


def parse_args(argv=None, prog=PROG):
    """The comparison's settings from the command line.

    Args:
        argv: the arguments (`sys.argv[1:]` when None).
        prog: how the command is spelled (`keras-neuromod compare`, or
            `python examples/compare.py`): the name in `--help` and the start of
            the command the summary records.

    Returns:
        An `argparse.Namespace`, with the agents loaded (`args.agents`) and the
        epochs, width and models filled in from the first agent's provenance.
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    _load_agents(parser, args)
    _fill_defaults(args)
    return args


def _parser(prog):
    """The command's argument parser."""
    parser = _output.parser(
        __doc__,
        "runs/compare",
        quick="3 seeds, small grids, mlp and A",
        seed=None,
        prog=None if prog.startswith("python ") else prog,
    )
    parser.add_argument(
        "--agent",
        nargs="*",
        default=[],
        help="agent files or zoo names (several share one set of baselines; "
        "none: the baselines alone, with --epochs and --width given)",
    )
    parser.add_argument("--dataset", default="digits", choices=datasets.NAMES)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--models",
        default=None,
        help="architectures (default: those the agent evolved on; mlp on tabular data)",
    )
    parser.add_argument("--width", type=float, default=None)
    parser.add_argument(
        "--epochs", type=int, default=None, help="default: 2.5 x the agent's evolution epochs"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--record",
        action="store_true",
        help="store the results in each agent's card (benchmark[DATASET])",
    )
    return parser


def _load_agents(parser, args):
    """Load the agents into `args.agents` and check the settings, exiting on an error."""
    try:
        args.agents = [zoo.load(a) for a in args.agent]
    except (OSError, ValueError, KeyError) as error:
        parser.error(str(error).strip("'\""))
    if not args.agents and (args.epochs is None or args.width is None):
        parser.error("without --agent, give --epochs and --width (the baselines' protocol)")
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (a confidence interval needs two)")


def _fill_defaults(args):
    """Fill in the epochs, width and models from the first agent's provenance."""
    provenance = args.agents[0].provenance if args.agents else {}
    if args.epochs is None:
        args.epochs = max(1, int(round(2.5 * provenance.get("epochs", 4))))
    if args.width is None:
        args.width = provenance.get("width", 1.0 if args.dataset.startswith("cifar") else 0.5)
    if args.models is None:
        args.models = (
            "mlp,A" if args.quick else ",".join(provenance.get("architectures", ["A", "B", "C"]))
        )
    args.models = [m for m in args.models.split(",") if m]
    if args.quick:
        args.seeds = min(args.seeds, 3)


def paper_task(data, dataset, architectures, width, epochs, batch_size):
    """The data set as a `tasks.Task` whose models are the paper's architectures (logits out)."""
    names = []
    for architecture in architectures:
        name = f"paper_{architecture}_w{width:g}"

        def builder(input_shape, output_dim, seed=None, architecture=architecture):
            return models.build(
                architecture,
                input_shape,
                output_dim,
                width=width,
                seed=seed,
                output_activation=None,
            )

        tasks.register_model(name, builder, overwrite=True)
        names.append(name)
    family = "images" if len(data.input_shape) == 3 else "tabular"
    return tasks.Task(
        f"paper_{dataset}",
        family,
        lambda seed: data,
        tuple(names),
        "sparse_categorical_crossentropy",
        epochs=epochs,
        batch_size=batch_size,
        description=f"{dataset} with the paper's architectures.",
    )


def labels_of(agents):
    """Method names of the agents: Nm-SGD / Nm-Adam, with the agent's name where two share one."""
    labels = [("Nm-SGD" if a.base == "sgd" else "Nm-Adam") for a in agents]
    return [
        f"{label} {a.name}" if labels.count(label) > 1 else label
        for label, a in zip(labels, agents)
    ]


def methods(args, labels):
    """The compared methods: each agent, Keras's SGD and Adam, and the tuned SGD* and Adam*."""
    # an agent that reads the training's progress is told it, as the docs ask users to
    out = {label: evidence.agent_method(agent) for label, agent in zip(labels, args.agents)}
    out["SGD"], out["Adam"] = keras.optimizers.SGD, keras.optimizers.Adam
    for name in ("SGD", "Adam"):
        out[f"{name}*"] = evidence.Tuned(
            name, axes=QUICK_AXES[name] if args.quick else None, seeds=1 if args.quick else 3
        )
    return out


def plot(report, architectures, path, title):
    """Training accuracy per epoch, mean +- std over the seeds, one panel per model.

    Returns:
        `path`, or None without matplotlib (`pip install "keras_neuromod[examples]"`).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    figure = _output.figure(figsize=(5 * len(report.models), 4))
    axes = figure.subplots(1, len(report.models), squeeze=False)
    for axis, model, architecture in zip(axes[0], report.models, architectures):
        for method in report.methods:
            curves = [r.curve["metric"] for r in report.runs(model, method) if not r.diverged]
            if not curves:
                continue
            curves = np.array(curves)
            epochs = np.arange(1, curves.shape[1] + 1)
            mean, std = curves.mean(0), curves.std(0)
            axis.plot(epochs, mean, label=method, lw=2 if method.startswith("Nm") else 1.2)
            axis.fill_between(epochs, mean - std, mean + std, alpha=0.15)
        axis.set(
            title=f"model {architecture}: training accuracy", xlabel="epoch", ylabel="accuracy"
        )
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return _output.save_figure(figure, path)


def main(argv=None, prog=PROG):
    """Run the comparison, print its tables, save the figure and the JSON, and print the summary.

    Args:
        argv: the arguments (`sys.argv[1:]` when None).
        prog: how the command is spelled (see `parse_args`).

    Returns:
        The summary (the last line's JSON object).
    """
    args = parse_args(argv, prog)
    os.makedirs(args.out, exist_ok=True)
    task = load_task(args)
    labels = labels_of(args.agents)
    compared = methods(args, labels)
    _announce(args, labels)
    start = time.perf_counter()
    report = evidence.compare(
        task,
        compared,
        seeds=args.seeds,
        verbose=True,
        record=os.path.join(args.out, f"compare_{args.dataset}.record.json"),
    )
    rows, paired = _results(report, task, args.models, labels)
    print_tables(rows, paired)
    names = ", ".join(a.name for a in args.agents) or "baselines"
    figure = plot(
        report,
        args.models,
        os.path.join(args.out, f"compare_{args.dataset}.png"),
        f"{names} on {args.dataset}: mean +- std over {args.seeds} seeds",
    )
    command = f"{prog} " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = _summary(args, command, figure, rows, paired)
    _save(args, summary, figure, start)
    if args.record:
        record_in_cards(args, labels, summary)
    return _output.print_json_line({"agents": [a.name for a in args.agents], **summary})


def _announce(args, labels):
    """Print what is compared, on which data, models, epochs and seeds."""
    described = ", ".join(f"{label} ({a.name})" for label, a in zip(labels, args.agents))
    print(
        f"{described or 'Baselines'} on "
        f"{args.dataset}, models {','.join(args.models)}, {args.epochs} epochs, {args.seeds} seeds",
        flush=True,
    )


def _results(report, task, architectures, labels):
    """The report's rows and every agent's paired differences, named by architecture."""
    architecture = dict(zip(task.models, architectures))
    rows = [{**row, "model": architecture[row["model"]]} for row in report.rows()]
    paired = [
        {**report.paired(label, baseline, model), "model": architecture[model]}
        for label in labels
        for model in task.models
        for baseline in BASELINES
    ]
    return rows, paired


def _summary(args, command, figure, rows, paired):
    """The comparison's summary: its settings, command, figure, rows and paired differences."""
    return {
        "dataset": args.dataset,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "width": args.width,
        "command": command,
        "figure": figure,
        "rows": rows,
        "paired": paired,
    }


def _save(args, summary, figure, start):
    """Write the summary's JSON in `args.out` and print where the figure is and the time taken."""
    atomic_write_json(
        os.path.join(args.out, f"compare_{args.dataset}.json"),
        {**summary, "agents": [a.name for a in args.agents]},
    )
    print(
        f"\nFigure: {figure or 'not drawn (matplotlib is not installed)'}; "
        f"{time.perf_counter() - start:.0f} s"
    )


def load_task(args):
    """The data set named by `args` and the paper's task on it (an mlp only on tabular data).

    Raises:
        SystemExit: with the message, when the data are unavailable.
    """
    kwargs = {"data_dir": args.data_dir} if args.dataset.startswith("cifar") else {}
    try:
        data = datasets.load(args.dataset, **kwargs)
    except datasets.DatasetUnavailableError as error:
        sys.exit(str(error))
    if len(data.input_shape) != 3 and any(m != "mlp" for m in args.models):
        print(f"{args.dataset} is tabular: only the mlp applies.")
        args.models = ["mlp"]
    return paper_task(data, args.dataset, args.models, args.width, args.epochs, args.batch_size)


def print_tables(rows, paired):
    """Print the final test accuracy per method and, with agents, the paired differences."""
    _print_accuracies(rows)
    if paired:
        _print_paired(paired)


def _print_accuracies(rows):
    """Print the final test accuracy, median loss, divergences and settings per method."""
    _output.print_table(
        [(r["model"], r["method"], *evidence.result_cells(r), r["settings"] or "") for r in rows],
        headers=(
            "model",
            "method",
            "test accuracy (mean +- std)",
            "median test loss",
            "diverged",
            "tuned settings",
        ),
        align="llrrrl",
        title="Final test accuracy per method",
    )


def _print_paired(paired):
    """Print each agent's paired differences against every baseline."""
    _output.print_table(
        [(p["model"], p["method"], p["baseline"], *evidence.paired_cells(p)) for p in paired],
        headers=(
            "model",
            "agent",
            "minus",
            "mean difference (test accuracy)",
            "95% CI",
            "seeds ahead",
            "verdict",
        ),
        align="lllrlrl",
        markdown=True,
        title="Paired differences",
    )


def record_in_cards(args, labels, summary):
    """Record the comparison in the card of every zoo agent compared (`--record`)."""
    for label, name in zip(labels, args.agent):
        own = [r for r in summary["rows"] if r["method"] == label or r["method"] in BASELINES]
        zoo.record_benchmark(
            name,
            args.dataset,
            {
                **summary,
                "method": label,
                "rows": own,
                "paired": [p for p in summary["paired"] if p["method"] == label],
            },
        )
        print(f"Recorded in the card of {name}")
