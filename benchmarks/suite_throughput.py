"""Trainings per CPU-second of the task suite, per family: vectorized against one by one.

Evolution over the task suite (`SuiteTask`) trains every individual on every
instance; its budget is trainings. For every task that evolution trains on and
every model it trains (or each task's first with ``--first-model``), this
builds the agents' compiled training (`vectorized.TrainingProgram` with the
suite's placeholder Nm optimizer, the sensing inputs and the centred outputs,
as `SuiteEvaluator` does) twice, side by side in one process on Keras's JAX
backend:

* ``vectorized``: `vmap` over a population of random genomes and `scan` over the
  whole training, one compiled call per population;
* ``one by one``: one genome at a time, one compiled call per batch.

Each trains the same population from the same weights on the same batches of
the task's budget (seed 0). It prints the seconds of the first call (compiling
included), the median CPU seconds of the repeats that follow (`process_time`:
every thread of the process), trainings per CPU-second of each plan, their
ratio, and which plan `SuiteEvaluator` picks by default on this device. The
families' rows sum trainings and CPU seconds over their tasks and models.

    python benchmarks/suite_throughput.py
    python benchmarks/suite_throughput.py --quick        # one task per family, 8 genomes
    python benchmarks/suite_throughput.py --tasks digits_mlp spirals --population 32
    python benchmarks/suite_throughput.py --json run.json   # then --summary run.json
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "jax"  # the vectorized trainings need JAX

import jax  # noqa: E402
import numpy as np  # noqa: E402

from keras_neuromod import Genome  # noqa: E402
from keras_neuromod import tasks  # noqa: E402
from keras_neuromod.evolution import SuiteTask  # noqa: E402
from keras_neuromod.evolution.fitness import placeholder_optimizer  # noqa: E402
from keras_neuromod.evolution.vectorized import TrainingProgram  # noqa: E402
from keras_neuromod.evolution.vectorized import batches_by_default  # noqa: E402

PLANS = {"vectorized": {"vmap": True, "scan": True}, "one by one": {"vmap": False, "scan": False}}


def steps(task, splits):
    """The updates of one training of the task's budget."""
    return task.epochs * -(-len(splits.train[0]) // task.batch_size)


def measure(task, model_name, population, repeats):
    """Per plan, the first call's seconds and the median CPU seconds of a population's
    trainings; the plan `SuiteEvaluator` picks, and the updates of a training."""
    suite = SuiteTask(tasks=(task.name,), augmentation="none")
    splits = task.splits(0)
    genomes = [Genome.random(suite.n_inputs, suite.n_outputs, 4, rng=i) for i in range(population)]
    weights = task.build_model(model_name, seed=0).get_weights()
    orders = task.data_order(0)
    vectorized = batches_by_default(task.build_model(model_name, seed=0), jax.default_backend())
    row = {"default": "vectorized" if vectorized else "one by one", "steps": steps(task, splits)}
    for plan, options in PLANS.items():
        model = task.build_model(model_name, seed=0)
        program = TrainingProgram.for_task(
            task, model, placeholder_optimizer(suite), splits, **options
        )
        start = time.perf_counter()
        program.run(genomes, weights, orders)
        first = time.perf_counter() - start
        cpu = []
        for _ in range(repeats):
            start = time.process_time()
            program.run(genomes, weights, orders)
            cpu.append(time.process_time() - start)
        row[plan] = {"first_s": first, "cpu_s": statistics.median(cpu)}
    return row


def chosen_pairs(args):
    names = args.tasks or tasks.names(held_out=False)
    if args.quick and not args.tasks:
        firsts = {}
        for name in names:
            firsts.setdefault(tasks.get(name).family, name)
        names = list(firsts.values())
    pairs = []
    for name in names:
        task = tasks.get(name)
        models = task.models[:1] if args.first_model or args.quick else task.models
        pairs.extend((task, model) for model in models)
    return pairs


def rate(population, cpu_s):
    return population / cpu_s if cpu_s > 0 else float("inf")


def print_row(row):
    vec, alone = row["rates"]["vectorized"], row["rates"]["one by one"]
    print(
        f"{row['task']:22s} {row['model']:13s} {row['steps']:5d} "
        f"{row['vectorized']['first_s']:11.1f} {row['one by one']['first_s']:11.1f} "
        f"{vec:12.2f} {alone:12.2f} {vec / alone:6.2f}x  {row['default']}",
        flush=True,
    )


def families(rows, population):
    """Per family, trainings per CPU-second of each plan and of the plans picked by default:
    its pairs' trainings over their summed CPU seconds."""
    totals = {}
    for family in sorted({row["family"] for row in rows}):
        members = [row for row in rows if row["family"] == family]
        trainings = population * len(members)
        totals[family] = {
            plan: rate(trainings, sum(row[plan]["cpu_s"] for row in members)) for plan in PLANS
        }
        totals[family]["default"] = rate(
            trainings, sum(row[row["default"]]["cpu_s"] for row in members)
        )
    return totals


def summarize(rows, population):
    """Print the families' table and the closing JSON line."""
    totals = families(rows, population)
    print(
        f"\n{'family':12s} {'pairs':>5s} {'tr/CPU-s vec':>12s} {'tr/CPU-s 1x1':>12s} "
        f"{'vec/1x1':>7s} {'tr/CPU-s default':>16s}"
    )
    for family, rates in totals.items():
        pairs = sum(row["family"] == family for row in rows)
        print(
            f"{family:12s} {pairs:5d} {rates['vectorized']:12.2f} {rates['one by one']:12.2f} "
            f"{rates['vectorized'] / rates['one by one']:6.2f}x {rates['default']:16.2f}"
        )
    ratios = [row["rates"]["vectorized"] / row["rates"]["one by one"] for row in rows]
    print(
        json.dumps(
            {
                "pairs": len(rows),
                "population": population,
                "median_vectorized_over_one_by_one": round(float(np.median(ratios)), 3),
                "families": {
                    family: {plan: round(value, 3) for plan, value in rates.items()}
                    for family, rates in totals.items()
                },
            }
        )
    )


HEADER = (
    f"{'task':22s} {'model':13s} {'steps':>5s} {'first s vec':>11s} {'first s 1x1':>11s} "
    f"{'tr/CPU-s vec':>12s} {'tr/CPU-s 1x1':>12s} {'vec/1x1':>7s}  default"
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", help="task names (default: every suite task)")
    parser.add_argument("--first-model", action="store_true", help="each task's first model")
    parser.add_argument("--population", type=int, default=None, help="genomes (default 16)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 3)")
    parser.add_argument("--quick", action="store_true", help="a task per family, 8 genomes")
    parser.add_argument("--json", help="write the measurements to this file")
    parser.add_argument(
        "--summary",
        metavar="FILE",
        help="print the tables of a run's --json file, training nothing",
    )
    args = parser.parse_args(argv)
    if args.summary:
        with open(args.summary) as handle:
            saved = json.load(handle)
        print(saved["heading"])
        print(HEADER)
        for row in saved["rows"]:
            print_row(row)
        summarize(saved["rows"], saved["population"])
        return 0
    population = args.population or (8 if args.quick else 16)
    repeats = args.repeats or (1 if args.quick else 3)
    heading = (
        f"JAX on {jax.default_backend()}, {os.cpu_count()} CPUs; {population} genomes per "
        f"population, median of {repeats} timed call(s) after a first one"
    )
    print(heading)
    print(HEADER)
    rows = []
    for task, model_name in chosen_pairs(args):
        row = measure(task, model_name, population, repeats)
        row.update(
            task=task.name,
            family=task.family,
            model=model_name,
            rates={plan: rate(population, row[plan]["cpu_s"]) for plan in PLANS},
        )
        rows.append(row)
        print_row(row)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"heading": heading, "population": population, "rows": rows}, handle)
    summarize(rows, population)
    return 0


if __name__ == "__main__":
    sys.exit(main())
