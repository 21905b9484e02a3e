"""Input sets: what an agent's AGRN reads about each tensor at each step.

An agent is evolved with one input set, named in its file (`settings["inputs"]`);
its genome has one input protein per input. Every input lies in [0, 1].

* ``"paper"``: the 13 inputs of Wilson, Cussat-Blanc, Luga and Harrington,
  "Neuromodulated Learning in Deep Neural Networks" (2018): the layer's location
  and relative size, mean and standard deviation of |w| and of |g| clipped to
  [0, 1], the same six of the same kind of tensor in the next layer with
  weights, and a constant 1. An agent file without the setting reads as this set.
  Typical gradients (|g| from 1e-4 to 1e-2) all read as about 0 here, and weight
  statistics barely move once training has started.
* ``"sensing"`` (`DEFAULT`, the set new agents are evolved with): signals that
  vary where training happens, each tensor on its own (no next-layer inputs):

  - where and what the tensor is: location, log size, and flags for a vector
    (bias), a normalization scale or offset, an embedding table and a recurrent
    kernel (a plain kernel has none of them);
  - weights and gradients on log scales that spread the values users meet over
    [0, 1]: mean |w| (1e-5 to 1), mean |g| (1e-8 to 1), and their ratio
    (1e-6 to 100);
  - the optimizer's own state: the cosine between this step's gradient and the
    momentum before it (0.5 for orthogonal or absent momentum; above 0.5 the
    gradient keeps its direction, below it oscillates), and the gradient's
    trend (a fast against a slow running mean of log10 mean |g|: 0.5 steady,
    below 0.5 falling);
  - time without a horizon: ``tanh(t / tau)`` for tau of 10, 100, 1,000 and
    10,000 updates;
  - progress where the horizon is known (`NeuromodulatedOptimizer.set_horizon`,
    which `keras_neuromod.callbacks.TrainingHorizon` calls from `fit`'s epochs
    and steps): ``t / horizon`` and a flag that the horizon is known (both 0
    when it is not);
  - a constant 1.

  The loss is not among them: a Keras optimizer is given the gradients and
  never the loss, and feeding it from a callback would add a device-to-host
  sync to every step; the gradient's trend stands in for it.

The functions here compute the inputs' scales with `keras.ops`, for the
optimizers, and are checked against numpy in the tests.
"""

import dataclasses

import numpy as np
from keras import ops

__all__ = [
    "InputSet",
    "INPUT_SETS",
    "DEFAULT",
    "LEGACY",
    "get",
    "for_genome",
    "log_unit",
    "TIME_CONSTANTS",
    "TREND_RATES",
]

# Updates after which each time input reaches tanh(1), about 0.76.
TIME_CONSTANTS = (10.0, 100.0, 1000.0, 10000.0)
# Rates of the fast and slow running means of log10 mean |g| (the trend input).
TREND_RATES = (0.1, 0.01)
# Log10 ranges mapped onto [0, 1]: mean |w|, mean |g|, mean |g| / mean |w|.
WEIGHT_DECADES = (-5.0, 0.0)
GRADIENT_DECADES = (-8.0, 0.0)
RATIO_DECADES = (-6.0, 2.0)
# log10(fast / slow) of +-1 (a tenfold change of mean |g|) reaches the ends of [0, 1].
TREND_DECADES = 1.0


@dataclasses.dataclass(frozen=True)
class InputSet:
    """A named list of AGRN inputs.

    Attributes:
        name: the set's name in agent files.
        names: the inputs, in input-protein order.
        description: one sentence.
    """

    name: str
    names: tuple
    description: str = ""

    @property
    def size(self):
        """The number of inputs (the genome's `n_inputs`)."""
        return len(self.names)


_PAPER_TENSOR = (
    "location",
    "size",
    "mean_abs_weight",
    "std_abs_weight",
    "mean_abs_gradient",
    "std_abs_gradient",
)

PAPER = InputSet(
    "paper",
    _PAPER_TENSOR + tuple(f"next_{name}" for name in _PAPER_TENSOR) + ("constant",),
    "The core paper's 13 inputs: the tensor's and the next layer's statistics clipped to [0, 1].",
)

# The tensor-kind flags of the sensing set, in order (a plain kernel has none).
KINDS = ("vector", "normalization", "embedding", "recurrent")

SENSING = InputSet(
    "sensing",
    ("location", "log_size")
    + tuple(f"is_{kind}" for kind in KINDS)
    + (
        "log_mean_abs_weight",
        "log_mean_abs_gradient",
        "log_gradient_to_weight",
        "gradient_momentum_cosine",
        "gradient_trend",
    )
    + tuple(f"time_{int(tau)}" for tau in TIME_CONSTANTS)
    + (
        "progress",
        "horizon_known",
        "constant",
    ),
    "Log-scaled weight and gradient statistics, optimizer state, tensor kind, time and "
    "progress, per tensor.",
)

INPUT_SETS = {PAPER.name: PAPER, SENSING.name: SENSING}
DEFAULT = SENSING.name  # new agents
LEGACY = PAPER.name  # agent files that name no input set


def get(name):
    """The `InputSet` called `name`.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if isinstance(name, str) and name in INPUT_SETS:
        return INPUT_SETS[name]
    raise ValueError(f"Unknown input set {name!r:.80}; choose one of {sorted(INPUT_SETS)}.")


def for_genome(n_inputs):
    """The name of the input set with `n_inputs` inputs (for a bare genome).

    Raises:
        ValueError: no set, or more than one, has that many inputs.
    """
    matching = [s.name for s in INPUT_SETS.values() if s.size == n_inputs]
    if len(matching) != 1:
        sizes = {s.name: s.size for s in INPUT_SETS.values()}
        raise ValueError(
            f"A genome with {n_inputs} inputs matches no single input set ({sizes}); "
            "name the set with `inputs=`."
        )
    return matching[0]


def log_unit(value, decades):
    """`log10(value)` mapped from `decades = (lo, hi)` onto [0, 1], clipped.

    0 (and below) reads as 0; NaN reads as 1, as a NaN statistic does in the
    paper's set.
    """
    lo, hi = decades
    logged = ops.log(ops.maximum(value, 1e-30)) / np.log(10.0)
    unit = ops.clip((logged - lo) / (hi - lo), 0.0, 1.0)
    return ops.where(ops.isnan(value), 1.0, unit)


def kind_flags(path, shape):
    """The `KINDS` flags of a variable, from its path and shape (float32 [4])."""
    name = path.rsplit("/", 1)[-1]
    layer = path.rsplit("/", 1)[0].lower() if "/" in path else ""
    normalization = name in ("gamma", "beta", "scale", "offset") or "normalization" in layer
    flags = {
        "vector": len(shape) <= 1 and not normalization,
        "normalization": normalization,
        "embedding": name in ("embeddings", "embedding"),
        "recurrent": "recurrent" in name,
    }
    return np.array([flags[kind] for kind in KINDS], np.float32)


def log_size(size):
    """log10 of a tensor's element count over 7 (10 million elements read 1), clipped."""
    return float(np.clip(np.log10(max(size, 1)) / 7.0, 0.0, 1.0))
