"""`keras-neuromod evolve`: evolve a neuromodulatory agent with GRNEAT, over real trainings.

`examples/evolve.py` is this command (it passes its own name, so that the
reproducing command an agent records is the one that was run).

The story: each generation draws one of the paper's architectures and an
initialisation seed, and every agent of the population trains that model with
Nm-Adam (or Nm-SGD) from the same start; its fitness is the final training
accuracy. GRNEAT breeds the next population from the fittest, species by
species. After every generation the checkpoint is written, so an interrupted run
continues with `--resume` and ends exactly where an uninterrupted one would.

    keras-neuromod evolve                            # quick: digits, a few minutes on 2 cores
    keras-neuromod evolve --quick --task cifar10 # the quick settings on another data set
    keras-neuromod evolve --population 50 --generations 50 --epochs 20 \\
        --models A,B,C --task cifar10 --out runs/cifar # the paper's setting
    keras-neuromod evolve --backend ray --vectorized --ray-address auto   # on a Ray cluster
    keras-neuromod evolve --suite --population 64 --generations 200 \
        --out runs/general               # agents that generalise: the task suite

`--suite` evolves over `keras_neuromod.tasks` instead of one data set
(`keras_neuromod.evolution.SuiteTask`): every generation draws `--instances`
(task, model, seed) instances from the tasks that are not held out, and an
agent's fitness is its mean clipped log ratio of validation loss against Keras's
optimizer of its base (Adam, SGD) at the best rate of a small grid on each
(`--reference default`: at Keras's defaults). Since every generation meets
other instances, the agent written at the end is the candidate (the best of
each of the last 20 generations, and the hall of fame) with the best mean score on a fixed
validation draw of `--validation-draws` x `--instances` further instances
(`keras_neuromod.evolution.score_on_validation`). `--algorithm random` runs the
control with the same budget: fresh random genomes every generation, the best
of them all kept. `--algorithm static` runs the control without modulation,
with the same budget, instances, fitness, hall of fame and selection: CMA-ES
searches the best fixed hyperparameters of the base (one value each, for every
tensor and step, within the agent's ranges; `keras_neuromod.evolution.static`),
and `best_agent.json` holds them as collapsed ranges (`{name: [v, v]}`), so
that `NmAdam(agent=...)` trains as Keras's Adam with those settings.
`--algorithm cmaes` keeps the genome's topology fixed (the agent's inputs and
outputs and `--regulatory` regulatory proteins, 8 by default) and searches its
tags, beta and delta with CMA-ES from a silent genome, whose every
hyperparameter sits in the middle of its range (`keras_neuromod.evolution.cmaes`),
on the instances the random control draws; its agent is an ordinary one.

`--inputs` and `--outputs` name the agents' input and output sets
(`keras_neuromod.inputs`, `keras_neuromod.outputs`): by default, with `--suite`,
"sensing" and "centred" (every range centred on the baseline's settings); on one
data set the core paper's, "paper" and "paper". An agent of other sets than the
paper's names them in its settings, and the reproducing command gives them.
`--ranges NAME=LO:HI ...` sets ranges on the output set's scales; `--centre-on
AGENT` moves every range (keeping its width) to centre on the values of an agent
of fixed values, such as a static search's, so that the search looks for the
modulation around that constant (`bases.Base.centred_ranges`).

The default backend, `vectorized`, trains the population as compiled JAX code
(in a JAX worker process; batched where that is faster), which gives the same
fitness as `model.fit` many times faster; `--backend process` fits every
individual with `model.fit` in local processes.

Writes into `--out`: `checkpoint.json`, the best agent (`best_agent.json`), the
logbook (`logbook.csv`) and a PNG of best and mean fitness per generation.
`best_agent.json` is an agent file in the zoo's format (genome, settings,
provenance with the reproducing command), so
`NmAdam(agent="runs/evolve/best_agent.json")` uses it and it can be shared as is.
The last line on stdout is one JSON object: best_fitness, generations,
evaluations, evaluated_now, agent. `--generations 0` on a new run evolves
nothing and writes no agent (best_fitness and agent are null); with `--resume`
it writes the agent of the checkpoint's last generation again.

`--timeout SECONDS` kills a worker that gives no answer for that long on one
evaluation (a stuck or stopped process): the evaluation is run once more, then
scored worst, as when a worker crashes. By default there is no limit.

A run holds a lock on `--out` (`OUT/.lock`) while it lasts: a second run on the
same folder meanwhile exits with an error naming the process that holds it.
"""

import argparse
import csv
import math
import os
import resource
import sys
import time

import numpy as np

