"""The CMA-ES search: the real-valued tags of an AGRN genome of fixed topology.

GRNEAT grows and reshapes its genomes; `evolve(..., algorithm="cmaes")` keeps
the topology fixed and searches only the numbers: every tag of every protein,
and the AGRN's beta and delta, with CMA-ES. It answers whether a genome's
numbers, tuned by a strong continuous optimiser, do what GRNEAT's structural
search does, with the same budget, draws, fitness and selection.

* **Where it searches.** A candidate is a genome of the task's `n_inputs` and
  `n_outputs` proteins and a fixed number of regulatory proteins (`evolve`'s
  `cmaes_regulatory`, `DEFAULT_REGULATORY` unless given). A position in
  `[0, 1]^d`, `d = 3 * (n_inputs + n_outputs + n_regulatory) + 2`, is the
  identifiers, the enhancers and the inhibitors of every protein (tags lie in
  [0, 1] already), then beta and delta, mapped linearly onto
  `agrn.BETA_RANGE` and `agrn.DELTA_RANGE` (`genome_at`; `position_of` is
  its inverse). The input proteins' identifiers and the output proteins'
  enhancers and inhibitors act on nothing (inputs are never updated, outputs
  regulate nothing), so those coordinates leave the fitness as it is; they are
  kept so that every genome of the topology is a position and back.
* **Where it starts.** At a *silent* genome (`silent_genome`): random tags
  (`Genome.random`) in which the two output proteins of each hyperparameter's
  pair share one identifier. Their dynamics are then the same, both proteins
  agree at every step, and every hyperparameter sits in the middle of its
  range: with the ``"centred"`` output set, Keras's default of the base. The
  search thus starts from "do no harm" and moves away only as far as the
  fitness rewards it. The step size starts at `TAG_SIGMA`.
* **How.** CMA-ES with the static search's machinery (`BoxCMAES`, shared with
  `keras_neuromod.evolution.static.StaticSearch`): DEAP's `deap.cma.Strategy`,
  lambda = the population, mu = lambda / 2, superlinear weights; samples
  outside the box are clipped to it and the clipped positions are what is
  evaluated and what the strategy learns from (repair). The strategy draws the
  start and its samples from a numpy generator of its own (seeded from the
  run's seed, on a stream apart from the run's generator); its whole state is
  plain JSON in the checkpoint, so that a resumed run ends exactly as an
  uninterrupted one.
* **How it is scored.** The candidates are genomes: they are evaluated as
  GRNEAT's are (the backend trains the genome dicts), on a one-data-set
  `FitnessTask`, a `SuiteTask` or a custom fitness function, and the hall of
  fame, the selection on a validation draw and the agent file are those of an
  evolution.
"""

import numpy as np
from deap import cma

from keras_neuromod import _fields
from keras_neuromod.agrn import BETA_RANGE
from keras_neuromod.agrn import DELTA_RANGE
from keras_neuromod.agrn import MAX_PROTEINS
from keras_neuromod.agrn import Genome

__all__ = [
    "BoxCMAES",
    "TagSearch",
    "dimension",
    "genome_at",
    "position_of",
    "silent_genome",
    "DEFAULT_REGULATORY",
    "TAG_SIGMA",
]

# The regulatory proteins of the searched genomes, unless `evolve(cmaes_regulatory=...)`
# says: the size the shipped agents have (9 and 18), well inside GRNEAT's max_regulatory (32).
DEFAULT_REGULATORY = 8
# The initial step size, 0.1 of the box's side: the start is a deliberate prior (a silent
# genome), not an unknown point, so the first samples stay near it (the identifiers of an
# output pair drift apart by about 0.14, a mild modulation) and few coordinates hit the
# box's faces. Hansen's third of the interval (the static search's 0.3) would make the
# first generation nearly random genomes. CMA-ES widens the step where progress asks.
TAG_SIGMA = 0.1

_SEARCH_FIELDS = ("centroid", "sigma", "pc", "ps", "C", "B", "diagD", "update_count", "rng_state")


