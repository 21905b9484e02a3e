"""keras_neuromod: neuromodulated learning for Keras 3.

The public API:

* `Genome`, `run`: the artificial gene regulatory network (`keras_neuromod.agrn`).
* `datasets`: the bundled digits data set and CIFAR through tensorflow-datasets.
* `models`: the paper's architectures A, B, C and an MLP, for any input shape.
"""

__version__ = "0.1.0"

from keras_neuromod import agrn
from keras_neuromod import datasets
from keras_neuromod import models
from keras_neuromod.agrn import Genome
from keras_neuromod.agrn import run

__all__ = ["Genome", "run", "agrn", "datasets", "models", "__version__"]
