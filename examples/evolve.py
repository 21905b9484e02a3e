"""Evolve a neuromodulatory agent with GRNEAT, over real `model.fit` runs.

The story: each generation draws one of the paper's architectures and an
initialisation seed, and every agent of the population trains that model with
Nm-Adam (or Nm-SGD) from the same start; its fitness is the final training
accuracy. GRNEAT breeds the next population from the fittest, species by
species. After every generation the checkpoint is written, so an interrupted run
continues with `--resume` and ends exactly where an uninterrupted one would.

    python examples/evolve.py                        # quick: digits, a few minutes on 2 cores
    python examples/evolve.py --quick --task cifar10 # the quick settings on another data set
    python examples/evolve.py --population 50 --generations 50 --epochs 20 \\
        --models A,B,C --task cifar10 --out runs/cifar # the paper's setting
    python examples/evolve.py --backend ray --vectorized --ray-address auto   # on a Ray cluster
    python examples/evolve.py --suite --population 64 --generations 200 \
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

This script is the `keras-neuromod evolve` command of the installed package
(`keras_neuromod.cli.evolve`), flag for flag, with its own name in the
reproducing command the agent records.

A run holds a lock on `--out` (`OUT/.lock`) while it lasts: a second run on the
same folder meanwhile exits with an error naming the process that holds it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402,F401  (quiets TensorFlow's C++ log before Keras loads)
from keras_neuromod.cli import evolve as _evolve  # noqa: E402

PROG = "python examples/evolve.py"
QUICK = _evolve.QUICK
QUICK_SUITE = _evolve.QUICK_SUITE
SEARCHES = _evolve.SEARCHES
reproducing_command = _evolve.reproducing_command
select_agent = _evolve.select_agent
provenance = _evolve.provenance
write_logbook = _evolve.write_logbook
plot_fitness = _evolve.plot_fitness
print_summary = _evolve.print_summary


def parse_args(argv=None):
    """The settings from the command line (`keras_neuromod.cli.evolve.parse_args`)."""
    return _evolve.parse_args(argv, prog=PROG)


def main(argv=None):
    """Run the evolution (`keras_neuromod.cli.evolve.main`)."""
    return _evolve.main(argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(_evolve.run(prog=PROG))
