"""The static-search control: the best fixed hyperparameters, found with CMA-ES.

Does modulation beat a well-chosen constant? `evolve(..., algorithm="static")`
answers with the budget, draws, fitness and selection of an agent's evolution
but no modulation: it searches the best *fixed* hyperparameters of the agent's
base (Nm-Adam: learning rate, beta_1, beta_2, epsilon; Nm-SGD: learning rate,
momentum), one value each, the same for every tensor at every step.

* **Where it searches.** A candidate is a position in `[0, 1]^n`, one
  coordinate per hyperparameter, mapped onto the task's range as the AGRN's
  outputs are (`NeuromodulatedOptimizer._outputs_to_hyperparameters`), on the
  scales of the task's output set (`keras_neuromod.outputs.values_at`: log,
  complement_log or linear); a collapsed range gives its value. The centre of
  the box is then, with the ``"centred"`` output set, Keras's default of the
  base. The values are rounded to float32 (what the optimizers compute with),
  inside the range.
* **How.** CMA-ES (DEAP's `deap.cma.Strategy`, lambda = the population, mu =
  lambda / 2, superlinear weights) starts at the centre of the box with a step
  size of `INITIAL_SIGMA`. Samples outside the box are clipped to it and the
  clipped positions are what is evaluated and what the strategy learns from
  (repair). The strategy draws from a numpy generator of its own (seeded from
  the run's seed, on a stream apart from the run's generator), not from numpy's
  global one; its whole state (mean, step size, paths, covariance and its
  eigen-decomposition, generator state) is plain JSON in the checkpoint, so
  that a resumed run ends exactly as an uninterrupted one. This machinery is
  `keras_neuromod.evolution.cmaes.BoxCMAES`, which the CMA-ES search of genome
  tags (`evolve(..., algorithm="cmaes")`) shares.
* **How it is scored.** A candidate trains through the "frozen" ablation of
  the base's optimizer (`keras_neuromod.optimizers.ablation`), whose per-tensor
  values are an optimizer variable: the vectorized trainings take a population
  of hyperparameter vectors where they take genomes, batched as agents are
  (`TrainingProgram`), on the generation's suite instances, scored against the
  same baseline (`SuiteEvaluator`).
* **What it gives.** The chosen candidate is written as an ordinary agent
  (`static_agent`): its ranges collapsed onto the values, `{name: (v, v)}`, and
  a minimal genome, so that `NmAdam(agent=...)` / `NmSGD(agent=...)` train with
  exactly those values, which is Keras's `Adam` / `SGD` with those settings.
"""

import numpy as np

from keras_neuromod import _fields
from keras_neuromod import bases
from keras_neuromod import outputs as output_sets
from keras_neuromod.agrn import Genome
from keras_neuromod.bases import N_INPUTS
from keras_neuromod.evolution.cmaes import BoxCMAES

__all__ = [
    "FixedHyperparameters",
    "StaticSearch",
    "static_agent",
    "fixed_optimizer",
    "is_candidate",
    "INITIAL_POSITION",
    "INITIAL_SIGMA",
]

# CMA-ES starts at the centre of the box of positions, with a step size of 0.3
# of its side (Hansen's advice: about a third of the search interval).
INITIAL_POSITION = 0.5
INITIAL_SIGMA = 0.3
_CANDIDATE_FIELDS = ("base", "hyperparameters")


def _float32_within(value, lo, hi):
    """`value` as the nearest float32 inside [lo, hi] (a collapsed range: lo itself)."""
    if lo == hi:
        return float(lo)
    rounded = np.float32(min(max(value, lo), hi))
    if float(rounded) > hi:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    elif float(rounded) < lo:
        rounded = np.nextafter(rounded, np.float32(np.inf))
    return float(rounded)


