"""The optimizer bases an agent can drive, in one registry.

An agent is evolved for one base optimizer, named in its file (``"sgd"``,
``"adam"``). Every base reads the AGRN inputs of the agent's input set
(`keras_neuromod.inputs`) per tensor and sets its own hyperparameters, two
output proteins each. A neuromodulated optimizer class registers itself under
its base's name, and its declarations become the base's: hyperparameters,
bounds, and the output sets (`keras_neuromod.outputs`) it declares, each a
range and a scale per hyperparameter.

    @bases.register("rmsprop")
    class NmRMSprop(NeuromodulatedOptimizer):
        HYPERPARAMETERS = ("learning_rate", "rho")
        OUTPUT_SETS = {
            "centred": {
                "learning_rate": (1e-5, 1e-1, "log"),  # 1e-3 in the middle
                "rho": (0.0, 0.99, "complement_log"),  # 0.9 in the middle
            },
        }
        BOUNDS = {"learning_rate": (0.0, float("inf")), "rho": (0.0, 1.0)}
        ...

Agents with ``"base": "rmsprop"`` then load, validate and train. A base that
declares one output set uses it for every agent. The agent format reads this
registry, never the optimizers' modules, so agents and optimizers do not
import each other; `Base.check_ranges` is the one range check, used by the
optimizers' constructors and the agent files alike.
"""

import collections.abc
import dataclasses
import functools
import math

import numpy as np