import keras_neuromod
from keras_neuromod import bases
from keras_neuromod import datasets
from keras_neuromod import inputs as input_sets
from keras_neuromod import outputs as output_sets
from keras_neuromod import zoo
from keras_neuromod.cli import _output
from keras_neuromod.evolution import SuiteTask
from keras_neuromod.evolution import TaskError
from keras_neuromod.evolution import evolve
from keras_neuromod.evolution import score_on_validation
from keras_neuromod.evolution.cmaes import DEFAULT_REGULATORY
from keras_neuromod.evolution.engine import ALGORITHMS
from keras_neuromod.evolution.parallel import BACKENDS
from keras_neuromod.evolution.static import static_agent
from keras_neuromod.evolution.suite import AUGMENTATIONS
from keras_neuromod.evolution.suite import BASELINES
from keras_neuromod.evolution.suite import REFERENCES
from keras_neuromod.evolution.suite import SAMPLINGS
from keras_neuromod.evolution.suite import SCORINGS
from keras_neuromod.io import FolderLockedError
from keras_neuromod.io import atomic_open

PROG = "keras-neuromod evolve"

QUICK = {
    "population": 20,
    "generations": 8,
    "epochs": 3,
    "models": "mlp,A",
    "width": 0.5,
    "train_subset": None,
}
QUICK_SUITE = {"population": 16, "generations": 4, "instances": 2}
# The validation instances that pick a --suite run's agent, unless --validation-draws
# says (with --quick: QUICK_VALIDATION_DRAWS draws of --instances)
VALIDATION_INSTANCES = 64
QUICK_VALIDATION_DRAWS = 4
SEARCHES = {
    "grneat": "GRNEAT",
    "random": "Random search",
    "static": "Static search",
    "cmaes": "CMA-ES search",
}


def count(text):
    """An argparse type: an integer of 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def seconds(text):
    """An argparse type: a positive, finite number of seconds."""
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def parse_args(argv=None, prog=PROG):
    """The evolution's settings from the command line.

    Args:
        argv: the arguments (`sys.argv[1:]` when None).
        prog: how the command is spelled (`keras-neuromod evolve`, or
            `python examples/evolve.py`): the name in `--help` and the start of
            the reproducing command the agent records.

    Returns:
        An `argparse.Namespace` with every setting filled in (the quick or the
        full-scale defaults for what was not given).
    """
    parser = _output.parser(
        "Evolve a neuromodulatory agent with GRNEAT.",
        "runs/evolve",
        resume="continue from OUT/checkpoint.json",
        progress=True,
        quick="the small settings whatever the task (population 20, 8 generations, 3 epochs; "
        "with --suite: population 16, 4 generations, 2 instances); flags given override them",
        epilog="With no flags: a quick evolution on digits "
        "(population 20, 8 generations, 3 epochs).",
        prog=None if prog.startswith("python ") else prog,
    )
    _add_task_arguments(parser)
    _add_agent_arguments(parser)
    _add_backend_arguments(parser)
    _add_suite_arguments(parser)
    _add_fitness_arguments(parser)
    args = parser.parse_args(argv)
    args.prog = prog
    if args.timeout is not None and args.backend == "serial":
        parser.error(
            "--timeout needs another backend than serial (a serial run cannot stop itself)"
        )
    if args.vectorized and args.backend != "ray":
        parser.error("--vectorized goes with --backend ray (--backend vectorized is local)")
    if args.algorithm != "cmaes" and args.regulatory is not None:
        parser.error("--regulatory goes with --algorithm cmaes")
    if args.algorithm == "cmaes" and args.regulatory is None:
        args.regulatory = DEFAULT_REGULATORY
    return _suite_settings(parser, args) if args.suite else _dataset_settings(parser, args)


def _add_task_arguments(parser):
    """The flags of what evolves on what: task, base, budget, models, data."""
    parser.add_argument("--task", default="digits", choices=datasets.NAMES)
    parser.add_argument("--base", default="adam", choices=bases.names())
    parser.add_argument("--population", type=int, default=None)
    parser.add_argument("--generations", type=count, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--models", default=None, help="comma-separated architectures (A,B,C,mlp)")
    parser.add_argument("--width", type=float, default=None, help="width factor of the models")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--train-subset", type=int, default=None, help="use only N training examples"
    )
    parser.add_argument("--metric", default="accuracy", choices=("accuracy", "val_accuracy"))
    parser.add_argument("--data-dir", default=None)


def _add_agent_arguments(parser):
    """The flags of the agent evolved: its name, the search algorithm, its input and output sets."""
    parser.add_argument(
        "--name",
        default=None,
        help="the agent's name (default nm_BASE_TASK, nm_BASE_general with --suite)",
    )
    parser.add_argument(
        "--algorithm",
        default="grneat",
        choices=ALGORITHMS,
        help="grneat (default); random: the random-search control (random "
        "genomes); static (with --suite): the control without modulation, "
        "CMA-ES over fixed hyperparameters, written as an agent with "
        "collapsed ranges, on the instances random draws; cmaes: CMA-ES over "
        "the tags, beta and delta of genomes of a fixed topology (--regulatory), "
        "from a silent genome, on the instances random draws. All have an "
        "evolution's budget, fitness and selection",
    )
    parser.add_argument(
        "--regulatory",
        type=count,
        default=None,
        help=f"with --algorithm cmaes: the regulatory proteins of every genome searched "
        f"(default {DEFAULT_REGULATORY})",
    )
    parser.add_argument(
        "--inputs",
        default=None,
        choices=sorted(input_sets.INPUT_SETS),
        help="the agents' input set (keras_neuromod.inputs; default: sensing with "
        "--suite, the core paper's on one data set)",
    )
    parser.add_argument(
        "--outputs",
        default=None,
        choices=sorted(output_sets.OUTPUT_SETS),
        help="the agents' output set (keras_neuromod.outputs: each hyperparameter's range "
        "and scale; default: paper with the paper's input set, else centred, whose "
        "silent agent is Keras's optimizer)",
    )
    parser.add_argument(
        "--ranges",
        nargs="+",
        type=_range,
        default=None,
        metavar="NAME=LO:HI",
        help="hyperparameter ranges other than the output set's, mapped on its scales "
        "(learning_rate=1e-4:3e-3); the agent's file keeps them",
    )
    parser.add_argument(
        "--centre-on",
        default=None,
        metavar="AGENT",
        help="an agent of fixed values (a static search's best_agent.json, or its zoo "
        "name): every range keeps its width on its scale (--ranges' or the output set's) "
        "and moves to centre on the agent's value, so that a silent agent is that "
        "constant and the search looks for modulation around it",
    )


def _range(text):
    """`NAME=LO:HI` as `(name, (lo, hi))` (argparse's type of `--ranges`)."""
    name, _, pair = text.partition("=")
    lo, _, hi = pair.partition(":")
    try:
        return name.strip(), (float(lo), float(hi))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a range is NAME=LO:HI (learning_rate=1e-4:1e-2), got {text!r:.80}"
        ) from None


