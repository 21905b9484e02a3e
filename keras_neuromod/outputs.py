"""Output sets: how an agent's output proteins become hyperparameters.

Each hyperparameter of a tensor comes from a pair of output proteins `(a, b)`:
their normalised difference gives a position `f = (1 + (a - b) / (a + b)) / 2`
in [0, 1] (0.5 when both are 0: a silent agent), which is mapped onto the
hyperparameter's range `(lo, hi)` on the hyperparameter's *scale*:

* ``"linear"``: `x` is interpolated, `x = lo + (hi - lo) f`;
* ``"log"``: `log x` is interpolated, `x = lo (hi / lo) ** f` (needs `lo > 0`),
  so that a learning rate or an epsilon spreads over decades;
* ``"complement_log"``: `log(1 - x)` is interpolated,
  `1 - x = (1 - lo) ((1 - hi) / (1 - lo)) ** f` (needs `hi < 1`), so that
  `1 - x` spreads over decades: a beta or a momentum of 0.9, 0.99 and 0.999
  are equally far apart.

A collapsed range (`lo == hi`) gives exactly `lo` whatever the scale and the
position.

An *output set* names each hyperparameter's range and scale, for every
optimizer base: the bases declare theirs (`OUTPUT_SETS` of `NmAdam` and `NmSGD`,
read by `keras_neuromod.bases`). An agent is evolved with one output set,
named in its file (`settings["outputs"]`):

* ``"paper"`` (`LEGACY`): the ranges of the core paper's setting, learning
  rate and epsilon on log scales, the betas and the momentum linear. A silent
  agent sits in the middle of every range: for Nm-Adam a learning rate of 1e-3,
  but beta_1 0.4995, beta_2 0.75 and epsilon 1e-4, close to a sign-like step.
* ``"centred"`` (`DEFAULT`, the set new agents are evolved with): each range's
  middle is Keras's default of the base, so that an agent's outputs do no harm
  by construction: a silent Nm-Adam agent is Keras's `Adam()` (learning rate
  1e-3 on (1e-5, 0.1), log; beta_1 0.9 on (0, 0.99) and beta_2 0.999 on
  (0.9, 0.99999), complement_log; epsilon 1e-7 on (1e-10, 1e-4), log). Keras's
  `SGD` has no momentum by default, and no bounded map of (0, 0.99) centres on
  0: a silent Nm-SGD agent is the common heavy-ball `SGD(0.01, momentum=0.9)`
  (learning rate on (1e-4, 1), log; momentum on (0, 0.99), complement_log).
* ``"narrow"``: the ``"centred"`` set with the learning rate held within one
  decade of Keras's default either way (Nm-Adam (1e-4, 1e-2), Nm-SGD
  (1e-3, 0.1), log): a silent agent is still Keras's optimizer, and no output
  can move the rate by more than a factor of 10 from it, so that an agent
  cannot wreck a model its training never met by its rate alone (the
  ``"centred"`` set reaches 100 times the default: a rate an agent learned to
  use on small models can stall a larger model's training).

An agent file that names no output set reads ``"paper"`` if its input set
(`keras_neuromod.inputs`) is ``"paper"``, as every shipped agent and every
13-input genome does, and ``"centred"`` otherwise (`resolve`).

The mapping between values and positions is one implementation
(`values_at`, `positions_of`, and the scales' spaces `to_space`,
`from_space`), in `keras.ops` for the optimizers' step and the ablations, or
in numpy (float64) for host code such as the static search; the tests check
it against numpy.
"""

import dataclasses

import numpy as np
from keras import ops

__all__ = [
    "OutputSet",
    "OUTPUT_SETS",
    "DEFAULT",
    "LEGACY",
    "SCALES",
    "get",
    "resolve",
    "check_scale",
    "to_space",
    "from_space",
    "values_at",
    "positions_of",
]

# The scales a hyperparameter is mapped onto its range with (see the module docstring).
SCALES = ("linear", "log", "complement_log")
# Logs are taken of at least this (a collapsed range may sit at 0, or at 1 on complement_log).
_TINY = 1e-30
_LOG_TINY = float(np.log(_TINY))


@dataclasses.dataclass(frozen=True)
class OutputSet:
    """A named mapping of output proteins onto hyperparameters.

    The ranges and scales of each base are the base's declaration
    (`keras_neuromod.bases.Base.output_set`); this names the set.

    Attributes:
        name: the set's name in agent files.
        description: one sentence.
    """

    name: str
    description: str = ""


PAPER = OutputSet(
    "paper",
    "The core paper's ranges: learning rate and epsilon on log scales, the betas and the "
    "momentum linear; a silent agent sits mid-range.",
)
CENTRED = OutputSet(
    "centred",
    "Every range centred on Keras's default of the base (betas and momentum on "
    "complement_log scales): a silent agent is Keras's optimizer.",
)

NARROW = OutputSet(
    "narrow",
    "The centred set with the learning rate within one decade of Keras's default either "
    "way: a silent agent is Keras's optimizer, and no agent moves the rate by more than 10x.",
)

OUTPUT_SETS = {PAPER.name: PAPER, CENTRED.name: CENTRED, NARROW.name: NARROW}
DEFAULT = CENTRED.name  # new agents
LEGACY = PAPER.name  # agent files of the paper's input set that name no output set


