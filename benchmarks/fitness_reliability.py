"""How well the suite's fitness ranks a population: its reliability over instance draws.

Evolution over the task suite (`SuiteTask`) selects on each generation's fitness,
an individual's mean score over that generation's `instances` instances. Every
individual meets the same instances, so an easy or a hard draw moves the whole
population's mean (the logbook's ``drift``) without reordering it; what reorders
it is how much an individual's score depends on the instance beyond its general
quality. This scores one population on several independent draws with
`SuiteEvaluator`, on Keras's JAX backend, and prints:

* per draw, the population's mean fitness and its spread (std, as the logbook's
  ``std``); then the spread of the draws' means, the draw noise that the
  logbook's ``drift`` also holds (there mixed with the population's own change);
* the rank correlation (Spearman) of the individuals' fitness between two draws,
  averaged over the pairs of draws: how far one draw's order holds on another;
* variance components over every instance scored, individuals x instances as a
  two-way layout: the individuals' effect, the instances' effect and the rest
  (interaction and noise), and from them the reliability of a fitness over `k`
  instances, ``var(individual) / (var(individual) + var(rest) / k)``
  (`suite.variance_components`, `suite.reliability`; the instances' effect drops
  out: all individuals meet the same ones).

The population is an evolution's (``--checkpoint``: its last generation and its
suite) or random genomes of the default suite.

    python benchmarks/fitness_reliability.py --checkpoint runs/general/checkpoint.json
    python benchmarks/fitness_reliability.py --quick          # 12 random genomes, 3 draws
    python benchmarks/fitness_reliability.py --draws 6 --json run.json
"""

import argparse
import itertools
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "jax"  # the suite's trainings need JAX

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from keras_neuromod import Genome  # noqa: E402
from keras_neuromod.evolution import SuiteTask  # noqa: E402
from keras_neuromod.evolution.grneat import GRNEATConfig  # noqa: E402
from keras_neuromod.evolution.grneat import random_population  # noqa: E402
from keras_neuromod.evolution.suite import SuiteEvaluator  # noqa: E402
from keras_neuromod.evolution.suite import reliability  # noqa: E402
from keras_neuromod.evolution.suite import variance_components  # noqa: E402
from keras_neuromod.io import read_json  # noqa: E402

# The instance counts whose reliability is projected.
COUNTS = (1, 2, 4, 8, 16, 32, 64)
# Draw seeds start here, away from the seeds an evolution's generations draw with.
FIRST_SEED = 900_000


def population_and_suite(args):
    """The genomes to score and the `SuiteTask` to score them on."""
    if args.checkpoint:
        checkpoint = read_json(args.checkpoint, what="evolution checkpoint")
        suite = SuiteTask.from_dict(checkpoint["settings"]["task"])
        if not checkpoint["population"]:  # a CMA-ES run draws each generation's afresh
            algorithm = checkpoint["settings"].get("algorithm")
            sys.exit(
                f"{args.checkpoint} holds no population: a {algorithm!r} run's CMA-ES draws "
                f"each generation's candidates afresh. Pass a GRNEAT or random run's checkpoint."
            )
        genomes = [Genome.from_dict(g) for g in checkpoint["population"]]
        return genomes[: args.population] if args.population else genomes, suite
    suite = SuiteTask(tasks=tuple(args.tasks) if args.tasks else SuiteTask().tasks)
    config = GRNEATConfig(population=args.population or 32, max_regulatory=suite.max_regulatory)
    genomes = random_population(suite.n_inputs, suite.n_outputs, np.random.default_rng(0), config)
    return genomes, suite


def measure(genomes, suite, draws):
    """Every draw's `[individuals, instances]` score table and its seconds."""
    evaluator = SuiteEvaluator(suite)
    tables, seconds = [], []
    for draw in range(draws):
        start = time.perf_counter()
        table, _ = evaluator.scores(genomes, FIRST_SEED + draw)
        tables.append(table)
        seconds.append(time.perf_counter() - start)
        print(f"  draw {draw + 1}/{draws}: {seconds[-1]:.0f} s", file=sys.stderr, flush=True)
    return tables, seconds


def summarise(tables):
    """The printed figures of `tables` (one per draw), as a dict."""
    fitness = np.stack([t.mean(axis=1) for t in tables])  # [draws, individuals]
    correlations = [
        stats.spearmanr(fitness[a], fitness[b]).statistic
        for a, b in itertools.combinations(range(len(tables)), 2)
    ]
    components = variance_components(np.concatenate(tables, axis=1))
    individual, instance, rest = components
    return {
        "individuals": int(fitness.shape[1]),
        "instances_per_draw": int(tables[0].shape[1]),
        "draw_means": fitness.mean(axis=1).round(4).tolist(),
        "within_draw_std": fitness.std(axis=1).round(4).tolist(),
        "draw_mean_spread": float(fitness.mean(axis=1).std(ddof=1)),
        "spearman_between_draws": float(np.mean(correlations)),
        "variance": {"individual": individual, "instance": instance, "rest": rest},
        "reliability": {str(k): reliability(components, k) for k in COUNTS},
    }


def print_summary(summary):
    k = summary["instances_per_draw"]
    print(f"\n{summary['individuals']} individuals, {k} instances per draw\n")
    print("| draw | population mean | std within the draw |")
    print("|---:|---:|---:|")
    for i, (mean, std) in enumerate(zip(summary["draw_means"], summary["within_draw_std"])):
        print(f"| {i + 1} | {mean:+.3f} | {std:.3f} |")
    print(
        f"\nspread of the draws' means: {summary['draw_mean_spread']:.3f}; median std within "
        f"a draw: {np.median(summary['within_draw_std']):.3f}"
    )
    spearman = summary["spearman_between_draws"]
    print(f"Spearman between two draws' fitness, mean over pairs: {spearman:.2f}")
    variance = summary["variance"]
    print(
        f"variance: individuals {variance['individual']:.4f}, instances "
        f"{variance['instance']:.4f}, rest {variance['rest']:.4f}\n"
    )
    print("| instances per fitness | reliability |")
    print("|---:|---:|")
    for count, value in summary["reliability"].items():
        mark = " (the draw's)" if int(count) == k else ""
        print(f"| {count}{mark} | {value:.2f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="an evolution's checkpoint.json: its population")
    parser.add_argument("--population", type=int, help="individuals (default: all, or 32)")
    parser.add_argument("--draws", type=int, default=4, help="independent draws (default 4)")
    parser.add_argument("--tasks", nargs="+", help="random genomes on these suite tasks")
    parser.add_argument("--quick", action="store_true", help="12 random genomes, 3 draws")
    parser.add_argument("--json", help="also write the tables and the summary here")
    args = parser.parse_args(argv)
    if args.quick:
        args.population = args.population or 12
        args.draws = 3
        args.tasks = args.tasks or ["spirals", "friedman1", "breast_cancer"]
    if args.draws < 2:
        parser.error("--draws must be at least 2")
    genomes, suite = population_and_suite(args)
    tables, seconds = measure(genomes, suite, args.draws)
    summary = summarise(tables)
    print_summary(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "tables": [t.tolist() for t in tables]}, f)
    print(json.dumps({"seconds": round(sum(seconds), 1), **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