class FixedHyperparameters:
    """Fixed values of a base's hyperparameters: a candidate of the static search.

    Immutable plain data; in JSON ``{"base": "adam", "hyperparameters":
    {"learning_rate": ..., ...}}`` (the form its jobs, checkpoints and hall of
    fame hold).

    Args:
        base: the optimizer base (``"adam"``, ``"sgd"``, ...).
        values: a mapping of every hyperparameter of the base to a number,
            within the base's bounds.
    """

    __slots__ = ("base", "values")
    n_regulatory = 0  # no AGRN: the evolution's record counts 0 regulatory proteins

    def __init__(self, base, values):
        spec = bases.get(base, where="FixedHyperparameters' base")
        if not isinstance(values, dict):
            raise ValueError(
                f"hyperparameters must be a dict of names to numbers, got {type(values).__name__}."
            )
        names = spec.hyperparameters
        if sorted(values) != sorted(names):
            raise ValueError(
                f"hyperparameters must give exactly {list(names)} of the {base!r} base, "
                f"got {sorted(values, key=str)}."
            )
        checked = {
            name: _fields.number(values[name], f"hyperparameters[{name!r}]") for name in names
        }
        spec.check_ranges({name: (value, value) for name, value in checked.items()})
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "values", checked)

    def __setattr__(self, name, value):
        raise AttributeError("FixedHyperparameters is immutable; build a new one instead.")

    @classmethod
    def at(cls, base, positions, ranges=None, outputs=None):
        """The values at `positions` in `[0, 1]^n`, mapped onto `ranges` as the AGRN's outputs are.

        Args:
            base: the optimizer base.
            positions: one number per hyperparameter, in the base's order
                (clipped to [0, 1]).
            ranges: the ranges (None: the output set's defaults).
            outputs: the output set (`keras_neuromod.outputs`) whose scales
                map the positions, and whose defaults complete `ranges`
                (None: ``"centred"``, or the one set a base declares).
        """
        spec = bases.get(base)
        outputs = spec.resolve_outputs(outputs)
        ranges = spec.check_ranges(ranges, outputs=outputs)
        positions = np.clip(np.asarray(positions, np.float64), 0.0, 1.0)
        names = spec.hyperparameters
        if positions.shape != (len(names),):
            raise ValueError(
                f"positions must be {len(names)} numbers ({list(names)}), got shape "
                f"{positions.shape}."
            )
        scales = spec.scales(outputs)
        mapped = output_sets.values_at(
            positions,
            [ranges[name][0] for name in names],
            [ranges[name][1] for name in names],
            [scales[name] for name in names],
            xp=np,
        )
        values = {
            name: _float32_within(float(value), *ranges[name]) for name, value in zip(names, mapped)
        }
        return cls(base, values)

    @property
    def ranges(self):
        """The collapsed ranges `{name: (value, value)}` that fix these values in an optimizer."""
        return {name: (value, value) for name, value in self.values.items()}

    @property
    def vector(self):
        """The values as float32, in the base's hyperparameter order."""
        return np.array(list(self.values.values()), np.float32)

    def to_dict(self):
        return {"base": self.base, "hyperparameters": dict(self.values)}

    @classmethod
    def from_dict(cls, data):
        """Validate and build a candidate from its JSON form (errors name the field)."""
        _fields.fields(data, "A static candidate", _CANDIDATE_FIELDS)
        return cls(data["base"], data["hyperparameters"])

    def __eq__(self, other):
        if not isinstance(other, FixedHyperparameters):
            return NotImplemented
        return self.base == other.base and self.values == other.values

    def __hash__(self):
        return hash((self.base, tuple(self.values.items())))

    def __str__(self):
        return " ".join(f"{name}={value:.4g}" for name, value in self.values.items())

    def __repr__(self):
        return f"FixedHyperparameters({self.base!r}, {self.values!r})"

    def __reduce__(self):
        return (FixedHyperparameters, (self.base, dict(self.values)))


def is_candidate(data):
    """Whether `data` is a static candidate or its JSON form (not a genome)."""
    return isinstance(data, FixedHyperparameters) or (
        isinstance(data, dict) and "hyperparameters" in data
    )