def _checked_ranges(parser, args):
    """`args.ranges` as a dict, checked against the base and its output set (None: none),
    and centred on `--centre-on`'s values where it names an agent."""
    ranges = None
    if args.ranges is not None:
        names = [name for name, _ in args.ranges]
        if len(set(names)) != len(names):
            parser.error(f"--ranges names a hyperparameter twice: {names}")
        ranges = dict(args.ranges)
        try:
            bases.get(args.base).check_ranges(ranges, outputs=args.outputs)
        except ValueError as error:
            parser.error(f"--ranges: {error}")
    args.centred_on = None
    if args.centre_on is None:
        return ranges
    values = _fixed_values(parser, args)
    try:
        return bases.get(args.base).centred_ranges(values, ranges, outputs=args.outputs)
    except ValueError as error:
        parser.error(f"--centre-on: {error}")


def _fixed_values(parser, args):
    """The values of `--centre-on`'s agent (its collapsed ranges), kept in `args.centred_on`."""
    try:
        agent = zoo.load(args.centre_on)
    except (OSError, ValueError, KeyError) as error:
        parser.error(f"--centre-on: {error}")
    if agent.base != args.base:
        parser.error(
            f"--centre-on: {agent.name} is an agent of the {agent.base} base, not of "
            f"--base {args.base}"
        )
    base = bases.get(agent.base)
    ranges = base.check_ranges(agent.ranges, outputs=agent.output_set.name)
    loose = sorted(name for name, (lo, hi) in ranges.items() if lo != hi)
    if loose:
        parser.error(
            f"--centre-on: {agent.name} is not an agent of fixed values ({', '.join(loose)} "
            "range over more than one value); a static search's agent is one"
        )
    values = {name: lo for name, (lo, _) in ranges.items()}
    args.centred_on = {"agent": agent.name, "values": values}
    return values


def _add_backend_arguments(parser):
    """The flags of where the individuals train: backend, workers, Ray, timeout."""
    parser.add_argument(
        "--backend",
        default="vectorized",
        choices=BACKENDS,
        help="vectorized (default): compiled, batched JAX trainings; process: "
        "model.fit in local processes; serial: model.fit here; ray: on Ray",
    )
    parser.add_argument(
        "--vectorized",
        action="store_true",
        help="with --backend ray: train chunks of the population vectorized",
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        help="seconds one evaluation may take in a worker before the worker is "
        "killed and the evaluation run again, then scored worst "
        "(all backends but serial; default: no limit)",
    )


