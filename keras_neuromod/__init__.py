"""keras_neuromod: neuromodulated learning for Keras 3.

The public API:

* `Genome`: the genome of an artificial gene regulatory network; `agrn` holds
  its dynamics (`keras_neuromod.agrn.run` drives one AGRN with inputs).
* `datasets`: the core paper's data sets by name (`datasets.load`: the bundled
  digits and wine, CIFAR through tensorflow-datasets), as `FitnessTask` stores them.
* `NmSGD`, `NmAdam`: the neuromodulated optimizers (`keras_neuromod.optimizers`).
* `models`: the paper's architectures A, B, C and an MLP, for any input shape
  (`models.build`, by the names `FitnessTask` stores).
* `tasks`: the suite of small offline training tasks (`tasks.get`), each with
  its data, small models of its own and budget, in six families (images,
  tabular, signals, sequences, regression, forecasting), some held out from
  evolution.
* `layers`: switchable, plastic (Backpropamine) and ENU layers; `switching`
  trains a network on two tasks through a fixed weight-space transform.
* `agents`: the agent format (`Agent`); `bases`: the registry of the optimizer
  bases an agent can drive (name -> optimizer class and its hyperparameters);
  `inputs`: the input sets an agent reads (the core paper's, and "sensing");
  `outputs`: the output sets that map its outputs onto hyperparameters (the
  core paper's ranges, and "centred" on Keras's defaults).
* `zoo`: evolved agents shared as JSON files, loaded by name.
* `evolution` (imported on demand): GRNEAT on DEAP and evolution strategies.
* `callbacks` (imported on demand): `ModulationTracer`, `TrainingHorizon`.
* `evidence` (imported on demand): paired comparisons of optimizers over seeds,
  tuned baselines, and verdicts with their intervals.
"""

__version__ = "0.2.0"

# `keras-neuromod` and `python -m keras_neuromod` load TensorFlow quietly
# (a library import is left as is)
from keras_neuromod.cli import _startup as _cli_startup  # noqa: E402,F401  isort: skip

from keras_neuromod import agents
from keras_neuromod import agrn
from keras_neuromod import bases
from keras_neuromod import datasets
from keras_neuromod import inputs
from keras_neuromod import layers
from keras_neuromod import models
from keras_neuromod import outputs
from keras_neuromod import switching
from keras_neuromod import tasks
from keras_neuromod import zoo
from keras_neuromod.agrn import Genome
from keras_neuromod.optimizers import NmAdam
from keras_neuromod.optimizers import NmSGD

__all__ = [
    "Genome",
    "NmAdam",
    "NmSGD",
    "agents",
    "agrn",
    "bases",
    "datasets",
    "inputs",
    "layers",
    "models",
    "outputs",
    "switching",
    "tasks",
    "zoo",
    "__version__",
]
