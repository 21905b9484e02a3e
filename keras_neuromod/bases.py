"""The optimizer bases an agent can drive, in one registry.

An agent is evolved for one base optimizer, named in its file (``"sgd"``,
``"adam"``). Every base reads the same `N_INPUTS` AGRN inputs per tensor and
sets its own hyperparameters, two output proteins each. A neuromodulated
optimizer class registers itself under its base's name, and its declarations
become the base's: hyperparameters, default ranges, bounds and the names
mapped in log space.

    @bases.register("rmsprop")
    class NmRMSprop(NeuromodulatedOptimizer):
        HYPERPARAMETERS = ("learning_rate", "rho")
        DEFAULT_RANGES = {"learning_rate": (1e-5, 1e-1), "rho": (0.5, 0.999)}
        LOG_SCALE = ("learning_rate",)
        BOUNDS = {"learning_rate": (0.0, float("inf")), "rho": (0.0, 1.0)}
        ...

Agents with ``"base": "rmsprop"`` then load, validate and train. The agent
format reads this registry, never the optimizers' modules, so agents and
optimizers do not import each other; `Base.check_ranges` is the one range
check, used by the optimizers' constructors and the agent files alike.
"""

import collections.abc
import dataclasses
import math

import numpy as np

from keras_neuromod import _fields

__all__ = ["Base", "register", "get", "names", "registered", "INPUT_NAMES", "N_INPUTS"]

# The AGRN inputs of a tensor: these six for the tensor, the same six for the
# tensor of the same kind in the next layer with weights, and a constant 1.0.
INPUT_NAMES = (
    "location",
    "size",
    "mean_abs_weight",
    "std_abs_weight",
    "mean_abs_gradient",
    "std_abs_gradient",
)
N_INPUTS = 2 * len(INPUT_NAMES) + 1

_REGISTRY = {}


@dataclasses.dataclass(frozen=True)
class Base:
    """An optimizer base: its optimizer class and what the agent modulates.

    Attributes:
        name: the base's name in agent files (None for an unregistered class).
        optimizer: the neuromodulated optimizer class.
        hyperparameters: the modulated hyperparameters, in output-protein order.
        default_ranges: name -> `(lo, hi)` used where no range is given.
        bounds: name -> `(lo, hi)` the ranges must stay within.
        log_scale: the names mapped onto their range in log space.
    """

    name: str
    optimizer: type
    hyperparameters: tuple
    default_ranges: dict
    bounds: dict
    log_scale: tuple

    @classmethod
    def of(cls, optimizer, name=None):
        """The base an optimizer class declares (`HYPERPARAMETERS`, `DEFAULT_RANGES`, ...)."""
        return cls(
            name=name,
            optimizer=optimizer,
            hyperparameters=tuple(optimizer.HYPERPARAMETERS),
            default_ranges=dict(optimizer.DEFAULT_RANGES),
            bounds=dict(optimizer.BOUNDS),
            log_scale=tuple(optimizer.LOG_SCALE),
        )

    @property
    def n_outputs(self):
        """The AGRN outputs an agent of this base has: two per hyperparameter."""
        return 2 * len(self.hyperparameters)

    def check_ranges(self, ranges=None):
        """Validate `ranges` and complete them with the defaults.

        Args:
            ranges: a mapping of hyperparameter names to `(lo, hi)` pairs of
                numbers (None: all defaults).

        Returns:
            A dict of every hyperparameter name to its `(lo, hi)` floats.

        Raises:
            ValueError: naming the hyperparameter, for an unknown name, a pair
                that is not two finite numbers with `lo <= hi`, a range that
                leaves its bounds, or a log-scale range reaching 0.
        """
        owner = self.optimizer.__name__
        if ranges is None:
            ranges = {}
        if not isinstance(ranges, collections.abc.Mapping):
            raise ValueError(
                f"ranges must be a dict of hyperparameter names to (lo, hi), got "
                f"{type(ranges).__name__}."
            )
        unknown = sorted(set(ranges) - set(self.hyperparameters), key=str)
        if unknown:
            raise ValueError(
                f"Unknown hyperparameter(s) {unknown} in ranges; "
                f"{owner} modulates {list(self.hyperparameters)}."
            )
        return {
            name: self._check_pair(name, ranges.get(name, self.default_ranges[name]))
            for name in self.hyperparameters
        }

    def _check_pair(self, name, pair):
        """One hyperparameter's range as `(lo, hi)` floats, checked against its bounds."""
        where = f"ranges[{name!r}]"
        if isinstance(pair, np.ndarray):
            pair = pair.tolist()
        if not (
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(_fields.is_number(value) for value in pair)
        ):
            raise ValueError(f"{where} must be a pair (lo, hi) of numbers, got {pair!r:.80}.")
        try:
            lo, hi = float(pair[0]), float(pair[1])
        except OverflowError:
            raise ValueError(f"{where} = {pair!r:.80} is too large for a float.") from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"{where} must be finite with lo <= hi, got ({lo}, {hi}).")
        bound_lo, bound_hi = self.bounds.get(name, (-math.inf, math.inf))
        if lo < bound_lo or hi > bound_hi:
            raise ValueError(
                f"{where} = ({lo}, {hi}) leaves the valid interval "
                f"[{bound_lo}, {bound_hi}] of {name}."
            )
        if name in self.log_scale and lo <= 0 and hi != lo:
            raise ValueError(
                f"{where} is mapped in log space and needs lo > 0 "
                f"(or lo == hi to fix the value), got ({lo}, {hi})."
            )
        return lo, hi


def register(name):
    """Class decorator: register a neuromodulated optimizer as the base `name`.

    The class's declarations are checked (every hyperparameter has a default
    range inside its bounds). A name already taken by another class is
    refused.

    Args:
        name: the base's name, as agent files write it.

    Returns:
        The decorator, which returns the class unchanged.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"An optimizer base's name must be an identifier, got {name!r:.80}.")

    def decorate(optimizer):
        base = Base.of(optimizer, name)
        if not base.hyperparameters:
            raise ValueError(f"{optimizer.__name__} declares no HYPERPARAMETERS.")
        missing = [n for n in base.hyperparameters if n not in base.default_ranges]
        if missing:
            raise ValueError(f"{optimizer.__name__} has no DEFAULT_RANGES for {missing}.")
        base.check_ranges()
        taken = _REGISTRY.get(name)
        if taken is not None and _qualified(taken.optimizer) != _qualified(optimizer):
            raise ValueError(
                f"The optimizer base {name!r} is taken by {_qualified(taken.optimizer)}; "
                f"{_qualified(optimizer)} needs another name."
            )
        _REGISTRY[name] = base
        return optimizer

    return decorate


def _qualified(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def names():
    """The registered bases' names, sorted."""
    return tuple(sorted(_REGISTRY))


def registered():
    """The registered bases: a dict of name -> `Base`."""
    return dict(_REGISTRY)


def get(name, where="The optimizer base"):
    """The registered `Base` called `name`.

    Raises:
        ValueError: for a name no optimizer registered; the message starts
            with `where`.
    """
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    known = " or ".join(repr(n) for n in names()) or "none registered"
    raise ValueError(f"{where} must name a registered optimizer base ({known}), got {name!r:.80}.")
