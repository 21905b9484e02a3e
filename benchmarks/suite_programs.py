"""How many compiled trainings an evolution over the task suite needs, per augmentation.

`SuiteEvaluator` compiles one training program per (task, model, data shapes,
batch size, model size) for the agents, and one for the tuned reference; each
worker compiles every program it meets (every worker trains its share of the
population on every instance of a generation), and a first call takes 5 to 60
seconds (`benchmarks/suite_throughput.py`). Varied lengths and scales compile
nothing new; varied batch sizes (``"batches"``) and model sizes (``"resized"``,
``"all"``) do. This draws the instances of an evolution's generations for each
augmentation, as `SuiteEvaluator` would meet them, and counts the distinct
programs: in all, per (task, model), and how many are new in the later
generations. It trains nothing.

    python benchmarks/suite_programs.py                      # 100 generations of 8
    python benchmarks/suite_programs.py --generations 60 --instances 8 --seed 1
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_neuromod import tasks  # noqa: E402
from keras_neuromod.evolution import SuiteTask  # noqa: E402
from keras_neuromod.evolution.suite import AUGMENTATIONS  # noqa: E402


def program_keys(suite, task_name, model, seed, shapes):
    """The program an instance trains on: (task, model, data shapes, batch size, size)."""
    task = tasks.get(task_name)
    variation = suite.variation(task, seed, model)
    return (task_name, model, shapes, variation.batch_size, variation.size)


def count(augmentation, generations, instances, seed, shapes_of):
    """Distinct programs of a run's draws, and the generation that first met each."""
    suite = SuiteTask(instances=instances, augmentation=augmentation)
    draws = np.random.default_rng(seed)
    first = {}
    for generation in range(generations):
        for task_name, model, instance_seed in suite.draw(int(draws.integers(2**31 - 1))):
            shapes = shapes_of(task_name, instance_seed)
            key = program_keys(suite, task_name, model, instance_seed, shapes)
            first.setdefault(key, generation)
    pairs = {(key[0], key[1]) for key in first}
    later = [g for g in first.values() if g >= generations // 2]
    return {
        "programs": len(first),
        "pairs": len(pairs),
        "per_pair": len(first) / len(pairs),
        "new_in_second_half": len(later),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1, help="the seed of the generations' draws")
    args = parser.parse_args(argv)
    cache = {}

    def shapes_of(task_name, seed):
        """The shapes of an instance's splits (a generated task's differ a little by seed)."""
        key = (task_name, seed)
        if key not in cache:
            splits = tasks.get(task_name).splits(seed)
            cache[key] = tuple(np.shape(a) for a in (*splits.train, *splits.val))
        return cache[key]

    print(
        f"{args.generations} generations of {args.instances} instances (draw seed {args.seed}); "
        "agents' programs (the tuned reference compiles as many again)"
    )
    print(f"{'augmentation':12s} {'programs':>8s} {'pairs':>5s} {'per pair':>8s} {'new late':>8s}")
    rows = {}
    for augmentation in AUGMENTATIONS:
        row = count(augmentation, args.generations, args.instances, args.seed, shapes_of)
        rows[augmentation] = row
        print(
            f"{augmentation:12s} {row['programs']:8d} {row['pairs']:5d} "
            f"{row['per_pair']:8.2f} {row['new_in_second_half']:8d}",
            flush=True,
        )
    base = rows["varied"]["programs"]
    print(json.dumps({"programs": {k: v["programs"] for k, v in rows.items()}, "varied": base}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