class _Point(list):
    """A position and its fitness, as DEAP's `cma.Strategy.update` reads them."""

    def __init__(self, position, fitness):
        super().__init__(float(v) for v in position)
        self.fitness = float(fitness)


class BoxCMAES(cma.Strategy):
    """DEAP's CMA-ES over positions in `[0, 1]^n`, seeded, its whole state in JSON.

    The machinery of the static and the tag searches; a subclass maps positions
    to candidates (`candidate`) and rebuilds itself from its JSON form
    (`from_dict`, with `_saved_generator` and `_restore`).

    Args:
        centroid: the start, a position in `[0, 1]^n`.
        sigma: the initial step size.
        population: lambda, candidates per generation (at least 2).
        rng: the `numpy.random.Generator` the samples are drawn from.

    Raises:
        ValueError: `population` is not an integer of at least 2.
    """

    def __init__(self, centroid, sigma, population, rng):
        population = _fields.integer(population, "population", minimum=2)
        super().__init__(centroid=centroid, sigma=sigma, lambda_=population)
        self.rng = rng

    def ask(self):
        """This generation's positions: float64 `[lambda, n]`, clipped to the box."""
        z = self.rng.standard_normal((self.lambda_, self.dim))
        return np.clip(self.centroid + self.sigma * np.dot(z, self.BD.T), 0.0, 1.0)

    def generate(self, ind_init):
        """DEAP's interface: `ind_init(position)` for each position of `ask`."""
        return [ind_init(position) for position in self.ask()]

    def tell(self, positions, fitnesses):
        """Update the strategy from the positions asked and their fitnesses (maximised).

        Raises:
            ValueError: not `lambda` positions and fitnesses.
        """
        if len(positions) != self.lambda_ or len(fitnesses) != self.lambda_:
            raise ValueError(
                f"tell needs {self.lambda_} positions and fitnesses, got "
                f"{len(positions)} and {len(fitnesses)}."
            )
        self.update([_Point(p, f) for p, f in zip(positions, fitnesses)])

    def to_dict(self):
        """The whole state as plain JSON: the strategy's arrays and the generator's state."""
        return {
            "centroid": self.centroid.tolist(),
            "sigma": float(self.sigma),
            "pc": self.pc.tolist(),
            "ps": self.ps.tolist(),
            "C": self.C.tolist(),
            "B": self.B.tolist(),
            "diagD": self.diagD.tolist(),
            "update_count": int(self.update_count),
            "rng_state": self.rng.bit_generator.state,
        }

    @staticmethod
    def _saved_generator(data, where):
        """The generator of a `to_dict()` form, once its fields are checked.

        Raises:
            ValueError: a field is missing or unknown, or the state is not a
                PCG64 generator's (the message names `where` and the field).
        """
        _fields.fields(data, where, _SEARCH_FIELDS)
        return _fields.generator(data["rng_state"], f"{where}, field 'rng_state'")

    def _restore(self, data, where):
        """Set the strategy's state from a `to_dict()` form; returns the search.

        Raises:
            ValueError: an array is not numbers of the search's shape, or not
                finite, `diagD` or `sigma` is not positive, or `update_count`
                is not a count (the message names `where` and the field).
        """
        n = self.dim

        def at(field):
            return f"{where}, field {field!r}"

        def array(field, shape):
            value = data[field]
            try:
                result = np.array(value, np.float64)
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"{at(field)} must be numbers shaped {list(shape)}.") from None
            if result.shape != shape:
                raise ValueError(
                    f"{at(field)} must be numbers shaped {list(shape)}, got shape "
                    f"{list(result.shape)}."
                )
            if not np.all(np.isfinite(result)):
                raise ValueError(f"{at(field)} must be finite numbers.")
            return result

        self.centroid = array("centroid", (n,))
        self.pc, self.ps = array("pc", (n,)), array("ps", (n,))
        # B in the memory order DEAP's update leaves it (a column selection: Fortran order),
        # so that the products with it round exactly as in an uninterrupted run
        self.C, self.B = array("C", (n, n)), np.asfortranarray(array("B", (n, n)))
        self.diagD = array("diagD", (n,))
        if not np.all(self.diagD > 0):
            raise ValueError(f"{at('diagD')} must be positive (square roots of C's eigenvalues).")
        self.sigma = _fields.number(data["sigma"], at("sigma"))
        if not self.sigma > 0:
            raise ValueError(f"{at('sigma')} must be positive, got {self.sigma!r}.")
        self.update_count = _fields.integer(data["update_count"], at("update_count"))
        self.BD = self.B * self.diagD
        self.cond = float((self.diagD[-1] / self.diagD[0]) ** 2)
        return self