def static_agent(candidate, name, settings=None, provenance=None):
    """The agent file of fixed hyperparameters: collapsed ranges and a minimal genome.

    `NmAdam(agent=...)` (or the base's optimizer) then trains with exactly the
    candidate's values, which is Keras's `Adam` (`SGD`) with those settings.

    Args:
        candidate: the `FixedHyperparameters`.
        name: the agent's name.
        settings: AGRN settings to record (they change nothing here).
        provenance: the agent card's provenance.

    Returns:
        A `keras_neuromod.agents.Agent`.
    """
    from keras_neuromod.agents import Agent

    if not isinstance(candidate, FixedHyperparameters):
        raise TypeError(f"static_agent needs FixedHyperparameters, got {type(candidate).__name__}.")
    genome = Genome.random(N_INPUTS, bases.get(candidate.base).n_outputs, 0, rng=0)
    return Agent(
        name=name,
        base=candidate.base,
        genome=genome,
        ranges=candidate.ranges,
        settings=dict(settings or {}),
        provenance=dict(provenance or {}),
    )


def fixed_optimizer(task, tensors):
    """The task's optimizer under the "frozen" ablation, for `tensors` trainable tensors.

    Its per-tensor values are an optimizer variable (`TrainingProgram` puts a
    candidate's vector into every row) and are clipped to the task's ranges;
    its AGRN, whose output it ignores, has no regulatory protein.

    Args:
        task: a `SuiteTask` (or `FitnessTask`): base, ranges, AGRN settings.
        tensors: the model's count of trainable variables.
    """
    import dataclasses

    from keras_neuromod.evolution.fitness import placeholder_optimizer
    from keras_neuromod.optimizers.ablation import ablate

    placeholder = placeholder_optimizer(dataclasses.replace(task, max_regulatory=0))
    table = np.zeros((tensors, len(placeholder.HYPERPARAMETERS)), np.float32)
    return ablate(placeholder, "frozen", hyperparameters=table)


class StaticSearch(BoxCMAES):
    """CMA-ES over positions in `[0, 1]^n`, one coordinate per hyperparameter of a base.

    The machinery (sampling with clipping, update, JSON state) is `BoxCMAES`'s;
    this class starts it at the centre of the box with `INITIAL_SIGMA` and maps
    positions to `FixedHyperparameters`.

    Args:
        base: the optimizer base (n = its hyperparameter count).
        ranges: the ranges positions map onto (None: the output set's defaults).
        population: lambda, candidates per generation (at least 2).
        rng: the `numpy.random.Generator` the samples are drawn from.
        outputs: the output set whose scales map the positions
            (`FixedHyperparameters.at`; None: ``"centred"``, or the one set a
            base declares).

    Raises:
        ValueError: an unknown base, bad ranges or outputs, or `population`
            less than 2.
    """

    def __init__(self, base, ranges, population, rng, outputs=None):
        spec = bases.get(base)
        dim = len(spec.hyperparameters)
        super().__init__([INITIAL_POSITION] * dim, INITIAL_SIGMA, population, rng)
        self.outputs = spec.resolve_outputs(outputs)
        self.base, self.ranges = base, spec.check_ranges(ranges, self.outputs)

    def candidate(self, position):
        """The `FixedHyperparameters` at `position`."""
        return FixedHyperparameters.at(self.base, position, self.ranges, self.outputs)

    @classmethod
    def from_dict(cls, data, base, ranges, population, where="The static search", outputs=None):
        """Rebuild a search from `to_dict()`.

        Args:
            data: the `to_dict()` form.
            base, ranges, population, outputs: as the constructor takes them.
            where: how error messages name the search.

        Raises:
            ValueError: anything malformed (the message names the field).
        """
        rng = cls._saved_generator(data, where)
        search = cls(base, ranges, population, rng, outputs=outputs)
        return search._restore(data, where)
