"""Evaluations per minute: the vectorized backend against the process backend.

The same jobs (random Nm-Adam genomes with 0 to 4 regulatory proteins, one
architecture and seed, digits, 3 epochs, batch 32, width 0.25) are mapped by

* the vectorized backend (compiled JAX training; by default dense models are
  batched with vmap and convolutional ones trained one by one on a CPU) with
  its default of one JAX worker process per core, and with one worker,
* the process backend with 2 TensorFlow workers (one `model.fit` per job),
* for model A, the vectorized backend forced to batch (`vmap=True`), and to
  batch and compile the whole training as one loop (`vmap=True, scan=True`,
  as dense models are trained), against its CPU default for convolutional
  models (one by one, a compiled step per batch); `--skip-slow` and `--quick`
  leave these out.

Each configuration first maps a warm-up batch as large as the timed one (same
architecture, seed and shapes, other genomes), so start-up and compilation are
not timed; then the jobs are mapped `repeats` times and the median is quoted.
The fitness values of the vectorized default
and the process backend on the same jobs are compared (a line after the table).
Peak memory is the workers' summed peak resident memory (VmHWM). Targets, the
vectorized default against the process backend with 2 workers: at least 30x
on the MLP and 1.5x on model A.

    python benchmarks/evolution_throughput.py           # about 4 minutes on 2 cores
    python benchmarks/evolution_throughput.py --quick   # fewer jobs and repeats
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_neuromod import Genome  # noqa: E402
from keras_neuromod import models  # noqa: E402
from keras_neuromod.bases import N_INPUTS  # noqa: E402
from keras_neuromod.evolution import FitnessTask  # noqa: E402
from keras_neuromod.evolution.fitness import TaskData  # noqa: E402
from keras_neuromod.evolution.parallel import ProcessBackend  # noqa: E402
from keras_neuromod.evolution.parallel import VectorizedBackend  # noqa: E402
from keras_neuromod.evolution.vectorized import DEFAULT_WIDTH  # noqa: E402
from keras_neuromod.evolution.vectorized import batches_by_default  # noqa: E402

TARGETS = {"mlp": 30.0, "A": 1.5}
SEED = 1


def make_jobs(task, architecture, count, first_rng):
    return [
        {
            "genome": Genome.random(N_INPUTS, task.n_outputs, r % 5, rng=r).to_dict(),
            "architecture": architecture,
            "seed": SEED,
        }
        for r in range(first_rng, first_rng + count)
    ]


def peak_memory(backend):
    """The summed peak resident memory (MiB) of a backend's worker processes."""
    pool = getattr(backend, "_inner", backend)._pool
    total = 0
    for worker in pool:
        if worker is None:
            continue
        with open(f"/proc/{worker.process.pid}/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        total += int(line.split()[1]) / 1024
    return total


def measure(backend, jobs, warm, repeats):
    """Map `warm` once, then time `jobs` `repeats` times: (values, seconds, peak MiB)."""
    try:
        backend.map(warm)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            values = backend.map(jobs)
            seconds.append(time.perf_counter() - start)
        return values, seconds, peak_memory(backend)
    finally:
        backend.close()


def configurations(task, architecture, count, skip_slow):
    """(kind, workers, label, make) for each configuration of `architecture`."""
    data = TaskData(task)
    model = models.build(architecture, data.input_shape, data.num_classes, width=task.width)
    default = "vmap" if batches_by_default(model, "cpu") else "one by one"

    def vectorized(workers=None, vmap=None, scan=None):
        batched = default == "vmap" if vmap is None else vmap
        label = (
            f"default ({default})"
            if vmap is None
            else "vmap=True" + (", scan=True" if scan else "")
        )
        label = f"vectorized, {label}" + (f", width {DEFAULT_WIDTH}" if batched else "")
        return (
            "vectorized",
            workers or os.cpu_count(),
            label,
            lambda: VectorizedBackend(task, workers=workers, vmap=vmap, scan=scan),
        )

    rows = [
        ("process", 2, "process, model.fit", lambda: ProcessBackend(task, workers=2)),
        vectorized(),
        vectorized(1),
    ]
    if architecture == "A" and not skip_slow:
        rows += [vectorized(vmap=True), vectorized(vmap=True, scan=True)]
    return rows


def _parse_args(argv):
    """The timed maps' repeats, the job count of each model, and whether to skip the slow
    rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs and repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--mlp-jobs", type=int, default=None)
    parser.add_argument("--a-jobs", type=int, default=None)
    parser.add_argument(
        "--skip-slow", action="store_true", help="leave out model A's forced vmap rows"
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    counts = {
        "mlp": args.mlp_jobs or (16 if args.quick else 32),
        "A": args.a_jobs or (8 if args.quick else 16),
    }
    return repeats, counts, args.skip_slow or args.quick


def _time_model(task, architecture, count, repeats, skip_slow):
    """Time every configuration of one model: its table rows, the fitness agreement of the
    vectorized default with the process backend, and their speed ratio."""
    jobs = make_jobs(task, architecture, count, 0)
    warm = make_jobs(task, architecture, count, 1000)
    rows = []
    values = []  # per configuration, in order: process x2 first, vectorized default second
    for kind, workers, label, make in configurations(task, architecture, count, skip_slow):
        fitness, seconds, memory = measure(make(), jobs, warm, repeats)
        values.append(fitness)
        median = statistics.median(seconds)
        rows.append(
            {
                "model": architecture,
                "evaluation": label,
                "kind": kind,
                "workers": workers,
                "jobs": count,
                "repeats": repeats,
                "evaluations_per_minute": round(count / median * 60, 1),
                "seconds_per_evaluation": round(median / count, 4),
                "seconds_per_map": [round(t, 2) for t in seconds],
                "peak_memory_mib": round(memory),
            }
        )
    difference = np.abs(np.array(values[1]) - np.array(values[0]))
    agreement = {
        "max_abs_difference": float(difference.max()),
        "equal": int(np.sum(difference == 0)),
        "within_1e-6": int(np.sum(difference <= 1e-6)),
        "jobs": count,
        "one_worker_equal": int(np.sum(np.array(values[2]) == values[1])),
    }
    ratio = round(rows[1]["evaluations_per_minute"] / rows[0]["evaluations_per_minute"], 2)
    for row in rows:
        row["vs_process_x2"] = round(
            row["evaluations_per_minute"] / rows[0]["evaluations_per_minute"], 2
        )
    return rows, agreement, ratio


def _print_table(rows):
    """The rows as a Markdown table: speed, memory and the ratio to the process backend."""
    print(
        "| model | evaluation | workers | evaluations per minute (median) | seconds per evaluation "
        "| peak memory of workers (MiB, summed peak RSS) | vs process x2 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['evaluation']} | {row['workers']} | "
            f"{row['evaluations_per_minute']:.1f} | {row['seconds_per_evaluation']:.3f} | "
            f"{row['peak_memory_mib']} | {row['vs_process_x2']:.2f}x |"
        )


def _print_agreement(agreement):
    """One line per model: how far the vectorized fitness values are from the process's."""
    for architecture, check in agreement.items():
        print(
            f"Fitness agreement on {architecture}, vectorized default vs process x2: "
            "max |difference| "
            f"{check['max_abs_difference']:.3g}, {check['equal']} of {check['jobs']} equal, "
            f"{check['within_1e-6']} within 1e-6; vectorized with one worker equal on "
            f"{check['one_worker_equal']} of {check['jobs']}"
        )


def _check_targets(ratios):
    """Print each model's ratio against its target; return which are met."""
    met = {architecture: ratios[architecture] >= target for architecture, target in TARGETS.items()}
    print(
        "Targets (vectorized default vs process backend with 2 workers): "
        + "; ".join(
            f"{a} >= {t:g}x: {ratios[a]:.2f}x, {'met' if met[a] else 'NOT met'}"
            for a, t in TARGETS.items()
        )
    )
    return met


def main(argv=None):
    repeats, counts, skip_slow = _parse_args(argv)
    task = FitnessTask(dataset="digits", base="adam", epochs=3, width=0.25, batch_size=32)
    started = time.perf_counter()
    print(
        f"{os.cpu_count()} cores; digits, Nm-Adam, {task.epochs} epochs, batch {task.batch_size}, "
        f"width {task.width}, max_regulatory {task.max_regulatory}; jobs: {counts['mlp']} (mlp), "
        f"{counts['A']} (A); median of {repeats} timed map(s) after a warm-up map of as many jobs",
        flush=True,
    )

    rows, ratios, agreement = [], {}, {}
    for architecture, count in counts.items():
        ours, agreement[architecture], ratios[architecture] = _time_model(
            task, architecture, count, repeats, skip_slow
        )
        rows += ours

    print()
    _print_table(rows)
    print()
    _print_agreement(agreement)
    met = _check_targets(ratios)
    print(f"Total time {time.perf_counter() - started:.0f} s")
    met["all"] = all(met.values())
    print(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "rows": rows,
                "ratios": ratios,
                "targets": TARGETS,
                "targets_met": met,
                "agreement": agreement,
            }
        )
    )


if __name__ == "__main__":
    main()