def _counts(n_inputs, n_outputs, n_regulatory):
    """The topology's protein counts, checked: ints, at least 0 (outputs: 1), within MAX_PROTEINS.

    Raises:
        ValueError: a count is not an integer in its range, or the proteins
            add up to more than `agrn.MAX_PROTEINS`.
    """
    n_inputs = _fields.integer(n_inputs, "n_inputs")
    n_outputs = _fields.integer(n_outputs, "n_outputs", minimum=1)
    n_regulatory = _fields.integer(n_regulatory, "n_regulatory")
    limit = MAX_PROTEINS - n_inputs - n_outputs
    if n_regulatory > limit:
        raise ValueError(
            f"n_regulatory must be at most {limit}: with {n_inputs} inputs and {n_outputs} "
            f"outputs, {n_regulatory} regulatory proteins exceed the {MAX_PROTEINS} proteins "
            f"an AGRN may have (keras_neuromod.agrn.MAX_PROTEINS)."
        )
    return n_inputs, n_outputs, n_regulatory


def dimension(n_inputs, n_outputs, n_regulatory):
    """The search's dimension: three tags per protein, and beta and delta.

    Returns:
        `3 * (n_inputs + n_outputs + n_regulatory) + 2`.

    Raises:
        ValueError: the counts are not a genome's (`agrn.MAX_PROTEINS` at most).
    """
    return 3 * sum(_counts(n_inputs, n_outputs, n_regulatory)) + 2


def _onto(fraction, bounds):
    """`fraction` in [0, 1] mapped linearly onto `bounds`, kept inside them."""
    lo, hi = bounds
    return min(max(lo + float(fraction) * (hi - lo), lo), hi)


def _fraction(value, bounds):
    """Where `value` lies in `bounds`, as a fraction in [0, 1]."""
    lo, hi = bounds
    return (float(value) - lo) / (hi - lo)


def genome_at(position, n_inputs, n_outputs, n_regulatory):
    """The genome at `position` in `[0, 1]^d` (`position_of` is its inverse).

    Args:
        position: `d = dimension(n_inputs, n_outputs, n_regulatory)` numbers:
            the identifiers, the enhancers and the inhibitors of every protein
            (inputs, outputs, regulatory proteins), then beta and delta as
            fractions of `agrn.BETA_RANGE` and `agrn.DELTA_RANGE`. Values
            outside [0, 1] are clipped to it.
        n_inputs, n_outputs, n_regulatory: the topology.

    Returns:
        A `Genome`.

    Raises:
        ValueError: the counts are not a genome's, or `position` is not `d`
            finite numbers.
    """
    d = dimension(n_inputs, n_outputs, n_regulatory)
    try:
        position = np.asarray(position, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"A position must be {d} numbers.") from None
    if position.shape != (d,):
        raise ValueError(
            f"A position of a genome of {n_inputs} inputs, {n_outputs} outputs and "
            f"{n_regulatory} regulatory proteins must be {d} numbers, got shape "
            f"{list(position.shape)}."
        )
    if not np.all(np.isfinite(position)):
        raise ValueError("A position must be finite numbers.")
    position = np.clip(position, 0.0, 1.0)
    size = (d - 2) // 3
    identifiers, enhancers, inhibitors = position[: 3 * size].reshape(3, size)
    beta, delta = _onto(position[-2], BETA_RANGE), _onto(position[-1], DELTA_RANGE)
    return Genome(
        n_inputs, n_outputs, n_regulatory, identifiers, enhancers, inhibitors, beta, delta
    )