def get(name):
    """The `OutputSet` called `name`.

    Args:
        name: an output set's name.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if isinstance(name, str) and name in OUTPUT_SETS:
        return OUTPUT_SETS[name]
    raise ValueError(f"Unknown output set {name!r:.80}; choose one of {sorted(OUTPUT_SETS)}.")


def resolve(outputs, inputs):
    """The output set an agent reads: `outputs` if given, else the default for its inputs.

    Args:
        outputs: the output set's name, or None where the agent names none.
        inputs: the name of the agent's input set (`keras_neuromod.inputs`).

    Returns:
        `outputs`, checked; without it ``"paper"`` for the paper's input set
        (`keras_neuromod.inputs.LEGACY`), ``"centred"`` for any other.
    """
    from keras_neuromod import inputs as input_sets

    if outputs is None:
        return LEGACY if inputs == input_sets.LEGACY else DEFAULT
    return get(outputs).name


def check_scale(scale, where="scale"):
    """`scale` if it is one of `SCALES`.

    Args:
        scale: the scale's name.
        where: how error messages name it.

    Raises:
        ValueError: for anything else, listing the scales.
    """
    if isinstance(scale, str) and scale in SCALES:
        return scale
    raise ValueError(f"{where} must be one of {list(SCALES)}, got {scale!r:.80}.")


def _masks(scales):
    """Boolean numpy masks of the log and the complement_log columns."""
    scales = tuple(check_scale(scale) for scale in scales)
    return (
        np.array([scale == "log" for scale in scales]),
        np.array([scale == "complement_log" for scale in scales]),
    )


def _floats(array):
    """`array` as a numpy float array (float64 unless it is floating already)."""
    array = np.asarray(array)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def _host(xp):
    """Whether `xp` is numpy (host arrays in float64), not `keras.ops`."""
    return xp is np


def to_space(values, scales, xp=ops):
    """Hyperparameter values in the space their scales interpolate.

    `x` for ``"linear"``, `log x` for ``"log"``, `log(1 - x)` for
    ``"complement_log"`` (logs of at least 1e-30, so that 0 on a log scale and
    1 on a complement_log scale stay finite).

    Args:
        values: `[..., n]` values, one column per hyperparameter.
        scales: the `n` columns' scales.
        xp: `keras.ops` (tensors) or `numpy` (arrays).

    Returns:
        `[..., n]`, in the dtype of `values` (float64 for numpy numbers).
    """
    log, complement = _masks(scales)
    if _host(xp):
        values = _floats(values)
    logged = xp.log(xp.maximum(values, _TINY))
    # log1p keeps the precision of a small x; 1 (log1p gives -inf) is read as 1 - 1e-30
    with np.errstate(divide="ignore"):
        complemented = xp.maximum(xp.log1p(-xp.minimum(values, 1.0)), _LOG_TINY)
    return xp.where(log, logged, xp.where(complement, complemented, values))


def from_space(space, scales, xp=ops):
    """The values at points of the space their scales interpolate (`to_space`'s inverse).

    Args:
        space: `[..., n]` points, one column per hyperparameter.
        scales: the `n` columns' scales.
        xp: `keras.ops` (tensors) or `numpy` (arrays).

    Returns:
        `[..., n]` values.
    """
    log, complement = _masks(scales)
    if _host(xp):
        space = _floats(space)
    # the exponentials see only their own columns, so that no other column overflows
    exponential = xp.exp(xp.where(log, space, 0.0))
    complemented = -xp.expm1(xp.where(complement, space, 0.0))
    return xp.where(log, exponential, xp.where(complement, complemented, space))


def _ends(lo, hi, scales, xp):
    """The ranges' ends, and their points in the scales' space (host constants).

    The points are computed in float64 from the ends as given and rounded once
    (to float32 for `keras.ops`): `1 - 0.99999` rounded to float32 first would
    be off by 0.1 %.
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    start, stop = to_space(lo, scales, np), to_space(hi, scales, np)
    dtype = np.float64 if _host(xp) else np.float32
    return tuple(array.astype(dtype) for array in (lo, hi, start, stop))


def values_at(positions, lo, hi, scales, xp=ops):
    """The hyperparameters at `positions` in [0, 1], mapped onto `[lo, hi]` by their scales.

    Args:
        positions: `[..., n]` positions, one column per hyperparameter (the
            fraction of the output proteins: 0.5 for a silent agent).
        lo, hi: the `n` ranges' ends (numbers, best not rounded to float32).
        scales: the `n` ranges' scales (`SCALES`).
        xp: `keras.ops` (tensors, in float32 as the optimizers compute) or
            `numpy` (float64, for host code).

    Returns:
        `[..., n]` values within `[lo, hi]`; a collapsed range (`lo == hi`)
        gives exactly `lo`.
    """
    lo, hi, start, stop = _ends(lo, hi, scales, xp)
    if _host(xp):
        positions = np.asarray(positions, np.float64)
    value = from_space(start + (stop - start) * positions, scales, xp)
    # a single-valued range gives exactly its value (exp(log(x)) may not)
    return xp.where(lo == hi, lo, xp.clip(value, lo, hi))


def positions_of(values, lo, hi, scales, xp=ops):
    """The positions in [0, 1] of hyperparameter values (`values_at`'s inverse).

    Args:
        values: `[..., n]` values, one column per hyperparameter (clipped to
            their ranges).
        lo, hi: the `n` ranges' ends.
        scales: the `n` ranges' scales (`SCALES`).
        xp: `keras.ops` (tensors) or `numpy` (arrays, float64).

    Returns:
        `[..., n]` positions; 0.5 for a collapsed range, whose every position
        gives its value.
    """
    lo, hi, start, stop = _ends(lo, hi, scales, xp)
    width = stop - start
    if _host(xp):
        values = np.asarray(values, np.float64)
    space = to_space(xp.clip(values, lo, hi), scales, xp)
    position = (space - start) / np.where(width == 0, 1.0, width)
    return xp.where(width == 0, 0.5, xp.clip(position, 0.0, 1.0))