def _add_suite_arguments(parser):
    """The flags of an evolution over the task suite (`--suite`)."""
    parser.add_argument(
        "--suite",
        action="store_true",
        help="evolve over the task suite (keras_neuromod.tasks), not one data set",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help="with --suite: comma-separated task names (default: every task not held out)",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=None,
        help="with --suite: (task, model, seed) instances per generation",
    )
    parser.add_argument(
        "--validation-draws",
        type=count,
        default=None,
        help="with --suite: draws of INSTANCES validation instances that pick the "
        f"agent among the candidates (default: enough for {VALIDATION_INSTANCES} "
        f"instances, {QUICK_VALIDATION_DRAWS} draws with --quick; 0: the last "
        "generation's best)",
    )


def _add_fitness_arguments(parser):
    """The flags of how a `--suite` run scores its agents: reference, score, draw."""
    parser.add_argument(
        "--reference",
        default="tuned",
        choices=REFERENCES,
        help="with --suite: what an instance's score is measured against: tuned "
        "(default): Keras's optimizer of the base at its best learning rate of a grid; "
        "default: at Keras's defaults",
    )
    parser.add_argument(
        "--scoring",
        default="no_harm",
        choices=SCORINGS,
        help="with --suite: how an instance's score reads a training: no_harm "
        "(default): the log loss ratio, less a rise of the loss from its best epoch "
        "beyond the reference's; final: the log ratio of the final losses",
    )
    parser.add_argument(
        "--sampling",
        default="stratified",
        choices=SAMPLINGS,
        help="with --suite: how a generation's instances are drawn: stratified "
        "(default): task families, tasks and models take turns; uniform: independently",
    )
    parser.add_argument(
        "--augmentation",
        default="varied",
        choices=AUGMENTATIONS,
        help="with --suite: how an instance varies its task's training: varied "
        "(default): its length (half to 8 times the task's epochs), loss scale and "
        "initial weights' scale drawn from its seed; batches: also its batch size "
        "(8 to 256); resized: also its model's width (0.5 to 2 times) and depth (a block "
        "fewer to one more); all: batches and resized; none: the task as it is",
    )


def _suite_settings(parser, args):
    """`args` of a `--suite` run completed: its defaults, its `SuiteTask`, the agent's name."""
    for name, value in QUICK_SUITE.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.backend not in ("vectorized", "ray") or (args.backend == "ray" and not args.vectorized):
        parser.error(
            "--suite trains vectorized: use --backend vectorized, or ray with --vectorized"
        )
    try:
        args.tasks = (
            None
            if args.tasks is None
            else tuple(t.strip() for t in args.tasks.split(",") if t.strip())
        )
        args.inputs = args.inputs or input_sets.DEFAULT
        args.outputs = bases.get(args.base).resolve_outputs(args.outputs, args.inputs)
        args.ranges = _checked_ranges(parser, args)
        args.task_spec = SuiteTask(
            base=args.base,
            tasks=args.tasks,
            instances=args.instances,
            inputs=args.inputs,
            outputs=args.outputs,
            sampling=args.sampling,
            reference=args.reference,
            scoring=args.scoring,
            augmentation=args.augmentation,
            ranges=args.ranges,
        )
    except (KeyError, ValueError) as error:
        parser.error(str(error).strip("'\""))
    if args.validation_draws is None:  # --quick: a few draws, that the choice stays quick
        args.validation_draws = (
            QUICK_VALIDATION_DRAWS
            if args.quick
            else math.ceil(VALIDATION_INSTANCES / args.instances)
        )
    args.models = ("suite",)
    prefix = "static" if args.algorithm == "static" else "nm"
    args.name = args.name or f"{prefix}_{args.base}_general"
    return args