from keras_neuromod import _fields
from keras_neuromod import outputs as output_sets

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
        output_sets: output set name (`keras_neuromod.outputs`) -> hyperparameter
            name -> `(lo, hi, scale)`: the default range of each hyperparameter
            and the scale it is mapped onto its range with.
        bounds: name -> `(lo, hi)` the ranges must stay within.
    """

    name: str
    optimizer: type
    hyperparameters: tuple
    output_sets: dict
    bounds: dict

    @classmethod
    def of(cls, optimizer, name=None):
        """The base an optimizer class declares (`HYPERPARAMETERS`, `OUTPUT_SETS`, `BOUNDS`)."""
        return cls(
            name=name,
            optimizer=optimizer,
            hyperparameters=tuple(optimizer.HYPERPARAMETERS),
            output_sets={
                set_name: dict(declared) for set_name, declared in optimizer.OUTPUT_SETS.items()
            },
            bounds=dict(optimizer.BOUNDS),
        )

    @property
    def n_outputs(self):
        """The AGRN outputs an agent of this base has: two per hyperparameter."""
        return 2 * len(self.hyperparameters)

    def resolve_outputs(self, outputs=None, inputs=None):
        """The name of the output set an agent of this base reads.

        Args:
            outputs: the set's name, or None: the one set the base declares if
                it declares one, else `keras_neuromod.outputs.resolve`'s
                default for the input set `inputs`.
            inputs: the name of the agent's input set: ``"paper"`` resolves to
                the ``"paper"`` output set, any other (or None) to
                ``"centred"``.

        Returns:
            The name of a set the base declares.

        Raises:
            ValueError: for an unknown set, or one the base does not declare.
        """
        if outputs is None and len(self.output_sets) == 1:
            return next(iter(self.output_sets))
        name = output_sets.resolve(outputs, inputs)
        if name not in self.output_sets:
            raise ValueError(
                f"{self.optimizer.__name__} declares no output set {name!r}; it declares "
                f"{sorted(self.output_sets)}."
            )
        return name

    def output_set(self, outputs=None):
        """Hyperparameter name -> `(lo, hi, scale)` of the output set `outputs`.

        Args:
            outputs: the set's name (None: see `resolve_outputs`).
        """
        declared = self.output_sets[self.resolve_outputs(outputs)]
        return {name: tuple(declared[name]) for name in self.hyperparameters}

    def ranges(self, outputs=None):
        """Hyperparameter name -> the default `(lo, hi)` of the output set `outputs`."""
        return {name: (lo, hi) for name, (lo, hi, _) in self.output_set(outputs).items()}

    def scales(self, outputs=None):
        """Hyperparameter name -> its scale (`keras_neuromod.outputs.SCALES`) in `outputs`."""
        return {name: scale for name, (_, _, scale) in self.output_set(outputs).items()}

    def check_ranges(self, ranges=None, outputs=None):
        """Validate `ranges` and complete them with the output set's defaults.

        Args:
            ranges: a mapping of hyperparameter names to `(lo, hi)` pairs of
                numbers (None: all defaults).
            outputs: the output set whose defaults complete the ranges and
                whose scales they are checked against (None: see
                `resolve_outputs`).

        Returns:
            A dict of every hyperparameter name to its `(lo, hi)` floats.

        Raises:
            ValueError: naming the hyperparameter, for an unknown name, a pair
                that is not two finite numbers with `lo <= hi`, a range that
                leaves its bounds, a log-scale range reaching 0 or a
                complement_log range reaching 1 (unless `lo == hi`).
        """
        owner = self.optimizer.__name__
        declared = self.output_set(outputs)
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
            name: self._check_pair(
                name, ranges.get(name, declared[name][:2]), scale=declared[name][2]
            )
            for name in self.hyperparameters
        }

    def centred_ranges(self, values, ranges=None, outputs=None):
        """Ranges whose middles are `values`: a silent agent then trains with exactly them.

        Each range (`ranges`' where given, else the output set's) keeps its
        width on its scale and moves so that its middle on that scale is the
        hyperparameter's value in `values` (a learning-rate range of a decade
        either way stays a decade either way, around the new value). A range
        that would leave the hyperparameter's bounds narrows, the same on both
        sides, to fit. An agent's positions around 0.5 then read as deviations
        from `values`: a search can start from a good constant (a static
        search's agent) and look for the modulation around it.

        Args:
            values: hyperparameter name -> the value to centre on (the names
                left out keep their range).
            ranges: name -> `(lo, hi)`, the widths (None: the output set's).
            outputs: the output set whose scales map the ranges (None: see
                `resolve_outputs`).

        Returns:
            A dict of every hyperparameter name to its `(lo, hi)` floats.

        Raises:
            ValueError: for an unknown name, a value that is not a finite
                number strictly inside its bounds (above 0 on a log scale,
                below 1 on a complement_log one), or ranges `check_ranges`
                refuses.
        """
        widths = self.check_ranges(ranges, outputs=outputs)
        scales = self.scales(outputs)
        if not isinstance(values, collections.abc.Mapping):
            raise ValueError(f"values must be a dict of names to numbers, got {values!r:.80}.")
        unknown = sorted(set(values) - set(self.hyperparameters), key=str)
        if unknown:
            raise ValueError(
                f"Unknown hyperparameter(s) {unknown} to centre on; "
                f"{self.optimizer.__name__} modulates {list(self.hyperparameters)}."
            )
        centred = dict(widths)
        for name, value in values.items():
            centred[name] = self._centred_pair(name, value, widths[name], scales[name])
        return self.check_ranges(centred, outputs=outputs)

    def _centred_pair(self, name, value, pair, scale):
        """`pair` moved on `scale` to centre on `value`, narrowed to fit the bounds."""
        where = f"The value of {name} to centre on"
        value = _fields.number(value, where)
        bound_lo, bound_hi = self.bounds.get(name, (-math.inf, math.inf))
        inside = bound_lo < value < bound_hi or (
            scale == "linear" and bound_lo <= value <= bound_hi
        )
        if (
            not inside
            or (scale == "log" and value <= 0)
            or (scale == "complement_log" and value >= 1)
        ):
            raise ValueError(
                f"{where} must lie inside ({bound_lo}, {bound_hi}) on its {scale} scale, "
                f"got {value}."
            )
        space = functools.partial(output_sets.to_space, scales=[scale], xp=np)
        start, stop, centre = (float(space([x])[0]) for x in (*pair, value))
        half = abs(stop - start) / 2
        for bound in (bound_lo, bound_hi):
            if math.isfinite(bound) and not (scale == "log" and bound <= 0):
                half = min(half, abs(centre - float(space([bound])[0])))
        ends = np.array([[centre - half], [centre + half]])
        lo, hi = sorted(float(x) for x in output_sets.from_space(ends, [scale], xp=np)[:, 0])
        return (value, value) if half == 0 else (lo, hi)

    def _check_pair(self, name, pair, scale):
        """One hyperparameter's range as `(lo, hi)` floats, checked against its bounds and scale."""
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
        if scale == "log" and lo <= 0 and hi != lo:
            raise ValueError(
                f"{where} is mapped in log space and needs lo > 0 "
                f"(or lo == hi to fix the value), got ({lo}, {hi})."
            )
        if scale == "complement_log" and hi >= 1 and hi != lo:
            raise ValueError(
                f"{where} is mapped in log(1 - x) space (complement_log) and needs hi < 1 "
                f"(or lo == hi to fix the value), got ({lo}, {hi})."
            )
        return lo, hi


def register(name):
    """Class decorator: register a neuromodulated optimizer as the base `name`.

    The class's declarations are checked: it declares at least one output set
    of `keras_neuromod.outputs`, each giving every hyperparameter a range
    `(lo, hi, scale)` inside its bounds that its scale can map. A name already
    taken by another class is refused.

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
        _check_output_sets(base)
        taken = _REGISTRY.get(name)
        if taken is not None and _qualified(taken.optimizer) != _qualified(optimizer):
            raise ValueError(
                f"The optimizer base {name!r} is taken by {_qualified(taken.optimizer)}; "
                f"{_qualified(optimizer)} needs another name."
            )
        _REGISTRY[name] = base
        return optimizer

    return decorate


def _check_output_sets(base):
    """Check a class's `OUTPUT_SETS` (see `register`), errors naming the set and entry."""
    owner = base.optimizer.__name__
    if not base.output_sets:
        raise ValueError(f"{owner} declares no OUTPUT_SETS.")
    for set_name, declared in base.output_sets.items():
        try:
            output_sets.get(set_name)
        except ValueError as error:
            raise ValueError(f"{owner}.OUTPUT_SETS: {error}") from None
        where = f"{owner}.OUTPUT_SETS[{set_name!r}]"
        missing = [n for n in base.hyperparameters if n not in declared]
        unknown = sorted(set(declared) - set(base.hyperparameters), key=str)
        if missing or unknown:
            raise ValueError(
                f"{where} must give every one of {list(base.hyperparameters)} a range; "
                f"missing {missing}, unknown {unknown}."
            )
        for name in base.hyperparameters:
            entry = declared[name]
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                raise ValueError(f"{where}[{name!r}] must be (lo, hi, scale), got {entry!r:.80}.")
            output_sets.check_scale(entry[2], f"{where}[{name!r}]'s scale")
        try:
            base.check_ranges(outputs=set_name)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None


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
