"""The evidence for an agent on the paper's models: Nm-SGD / Nm-Adam against SGD, Adam and
tuned SGD*, Adam*.

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

This script is the `keras-neuromod compare` command of the installed package
(`keras_neuromod.cli.compare`), flag for flag.

    python examples/compare.py --agent runs/evolve/best_agent.json --quick
    python examples/compare.py --agent nm_adam_digits nm_sgd_digits    # zoo agents
    python examples/compare.py --agent nm_adam_digits --dataset wine   # a task never evolved on
    python examples/compare.py --agent my_agent.json --dataset cifar10 --models A,B,C --epochs 50
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402,F401  (quiets TensorFlow's C++ log before Keras loads)
from keras_neuromod.cli import compare as _compare  # noqa: E402

PROG = "python examples/compare.py"
BASELINES = _compare.BASELINES
QUICK_AXES = _compare.QUICK_AXES
paper_task = _compare.paper_task
labels_of = _compare.labels_of
methods = _compare.methods
plot = _compare.plot


def parse_args(argv=None):
    """The settings from the command line (`keras_neuromod.cli.compare.parse_args`)."""
    return _compare.parse_args(argv, prog=PROG)


def main(argv=None):
    """Run the comparison (`keras_neuromod.cli.compare.main`)."""
    return _compare.main(argv, prog=PROG)


if __name__ == "__main__":
    main()