def _dataset_settings(parser, args):
    """`args` of a run on one data set completed: the quick or full-scale defaults, the name."""
    if args.tasks is not None or args.instances is not None:
        parser.error("--tasks and --instances go with --suite")
    if args.algorithm == "static":
        parser.error("--algorithm static goes with --suite (scored against its reference)")
    args.inputs = args.inputs or input_sets.LEGACY
    try:
        args.outputs = bases.get(args.base).resolve_outputs(args.outputs, args.inputs)
    except ValueError as error:
        parser.error(str(error))
    args.ranges = _checked_ranges(parser, args)
    full_scale = args.task != "digits" and not args.quick
    defaults = (
        {
            "population": 50,
            "generations": 50,
            "epochs": 20,
            "models": "A,B,C",
            "width": 1.0,
            "train_subset": None,
        }
        if full_scale
        else QUICK
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    args.name = args.name or f"nm_{args.base}_{args.task}"
    return args


def reproducing_command(args, generations):
    """The command that reproduces this evolution from its seed, every setting explicit.

    Args:
        args: the settings, from `parse_args`.
        generations: the generations the run reached.
    """
    prog = getattr(args, "prog", PROG)
    if args.suite:
        parts = _suite_command_parts(args, prog, generations)
    else:
        parts = _dataset_command_parts(args, prog, generations)
    if args.train_subset:
        parts.append(f"--train-subset {args.train_subset}")
    if args.vectorized:
        parts.append("--vectorized")
    if args.workers:
        parts.append(f"--workers {args.workers}")
    if args.timeout:
        parts.append(f"--timeout {args.timeout:.15g}")
    return " ".join(parts)


def _suite_command_parts(args, prog, generations):
    """The reproducing command's words for a `--suite` run, up to the common flags."""
    return [
        f"{prog} --suite",
        f"--base {args.base}",
        f"--population {args.population}",
        f"--generations {generations}",
        f"--instances {args.instances}",
        f"--validation-draws {args.validation_draws}",
        f"--reference {args.reference}",
        f"--scoring {args.scoring}",
        f"--sampling {args.sampling}",
        f"--augmentation {args.augmentation}",
        f"--algorithm {args.algorithm}",
        *_regulatory_part(args),
        f"--inputs {args.inputs}",
        f"--outputs {args.outputs}",
        *_ranges_part(args),
        f"--backend {args.backend}",
        f"--seed {args.seed}",
        # the tasks drawn from, named: the suite's default set may grow
        f"--tasks {','.join(args.task_spec.tasks)}",
    ]


def _ranges_part(args):
    """The reproducing command's `--ranges` (where the run names any)."""
    if not args.ranges:
        return []
    pairs = " ".join(f"{name}={lo!r}:{hi!r}" for name, (lo, hi) in args.ranges.items())
    return [f"--ranges {pairs}"]


def _regulatory_part(args):
    """The reproducing command's `--regulatory` (a cmaes run's only)."""
    return [f"--regulatory {args.regulatory}"] if args.algorithm == "cmaes" else []


def _dataset_command_parts(args, prog, generations):
    """The reproducing command's words for a run on one data set, up to the common flags."""
    parts = [
        prog,
        f"--task {args.task}",
        f"--base {args.base}",
        f"--population {args.population}",
        f"--generations {generations}",
        f"--epochs {args.epochs}",
        f"--models {','.join(args.models)}",
        f"--width {args.width}",
        f"--batch-size {args.batch_size}",
        f"--metric {args.metric}",
        f"--backend {args.backend}",
        f"--seed {args.seed}",
    ]
    if args.algorithm != "grneat":
        parts.append(f"--algorithm {args.algorithm}")
    parts += _regulatory_part(args)
    if args.inputs != input_sets.LEGACY:
        parts.append(f"--inputs {args.inputs}")
    if args.outputs != output_sets.LEGACY:
        parts.append(f"--outputs {args.outputs}")
    return parts + _ranges_part(args)


def write_logbook(logbook, path):
    """Write DEAP's `logbook` as CSV at `path`, atomically."""
    with atomic_open(path, newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=logbook.header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(logbook)


def plot_fitness(logbook, path, title, ylabel="fitness (final training accuracy)"):
    """Draw the best, mean and range of the fitness per generation as a PNG at `path`.

    Returns:
        `path`, or None without matplotlib (`pip install "keras_neuromod[examples]"`).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    generations = [r["gen"] for r in logbook]
    suite = all(r["architecture"] == "suite" for r in logbook)
    if suite:  # below the fitness, its spread within and between generations
        figure = _output.figure(figsize=(7, 6))
        axis, spread = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
        _plot_spreads(spread, logbook, generations)
    else:
        figure = _output.figure(figsize=(7, 4))
        axis = figure.subplots()
    _plot_best_mean_range(axis, logbook, generations)
    if suite and len(generations) > 20:
        _plot_moving_averages(axis, logbook, generations)
    elif len(generations) <= 20:
        _annotate_architectures(axis, logbook, generations)
    else:
        _mark_architectures(axis, logbook)
    axis.set(xlabel=None if suite else "generation", ylabel=ylabel, title=title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=3, loc="lower left")
    figure.tight_layout()
    return _output.save_figure(figure, path)


def _plot_spreads(axis, logbook, generations):
    """Draw the fitness's spread within each generation (std) and between them (drift)."""
    axis.plot(generations, [r["std"] for r in logbook], color="C2", label="within (std)")
    axis.plot(
        generations,
        [r["drift"] for r in logbook],
        color="C3",
        label="between generations (drift of the mean)",
    )
    axis.set(xlabel="generation", ylabel="spread")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper right")


def _plot_best_mean_range(axis, logbook, generations):
    """Draw the best and mean fitness per generation as lines, the range as a band."""
    many = len(generations) > 20
    thin = {"lw": 0.8, "alpha": 0.5} if many else {}
    axis.plot(generations, [r["max"] for r in logbook], "-" if many else "-o", label="best", **thin)
    axis.plot(
        generations, [r["mean"] for r in logbook], "-" if many else "-s", label="mean", **thin
    )
    axis.fill_between(
        generations,
        [r["min"] for r in logbook],
        [r["max"] for r in logbook],
        alpha=0.15,
        label="min to max",
    )


def _plot_moving_averages(axis, logbook, generations):
    """Draw the best and mean fitness's moving averages (every generation meets other instances)."""
    window = 10
    for key, colour in (("max", "C0"), ("mean", "C1")):
        values = np.array([r[key] for r in logbook])
        moving = np.convolve(values, np.ones(window) / window, mode="valid")
        axis.plot(
            generations[window - 1 :],
            moving,
            color=colour,
            lw=2.5,
            label=f"{'best' if key == 'max' else 'mean'}, {window}-generation average",
        )


def _annotate_architectures(axis, logbook, generations):
    """Label each generation's best point with its architecture (while they stay legible)."""
    for r in logbook:
        axis.annotate(
            r["architecture"],
            (r["gen"], r["max"]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    axis.set_xticks(generations)


def _mark_architectures(axis, logbook):
    """Mark each generation's best point with a marker per architecture trained."""
    markers = dict(zip(sorted({r["architecture"] for r in logbook}), "^vDPX*"))
    for architecture, marker in markers.items():
        own = [r for r in logbook if r["architecture"] == architecture]
        axis.scatter(
            [r["gen"] for r in own],
            [r["max"] for r in own],
            marker=marker,
            s=40,
            zorder=3,
            label=f"trained: {architecture}",
        )


def select_agent(args, result):
    """The candidate with the best mean validation score (--suite), and the selection record."""
    if not args.suite or args.validation_draws == 0:
        return result.last_best, None
    candidates = _distinct_candidates(result)
    print(
        f"Selecting among {len(candidates)} candidates on {args.validation_draws} x "
        f"{args.instances} validation instances ...",
        flush=True,
    )
    before = _cpu_seconds()
    scores = score_on_validation(
        [c.genome for c in candidates],
        args.task_spec,
        draws=args.validation_draws,
        workers=args.workers,
    )
    cpu_seconds = _cpu_seconds() - before
    means = scores.mean(axis=1)
    _print_candidates(candidates, means, static=args.algorithm == "static")
    chosen = int(np.argmax(means))
    return candidates[chosen], {
        "candidates": len(candidates),
        "draws": args.validation_draws,
        "instances": args.validation_draws * args.instances,
        # each candidate's trainings and the reference's, once per validation instance
        "trainings": (len(candidates) + args.task_spec.reference_trainings)
        * args.validation_draws
        * args.instances,
        "score": round(float(means[chosen]), 4),
        "scores": [round(float(m), 4) for m in means],
        "cpu_seconds": round(cpu_seconds, 1),
    }


def _cpu_seconds():
    """CPU seconds of this process and of its finished workers (their processes are joined)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def _distinct_candidates(result):
    """The last generations' bests (newest first) and the hall of fame, each genome once.

    Each generation's best is the best of its own draw; the hall of fame's
    fitnesses come from different draws, so it gathers where draws were easy.
    """
    candidates = []
    for individual in [result.last_best, *reversed(result.recent_bests), *result.hall_of_fame]:
        if all(individual.genome != c.genome for c in candidates):
            candidates.append(individual)
    return candidates


def _print_candidates(candidates, means, static):
    """Print a table of the candidates: generation, fitness, validation score, genome."""
    _output.print_table(
        [
            (
                i,
                c.generation,
                f"{c.fitness.values[0]:.4f}",
                f"{m:.4f}",
                str(c.genome) if static else c.genome.n_regulatory,
            )
            for i, (c, m) in enumerate(zip(candidates, means))
        ],
        headers=(
            "candidate",
            "generation",
            "fitness",
            "validation",
            "hyperparameters" if static else "reg. proteins",
        ),
        align="rrrr" + ("l" if static else "r"),
    )


def provenance(args, result, chosen, selection):
    """The agent card's provenance: what it evolved on, its budget, the reproducing command."""
    seconds = sum(r["seconds"] for r in result.logbook)
    workers = args.workers or os.cpu_count() or 1
    cpu_hours = _cpu_hours(result.logbook, min(workers, os.cpu_count() or 1), selection)
    record = {
        "population": args.population,
        "generations": result.generations,
        "algorithm": args.algorithm,
        "seed": args.seed,
        "final_fitness": chosen.fitness.values[0],
        "evaluations": result.evaluations,
        # the sets the search evolved with: a static search's agent reads neither
        "inputs": args.inputs,
        "outputs": args.outputs,
    }
    if args.centred_on is not None:  # the ranges' middles: the reproducing command has them
        record["centred_on"] = args.centred_on
    if args.suite:
        record = _suite_provenance(args, result, selection, record)
    else:
        record = _dataset_provenance(args, record)
    record.update(
        {
            "evolution_seconds": round(seconds, 1),
            "workers": workers,
            **cpu_hours,
            "library_version": keras_neuromod.__version__,
            "command": reproducing_command(args, result.generations),
        }
    )
    return record


def _cpu_hours(logbook, workers, selection):
    """The card's ``cpu_hours``: the workers' CPU time on the generations and the selection.

    A generation that a checkpoint recorded without its CPU time counts as its
    wall time times `workers`; ``cpu_hours_estimated`` then says how many.
    """
    unmeasured = [r["seconds"] for r in logbook if r.get("cpu_seconds") is None]
    seconds = sum(r["cpu_seconds"] for r in logbook if r.get("cpu_seconds") is not None)
    seconds += sum(unmeasured) * workers + (selection or {}).get("cpu_seconds", 0.0)
    record = {"cpu_hours": round(seconds / 3600, 2)}
    if unmeasured:
        record["cpu_hours_estimated"] = (
            f"{len(unmeasured)} of {len(logbook)} generations, recorded without their "
            f"CPU time, count as wall time x {workers} workers"
        )
    return record


def _suite_provenance(args, result, selection, record):
    """`record` within the `--suite` run's entries: the tasks, the baseline, the selection."""
    spec = args.task_spec
    return {
        "task": "suite",
        "tasks": list(spec.tasks),
        "instances": spec.instances,
        "clip": spec.clip,
        "baseline": BASELINES[spec.base],
        "reference": spec.reference,
        "scoring": spec.scoring,
        **record,
        # one training per evaluation and instance, and the reference's once per instance
        "trainings": (result.evaluations + result.generations * spec.reference_trainings)
        * spec.instances,
        "selection": selection,
    }


def _dataset_provenance(args, record):
    """`record` after the entries of a run on one data set: the task, models and budget."""
    return {
        "task": args.task,
        "architectures": list(args.models),
        "width": args.width,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "metric": args.metric,
        **record,
    }


def main(argv=None, prog=PROG):
    """Run the evolution, write the agent, the logbook and the figure, and print the summary.

    Args:
        argv: the arguments (`sys.argv[1:]` when None).
        prog: how the command is spelled (see `parse_args`).

    Raises:
        SystemExit: with the message, when the data are unavailable, `--out`
            holds a run (without `--resume`) or another run holds its lock, or
            the checkpoint was made with other settings.
        keras_neuromod.evolution.TaskError: when the task itself fails (no agent is written).
    """
    args = parse_args(argv, prog)
    os.makedirs(args.out, exist_ok=True)
    command = f"{prog} " + " ".join(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    result = run_evolution(args)
    if result.last_best is None:
        print(f"No generation was run (--generations {args.generations}): no agent to write.")
        print_summary(result, None, None)
        return
    chosen, selection = select_agent(args, result)
    agent_path = write_agent(args, result, chosen, selection)
    write_logbook(result.logbook, os.path.join(args.out, "logbook.csv"))
    figure = draw_fitness(args, result.logbook)
    _print_logbook(result.logbook)
    picked = (
        "the best on the validation draw"
        if selection
        else "the best individual of the last generation"
    )
    what = (
        f"fixed {chosen.genome}"
        if args.algorithm == "static"
        else f"{chosen.genome.n_regulatory} regulatory proteins"
    )
    print(f"\nAgent ({picked}): fitness {chosen.fitness.values[0]:.4f}, {what} -> {agent_path}")
    print(
        f"Figure: {figure or 'not drawn (matplotlib is not installed)'}; "
        f"{result.evaluated_now} evaluations in {time.perf_counter() - start:.0f} s "
        f"(command: {command.strip()})"
    )
    print_summary(result, agent_path, selection)


def _print_logbook(logbook):
    """Print a table of the generations: model, best and mean fitness, species, size."""
    _output.print_table(
        [
            (
                r["gen"],
                r["architecture"],
                f"{r['max']:.4f}",
                f"{r['mean']:.4f}",
                r["species"],
                f"{r['size']:.2f}",
            )
            for r in logbook
        ],
        headers=("generation", "model", "best", "mean", "species", "reg. proteins"),
        align="rrrrrr",
    )


def run_evolution(args):
    """Say what evolves, run `evolve` with `args`, and return its `EvolutionResult`.

    Raises:
        SystemExit: with the message, when the data are unavailable, `--out`
            holds a run (without `--resume`) or another run holds its lock, or
            the checkpoint was made with other settings.
    """
    _announce(args)
    options = {} if args.suite else _dataset_options(args)
    try:
        return evolve(
            task=args.task_spec if args.suite else args.task,
            base=args.base,
            population=args.population,
            generations=args.generations,
            epochs=args.epochs,
            models=args.models,
            backend=args.backend,
            workers=args.workers,
            ray_address=args.ray_address,
            timeout=args.timeout,
            vectorized=args.vectorized,
            seed=args.seed,
            out=args.out,
            resume=args.resume,
            progress=not args.no_progress,
            algorithm=args.algorithm,
            cmaes_regulatory=args.regulatory,
            **options,
        )
    except datasets.DatasetUnavailableError as error:
        sys.exit(str(error))
    except FileExistsError as error:
        sys.exit(f"{error}\n(use --resume, or another --out)")
    except FolderLockedError as error:  # another run writes into --out
        sys.exit(str(error))
    except ValueError as error:  # a checkpoint made with other settings
        sys.exit(str(error))


def _announce(args):
    """Print what evolves: the search, the task, the agents, the budget and the seed."""
    optimizer = f"Nm-{'SGD' if args.base == 'sgd' else 'Adam'}"
    if args.suite:
        print(
            f"{SEARCHES[args.algorithm]} on the task suite "
            f"({len(args.task_spec.tasks)} tasks, {args.instances} instances per generation): "
            f"{optimizer} agents against {args.task_spec.describe_reference()}, population "
            f"{args.population}, {args.generations} generations, seed {args.seed}",
            flush=True,
        )
    else:
        print(
            f"{SEARCHES[args.algorithm]} on {args.task}: {optimizer} agents, "
            f"population {args.population}, {args.generations} generations, "
            f"{args.epochs} epoch(s), "
            f"models {','.join(args.models)}, backend {args.backend}, seed {args.seed}",
            flush=True,
        )


def _dataset_options(args):
    """The options of `evolve` that a run on one data set passes (its data and agents)."""
    return dict(
        batch_size=args.batch_size,
        width=args.width,
        metric=args.metric,
        train_subset=args.train_subset,
        data_dir=args.data_dir,
        inputs=args.inputs,
        outputs=args.outputs,
        ranges=args.ranges,
    )


def write_agent(args, result, chosen, selection):
    """Write the `chosen` individual as the agent file `OUT/best_agent.json`; return its path."""
    spec = args.task_spec if args.suite else None
    settings = {
        "warmup_steps": spec.warmup_steps if spec else 25,
        "grn_steps_per_update": spec.grn_steps_per_update if spec else 1,
    }
    if args.algorithm == "static":
        # the fixed values as collapsed ranges: the agent trains as Keras's optimizer with them
        # (its genome reads the core paper's inputs and maps with the paper's output set,
        # which change nothing then)
        agent = static_agent(
            chosen.genome, args.name, settings, provenance(args, result, chosen, selection)
        )
    else:
        if args.inputs != input_sets.LEGACY:
            settings["inputs"] = args.inputs
        if args.inputs != input_sets.LEGACY or args.outputs != output_sets.LEGACY:
            # an agent of the paper's sets names neither, as the agents before output sets
            settings["outputs"] = args.outputs
        agent = zoo.Agent(
            name=args.name,
            base=args.base,
            genome=chosen.genome,
            ranges=spec.ranges if spec else args.ranges,
            settings=settings,
            provenance=provenance(args, result, chosen, selection),
        )
    agent_path = os.path.join(args.out, "best_agent.json")
    zoo.save(agent, agent_path)
    return agent_path


def draw_fitness(args, logbook):
    """`plot_fitness` into `OUT/fitness.png`, titled for the run; its path, or None."""
    figure = os.path.join(args.out, "fitness.png")
    if args.suite:
        return plot_fitness(
            logbook,
            figure,
            f"{SEARCHES[args.algorithm]} on the task suite (seed {args.seed})",
            f"fitness (mean log loss ratio against {BASELINES[args.base]}"
            + (" at its best rate)" if args.reference == "tuned" else ")"),
        )
    return plot_fitness(
        logbook, figure, f"{SEARCHES[args.algorithm]} on {args.task} (seed {args.seed})"
    )


def print_summary(result, agent_path, selection):
    """The last line on stdout: one JSON object (null fitness and agent without a run).

    best_fitness is the fitness of the last generation's best (the agent's, without
    a validation selection).
    """
    best = result.last_best
    _output.print_json_line(
        {
            "best_fitness": None if best is None else round(best.fitness.values[0], 4),
            "validation_score": None if selection is None else selection["score"],
            "generations": result.generations,
            "evaluations": result.evaluations,
            "evaluated_now": result.evaluated_now,
            "agent": agent_path,
        }
    )


def run(argv=None, prog=PROG):
    """`main`, with a task's error turned into a non-zero exit and its message (no agent written).

    Args:
        argv: the arguments (`sys.argv[1:]` when None).
        prog: how the command is spelled (see `parse_args`).
    """
    try:
        main(argv, prog)
    except TaskError as error:  # the task is broken: no agent is written
        sys.exit(f"{type(error).__name__}: {error}")
    return 0
