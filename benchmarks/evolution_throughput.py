"""Evaluations per minute with 1 and 2 local worker processes.

Each worker keeps its compiled model; the first job of every worker (the one
that builds and traces it) is run before timing. The same jobs (random Nm-Adam
genomes, digits, batch 32) are mapped by a 1-worker pool using both cores for
TensorFlow's threads, and by a 2-worker pool with one thread each. Target: at
least 1.8x the throughput with 2 workers.

    python benchmarks/evolution_throughput.py
    python benchmarks/evolution_throughput.py --quick
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_neuromod import Genome  # noqa: E402
from keras_neuromod.bases import N_INPUTS  # noqa: E402
from keras_neuromod.evolution import FitnessTask  # noqa: E402
from keras_neuromod.evolution.parallel import ProcessBackend  # noqa: E402


def throughput(task, jobs, workers, architecture):
    backend = ProcessBackend(task, workers=workers)
    try:
        warm = [{"genome": Genome.random(N_INPUTS, task.n_outputs, 1, rng=100 + w).to_dict(), "architecture": architecture,
                 "seed": 1} for w in range(workers)]
        backend.map(warm)
        start = time.perf_counter()
        backend.map(jobs)
        seconds = time.perf_counter() - start
    finally:
        backend.close()
    return len(jobs) / seconds * 60.0, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--model", default="A")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    jobs_count = 8 if args.quick else args.jobs
    task = FitnessTask(dataset="digits", base="adam", epochs=args.epochs, width=0.5)
    jobs = [{"genome": Genome.random(N_INPUTS, task.n_outputs, 3, rng=r).to_dict(), "architecture": args.model, "seed": 1}
            for r in range(jobs_count)]
    rows = []
    for workers in (1, 2):
        rate, seconds = throughput(task, jobs, workers, args.model)
        rows.append({"workers": workers, "evaluations_per_minute": round(rate, 1),
                     "seconds": round(seconds, 1)})
    speedup = rows[1]["evaluations_per_minute"] / rows[0]["evaluations_per_minute"]
    print(f"{os.cpu_count()} cores; {jobs_count} evaluations of model {args.model} (width 0.5) on digits, "
          f"{args.epochs} epoch(s)")
    print()
    print("| workers | evaluations per minute | seconds | speed-up |")
    print("|---:|---:|---:|---:|")
    for row in rows:
        ratio = row["evaluations_per_minute"] / rows[0]["evaluations_per_minute"]
        print(f"| {row['workers']} | {row['evaluations_per_minute']:.1f} | {row['seconds']:.1f} | {ratio:.2f}x |")
    print(json.dumps({"rows": rows, "speedup": round(speedup, 3), "target_met": speedup >= 1.8}))


if __name__ == "__main__":
    main()