def position_of(genome):
    """The position of `genome` in `[0, 1]^d`: the inverse of `genome_at`.

    `genome_at(position_of(g), ...)` is `g` with its tags exactly and its beta
    and delta to the rounding of the linear maps.

    Args:
        genome: a `Genome`.

    Returns:
        float64 `[d]`.

    Raises:
        TypeError: `genome` is not a `Genome`.
    """
    if not isinstance(genome, Genome):
        raise TypeError(f"position_of needs a Genome, got {type(genome).__name__}.")
    scalars = [_fraction(genome.beta, BETA_RANGE), _fraction(genome.delta, DELTA_RANGE)]
    return np.clip(np.concatenate([genome.tags.reshape(-1), scalars]), 0.0, 1.0)


def silent_genome(n_inputs, n_outputs, n_regulatory, rng):
    """A random genome whose two output proteins of each pair share one identifier.

    Outputs regulate nothing, and an output's dynamics depend on its identifier
    only: the proteins of a pair (outputs `2k` and `2k + 1`, one
    hyperparameter's) then agree at every step, which puts the hyperparameter
    in the middle of its range (with the ``"centred"`` output set, Keras's
    default). The first protein's identifier is kept; an odd last output has
    no pair and keeps its own.

    Args:
        n_inputs, n_outputs, n_regulatory: the topology.
        rng: a `numpy.random.Generator` (or an int seed) for `Genome.random`.

    Returns:
        A `Genome`.
    """
    genome = Genome.random(n_inputs, n_outputs, n_regulatory, rng=rng)
    identifiers = np.array(genome.identifiers)
    for first in range(n_inputs, n_inputs + n_outputs - 1, 2):
        identifiers[first + 1] = identifiers[first]
    return genome.replace(identifiers=identifiers)


class TagSearch(BoxCMAES):
    """CMA-ES over the tags, beta and delta of genomes of one topology.

    Args:
        n_inputs, n_outputs, n_regulatory: the topology of the candidates.
        population: lambda, candidates per generation (at least 2).
        rng: the `numpy.random.Generator` the start (when `start` is None) and
            the samples are drawn from.
        start: where the search starts: a `Genome` of the topology or its
            position (None: a `silent_genome` drawn from `rng`).

    Raises:
        ValueError: the counts are not a genome's, `population` is less than
            2, or `start` is not of the topology.
    """

    def __init__(self, n_inputs, n_outputs, n_regulatory, population, rng, start=None):
        self.topology = _counts(n_inputs, n_outputs, n_regulatory)
        if start is None:
            start = silent_genome(*self.topology, rng)
        if isinstance(start, Genome):
            if (start.n_inputs, start.n_outputs, start.n_regulatory) != self.topology:
                raise ValueError(
                    f"The start has {start.n_inputs} inputs, {start.n_outputs} outputs and "
                    f"{start.n_regulatory} regulatory proteins; the search's genomes have "
                    f"{self.topology[0]}, {self.topology[1]} and {self.topology[2]}."
                )
            start = position_of(start)
        else:
            start = position_of(genome_at(start, *self.topology))
        super().__init__(start, TAG_SIGMA, population, rng)

    def candidate(self, position):
        """The `Genome` at `position` (`genome_at`)."""
        return genome_at(position, *self.topology)

    @classmethod
    def from_dict(cls, data, n_inputs, n_outputs, n_regulatory, population, where="The search"):
        """Rebuild a search from `to_dict()`.

        Args:
            data: the `to_dict()` form.
            n_inputs, n_outputs, n_regulatory, population: as the constructor
                takes them.
            where: how error messages name the search.

        Raises:
            ValueError: anything malformed (the message names the field).
        """
        rng = cls._saved_generator(data, where)
        centre = np.full(dimension(n_inputs, n_outputs, n_regulatory), 0.5)
        search = cls(n_inputs, n_outputs, n_regulatory, population, rng, start=centre)
        return search._restore(data, where)
