"""GRNEAT: the genetic operators and speciation for AGRN genomes.

GRNEAT (Cussat-Blanc, Harrington and Pollack, 2015) is NEAT's idea applied to
gene regulatory networks: proteins are aligned by their tags for crossover, and
the population is split into species of similar genomes that reproduce
separately, so that new structure gets time to be tuned before it competes.

This module holds all of GRNEAT: the operators, speciation and one generation's
reproduction (`speciate`, `dissolve_small_species`, `adapt_thresholds`, then
`reproduce`); `keras_neuromod.evolution.engine` only runs the loop, the
evaluations and the checkpoint. Every function takes the
genomes, the `GRNEATConfig` and a `numpy.random.Generator`, and returns new genomes
(or species); one seeded generator drives a whole evolution, which makes it
reproducible result for result.

These are plain functions under their own names, not DEAP toolbox operators, whose
contracts they do not follow: `crossover` makes one child of two parents (GRNEAT's
aligned crossover), `mutate` returns the new genome, and `tournament` the index of
the winner. DEAP keeps the parts whose contracts the engine honours: individuals
carrying a `deap.base.Fitness`, the `HallOfFame`, the `Logbook` and `Statistics`.

Departures from the reference library, pyGRN (constants and details in the
repository's `docs/design.md`):
crossover copies the aligned gene it chose (the reference indexes the wrong one),
the genome distance is symmetric, and there is no global configuration.
"""

import dataclasses
import math

import numpy as np

from keras_neuromod import _fields
from keras_neuromod.agrn import BETA_RANGE
from keras_neuromod.agrn import DELTA_RANGE
from keras_neuromod.agrn import MAX_PROTEINS
from keras_neuromod.agrn import Genome

__all__ = [
    "GRNEATConfig",
    "protein_distance",
    "genome_distance",
    "mutate_add",
    "mutate_delete",
    "mutate_modify",
    "mutate",
    "crossover",
    "initial_population",
    "random_population",
    "Species",
    "speciate",
    "adapt_thresholds",
    "offspring_counts",
    "tournament",
    "dissolve_small_species",
    "widen_fitness_range",
    "breed",
    "next_species",
    "reproduce",
]


# GRNEATConfig's integer constants and their minimums, in the order they are checked.
_COUNT_MINIMUMS = {
    "population": 2,
    "tournament_size": 1,
    "max_tries": 1,
    "initial_group": 1,
    "min_species_size": 1,
    "initial_regulatory": 0,
    "max_regulatory": 0,
}

# GRNEATConfig's real constants and the closed ranges they must lie in.
_RANGES = {
    **dict.fromkeys(
        (
            "crossover_rate",
            "mutation_rate",
            "add_rate",
            "delete_rate",
            "modify_rate",
            "crossover_threshold",
            "species_threshold",
            "threshold_step",
        ),
        (0, 1),
    ),
    **dict.fromkeys(("id_weight", "enh_weight", "inh_weight"), (0, math.inf)),
}


@dataclasses.dataclass(frozen=True)
class GRNEATConfig:
    """The constants of GRNEAT; the defaults are the reference library's.

    Args:
        population: individuals per generation.
        tournament_size: contestants of a tournament (drawn with replacement).
        crossover_rate: share of a species' offspring made by crossover.
        mutation_rate: share made by mutation (one elite fills the rest).
        add_rate, delete_rate, modify_rate: choice of mutation operator.
        max_tries: tries when an operator cannot apply (deleting from a genome
            with no regulatory protein, adding past `max_regulatory`), and for
            drawing two distinct parents.
        crossover_threshold: largest protein distance at which two regulatory
            genes are aligned in crossover.
        initial_regulatory: regulatory proteins of the initial genomes.
        initial_group: the initial population is made of groups of this size,
            one random genome and its single modify-mutants.
        species_threshold: the starting distance threshold of a species.
        threshold_step: how much a species' threshold moves each generation
            towards the average species size.
        threshold_bounds: the threshold is kept inside these bounds.
        min_species_size: smaller species are dissolved.
        max_regulatory: the most regulatory proteins a genome may have
            (**ours**: bounds the padded size of the AGRN so that evaluating a
            new genome never recompiles the training step). At most
            `keras_neuromod.agrn.MAX_PROTEINS` (1024) less the inputs and
            outputs; the optimizers refuse a larger padded size.
        id_weight, enh_weight, inh_weight: weights of the protein distance.
    """

    population: int = 50
    tournament_size: int = 3
    crossover_rate: float = 0.25
    mutation_rate: float = 0.75
    add_rate: float = 0.5
    delete_rate: float = 0.25
    modify_rate: float = 0.25
    max_tries: int = 10
    crossover_threshold: float = 0.15
    initial_regulatory: int = 1
    initial_group: int = 10
    species_threshold: float = 0.15
    threshold_step: float = 0.01
    threshold_bounds: tuple = (0.03, 0.5)
    min_species_size: int = 5
    max_regulatory: int = 32
    id_weight: float = 0.75
    enh_weight: float = 0.125
    inh_weight: float = 0.125

    def __post_init__(self):
        """Check every constant; store the counts as ints and the bounds as a float pair."""
        self._check_counts()
        self._check_rates()
        lo, hi = self._checked_threshold_bounds()
        if self.initial_regulatory > self.max_regulatory:
            raise ValueError("GRNEATConfig.initial_regulatory exceeds max_regulatory.")
        object.__setattr__(self, "threshold_bounds", (float(lo), float(hi)))

    def _check_counts(self):
        """Check the integer constants against their minimums and store them as ints."""
        for name, minimum in _COUNT_MINIMUMS.items():
            value = _fields.integer(getattr(self, name), f"GRNEATConfig.{name}", minimum)
            object.__setattr__(self, name, value)
        if self.max_regulatory > MAX_PROTEINS:
            raise ValueError(
                f"GRNEATConfig.max_regulatory must be at most {MAX_PROTEINS} "
                f"(keras_neuromod.agrn.MAX_PROTEINS, the most proteins an AGRN may have), "
                f"got {self.max_regulatory}."
            )

    def _check_rates(self):
        """Check the rates, thresholds and weights lie in their ranges and the rates' sums."""
        for name, (lo, hi) in _RANGES.items():
            value = getattr(self, name)
            if not (_finite(value) and lo <= value <= hi):
                raise ValueError(
                    f"GRNEATConfig.{name} must lie in [{lo}, {hi}], got {value!r:.80}."
                )
        if abs(self.add_rate + self.delete_rate + self.modify_rate - 1.0) > 1e-9:
            raise ValueError("GRNEATConfig: add_rate + delete_rate + modify_rate must be 1.")
        if self.crossover_rate + self.mutation_rate > 1.0 + 1e-9:
            raise ValueError("GRNEATConfig: crossover_rate + mutation_rate must be at most 1.")

    def _checked_threshold_bounds(self):
        """The threshold bounds, checked to be a finite pair 0 <= lo <= hi."""
        bounds = self.threshold_bounds
        if not (
            isinstance(bounds, (tuple, list))
            and len(bounds) == 2
            and all(_finite(v) for v in bounds)
            and 0 <= bounds[0] <= bounds[1]
        ):
            raise ValueError(
                f"GRNEATConfig.threshold_bounds must be 0 <= lo <= hi, got {bounds!r:.80}."
            )
        return bounds

    def to_dict(self):
        data = dataclasses.asdict(self)
        data["threshold_bounds"] = list(self.threshold_bounds)
        return data

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ValueError(
                f"A GRNEATConfig must be a JSON object (dict), got {type(data).__name__}."
            )
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown GRNEATConfig field(s) {unknown}.")
        data = dict(data)
        if isinstance(data.get("threshold_bounds"), list):
            data["threshold_bounds"] = tuple(data["threshold_bounds"])
        return cls(**data)


def _finite(value):
    """Whether `value` is an int or float (not a bool) with a finite float value."""
    if not _fields.is_number(value):
        return False
    return math.isfinite(value) if isinstance(value, (float, np.floating)) else abs(value) < 2**1000


# -- distances ---------------------------------------------------------------


def protein_distance(a, i, b, j, config=GRNEATConfig()):
    """Distance between protein i of genome a and protein j of genome b."""
    return (
        config.id_weight * abs(a.identifiers[i] - b.identifiers[j])
        + config.enh_weight * abs(a.enhancers[i] - b.enhancers[j])
        + config.inh_weight * abs(a.inhibitors[i] - b.inhibitors[j])
    )


def _protein_distances(a, rows, b, columns, config):
    """Matrix of protein distances between proteins `rows` of a and `columns` of b."""
    rows, columns = np.asarray(rows, int), np.asarray(columns, int)
    return (
        config.id_weight * np.abs(a.identifiers[rows, None] - b.identifiers[None, columns])
        + config.enh_weight * np.abs(a.enhancers[rows, None] - b.enhancers[None, columns])
        + config.inh_weight * np.abs(a.inhibitors[rows, None] - b.inhibitors[None, columns])
    )


def _fixed_count(genome):
    return genome.n_inputs + genome.n_outputs


def genome_distance(a, b, config=GRNEATConfig()):
    """GRNEAT's distance between two genomes, symmetric and 0 to itself.

    Input and output proteins are compared by index; each regulatory protein
    of the larger genome is matched to its nearest regulatory protein of the
    smaller one (1.0 when the smaller has none); beta and delta add
    `|d beta| / 1.95 + |d delta| / 1.95`; the sum is divided by the larger
    genome's protein count plus 2. Ties in size are broken by comparing the
    genomes' contents, so that the result does not depend on the argument order.
    """
    if _fixed_count(a) != _fixed_count(b) or a.n_inputs != b.n_inputs:
        raise ValueError("Genomes with different input or output counts cannot be compared.")
    if (b.n_regulatory, _order_key(b)) > (a.n_regulatory, _order_key(a)):
        a, b = b, a
    fixed = np.arange(_fixed_count(a))
    total = float(
        np.sum(
            config.id_weight * np.abs(a.identifiers[fixed] - b.identifiers[fixed])
            + config.enh_weight * np.abs(a.enhancers[fixed] - b.enhancers[fixed])
            + config.inh_weight * np.abs(a.inhibitors[fixed] - b.inhibitors[fixed])
        )
    )
    if a.n_regulatory:
        if b.n_regulatory:
            distances = _protein_distances(
                a, np.arange(_fixed_count(a), a.size), b, np.arange(_fixed_count(b), b.size), config
            )
            total += float(distances.min(axis=1).sum())
        else:
            total += float(a.n_regulatory)
    total += abs(a.beta - b.beta) / (BETA_RANGE[1] - BETA_RANGE[0])
    total += abs(a.delta - b.delta) / (DELTA_RANGE[1] - DELTA_RANGE[0])
    return total / (a.size + 2)


def _order_key(genome):
    return (
        genome.beta,
        genome.delta,
        genome.identifiers.tobytes(),
        genome.enhancers.tobytes(),
        genome.inhibitors.tobytes(),
    )


# -- mutation ----------------------------------------------------------------


def mutate_add(genome, rng, config=GRNEATConfig()):
    """Append one random regulatory protein; None at `max_regulatory`."""
    if genome.n_regulatory >= config.max_regulatory:
        return None
    tags = rng.random(3)
    return genome.replace(
        n_regulatory=genome.n_regulatory + 1,
        identifiers=np.append(genome.identifiers, tags[0]),
        enhancers=np.append(genome.enhancers, tags[1]),
        inhibitors=np.append(genome.inhibitors, tags[2]),
    )


def mutate_delete(genome, rng, config=GRNEATConfig()):
    """Remove one random regulatory protein; None when there is none."""
    if genome.n_regulatory == 0:
        return None
    index = int(rng.integers(_fixed_count(genome), genome.size))
    return genome.replace(
        n_regulatory=genome.n_regulatory - 1,
        identifiers=np.delete(genome.identifiers, index),
        enhancers=np.delete(genome.enhancers, index),
        inhibitors=np.delete(genome.inhibitors, index),
    )


def mutate_modify(genome, rng, config=GRNEATConfig()):
    """Redraw one tag of one protein, or beta, or delta, uniformly."""
    target = int(rng.integers(genome.size + 2))
    if target < genome.size:
        field = ("identifiers", "enhancers", "inhibitors")[int(rng.integers(3))]
        values = getattr(genome, field).copy()
        values[target] = rng.random()
        return genome.replace(**{field: values})
    if target == genome.size:
        return genome.replace(beta=rng.uniform(*BETA_RANGE))
    return genome.replace(delta=rng.uniform(*DELTA_RANGE))


def mutate(genome, rng, config=GRNEATConfig()):
    """One mutation: add, delete or modify, by the config's rates.

    An operator that cannot apply is redrawn, up to `max_tries` times; after
    that the genome is returned unchanged.
    """
    for _ in range(config.max_tries):
        draw = rng.random()
        if draw < config.add_rate:
            child = mutate_add(genome, rng, config)
        elif draw < config.add_rate + config.delete_rate:
            child = mutate_delete(genome, rng, config)
        else:
            child = mutate_modify(genome, rng, config)
        if child is not None:
            return child
    return genome


# -- crossover ---------------------------------------------------------------


def _align(parent1, parent2, fixed, rng, config):
    """The aligned regulatory genes of a crossover, each pair's pick by a coin flip.

    Parent 1's regulatory genes, in random order, meet the nearest unused gene
    of parent 2 closer than `crossover_threshold`.

    Returns:
        `(chosen, unaligned1, unused2, given1, given2)`: the `(parent, index)`
        of the picked genes, in order; parent 1's genes left unaligned; parent
        2's left unused; how many genes each parent gave.
    """
    order1 = rng.permutation(np.arange(fixed, parent1.size))
    unused2 = [int(j) for j in rng.permutation(np.arange(fixed, parent2.size))]
    unaligned1, chosen = [], []
    given1 = given2 = 0
    for i in order1:
        i = int(i)
        best, best_distance = None, config.crossover_threshold
        for j in unused2:
            distance = protein_distance(parent1, i, parent2, j, config)
            if distance < best_distance:
                best, best_distance = j, distance
        if best is None:
            unaligned1.append(i)
            continue
        unused2.remove(best)
        if rng.random() < 0.5:
            chosen.append((parent1, i))
            given1 += 1
        else:
            chosen.append((parent2, best))
            given2 += 1
    return chosen, unaligned1, unused2, given1, given2


def crossover(parent1, parent2, rng, config=GRNEATConfig()):
    """GRNEAT's aligned crossover of two genomes.

    Each input and output protein comes from a random parent. Parent 1's
    regulatory genes, in random order, are aligned to the nearest unused gene of
    parent 2 closer than `crossover_threshold`; a coin flip picks which gene of
    an aligned pair the child gets. The unaligned genes of one parent follow:
    parent 1's with probability n1 / (n1 + n2), where n1 and n2 count the
    aligned genes each parent gave (1/2 when none were aligned). Beta and delta
    each come from a random parent. The child is capped at `max_regulatory`.
    """
    fixed = _fixed_count(parent1)
    if fixed != _fixed_count(parent2) or parent1.n_inputs != parent2.n_inputs:
        raise ValueError("Parents with different input or output counts cannot be crossed.")
    from_second = rng.random(fixed) < 0.5
    tags = {}
    for field in ("identifiers", "enhancers", "inhibitors"):
        tags[field] = list(
            np.where(from_second, getattr(parent2, field)[:fixed], getattr(parent1, field)[:fixed])
        )

    chosen, unaligned1, unused2, given1, given2 = _align(parent1, parent2, fixed, rng, config)
    share1 = 0.5 if given1 + given2 == 0 else given1 / (given1 + given2)
    if rng.random() < share1:
        chosen += [(parent1, i) for i in unaligned1]
    else:
        chosen += [(parent2, j) for j in unused2]
    chosen = chosen[: config.max_regulatory]
    for parent, index in chosen:
        for field in tags:
            tags[field].append(getattr(parent, field)[index])
    beta = parent1.beta if rng.random() < 0.5 else parent2.beta
    delta = parent1.delta if rng.random() < 0.5 else parent2.delta
    return Genome(
        parent1.n_inputs,
        parent1.n_outputs,
        len(chosen),
        tags["identifiers"],
        tags["enhancers"],
        tags["inhibitors"],
        beta,
        delta,
    )


def initial_population(n_inputs, n_outputs, rng, config=GRNEATConfig()):
    """Groups of `initial_group`: a random genome and its single modify-mutants."""
    population = []
    while len(population) < config.population:
        founder = Genome.random(n_inputs, n_outputs, config.initial_regulatory, rng=rng)
        group = min(config.initial_group, config.population - len(population))
        population += [mutate_modify(founder, rng, config) for _ in range(group - 1)]
        population.append(founder)
    return population


def random_population(n_inputs, n_outputs, rng, config=GRNEATConfig()):
    """`config.population` independent random genomes, the random-search control.

    Each genome's regulatory protein count is drawn uniformly from
    `config.initial_regulatory` to `config.max_regulatory`, the sizes an
    evolution can reach, so that the control searches the same space.
    """
    low, high = config.initial_regulatory, max(config.initial_regulatory, config.max_regulatory)
    return [
        Genome.random(n_inputs, n_outputs, int(rng.integers(low, high + 1)), rng=rng)
        for _ in range(config.population)
    ]


# -- selection and speciation ------------------------------------------------


def tournament(fitnesses, members, rng, size):
    """Index (into `members`) of the fittest of `size` members drawn with replacement.

    Ties go to the earliest drawn contestant.
    """
    contestants = rng.integers(0, len(members), size)
    best = contestants[0]
    for c in contestants[1:]:
        if fitnesses[members[c]] > fitnesses[members[best]]:
            best = c
    return int(best)


@dataclasses.dataclass
class Species:
    """A species: its representative genome, threshold and current members.

    `members` holds indices into the current population.
    """

    representative: Genome
    threshold: float
    members: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        """The representative and the threshold (a run's checkpoint reads them back)."""
        return {"representative": self.representative.to_dict(), "threshold": self.threshold}


def speciate(population, species, rng, config=GRNEATConfig()):
    """Assign every genome to the nearest species within its threshold.

    Each existing species keeps its representative from the previous
    generation; a genome close to none founds a new species (its own
    representative, the starting threshold). Returns the species with their
    `members` filled (indices into `population`), empty species dropped.
    """
    species = [Species(s.representative, s.threshold) for s in species]
    for index, genome in enumerate(population):
        best, best_distance = None, math.inf
        for s in species:
            distance = genome_distance(s.representative, genome, config)
            if distance < s.threshold and distance < best_distance:
                best, best_distance = s, distance
        if best is None:
            best = Species(genome, config.species_threshold)
            species.append(best)
        best.members.append(index)
    return [s for s in species if s.members]


def adapt_thresholds(species, config=GRNEATConfig()):
    """Move each threshold by `threshold_step` towards the average species size.

    A species smaller than average widens its threshold, a larger one narrows
    it; thresholds stay inside `threshold_bounds`.
    """
    average = sum(len(s.members) for s in species) / len(species)
    lo, hi = config.threshold_bounds
    for s in species:
        step = config.threshold_step if len(s.members) < average else -config.threshold_step
        s.threshold = min(hi, max(lo, s.threshold + step))


def offspring_counts(species, fitnesses, fitness_range, rng, population):
    """Offspring per species, in proportion to its mean normalised fitness.

    Fitness is normalised over the run's minimum and maximum so far
    (`fitness_range`). Counts are floored, and the remainder goes to the
    species with the largest fractional parts (ties broken at random), so
    they add up to `population`. When every species scores 0, they share
    equally.
    """
    lo, hi = fitness_range
    span = hi - lo
    scores = []
    for s in species:
        values = np.array([fitnesses[m] for m in s.members], float)
        normalised = (values - lo) / span if span > 0 else np.zeros_like(values)
        scores.append(float(normalised.mean()))
    scores = np.array(scores)
    if scores.sum() <= 0:
        scores = np.ones(len(species))
    exact = scores / scores.sum() * population
    counts = np.floor(exact).astype(int)
    remainder = population - counts.sum()
    if remainder:
        jitter = rng.random(len(species)) * 1e-9
        order = np.argsort(-(exact - counts + jitter), kind="stable")
        counts[order[:remainder]] += 1
    return [int(c) for c in counts]


# -- one generation ------------------------------------------------------------


def dissolve_small_species(population, fitnesses, species, evaluate, rng, config=GRNEATConfig()):
    """Replace the members of species smaller than `min_species_size` with mutants.

    Each removed member is replaced by a mutant of a tournament winner of a random
    surviving species; the mutant joins that species if it lies within its
    threshold (up to `max_tries` mutants are drawn), else it founds a new species.
    All mutants are scored with one call `evaluate(genomes) -> fitnesses` before
    anything is selected. When every species is too small they merge into the
    largest one.

    Returns:
        `(species, population, fitnesses)`: the surviving and new species (their
        `members` index the returned population), the survivors followed by the
        mutants, and their fitnesses.
    """
    keep = [s for s in species if len(s.members) >= config.min_species_size]
    if not keep:
        largest = max(species, key=lambda s: len(s.members))
        largest.members = list(range(len(population)))
        return [largest], population, fitnesses
    removed = sum(len(s.members) for s in species) - sum(len(s.members) for s in keep)
    population, fitnesses = _keep_survivors(population, fitnesses, keep)
    mutants = [
        _mutant_of_survivor(population, fitnesses, keep, rng, config) for _ in range(removed)
    ]
    if mutants:
        new_genomes = [child for child, _ in mutants]
        new_fitnesses = evaluate(new_genomes)
        for (child, home), fitness in zip(mutants, new_fitnesses):
            population.append(child)
            fitnesses.append(fitness)
            if home is None:
                home = Species(child, config.species_threshold)
                keep.append(home)
            home.members.append(len(population) - 1)
    return keep, population, fitnesses


def _keep_survivors(population, fitnesses, keep):
    """The members of the kept species and their fitnesses; renumber the members to match."""
    survivors = [i for s in keep for i in s.members]
    population = [population[i] for i in survivors]
    fitnesses = [fitnesses[i] for i in survivors]
    position = {old: new for new, old in enumerate(survivors)}
    for s in keep:
        s.members = [position[i] for i in s.members]
    return population, fitnesses


def _mutant_of_survivor(population, fitnesses, keep, rng, config):
    """A mutant of a random kept species' tournament winner, and that species if it fits in."""
    target = keep[int(rng.integers(len(keep)))]
    parent = population[
        target.members[tournament(fitnesses, target.members, rng, config.tournament_size)]
    ]
    for _ in range(config.max_tries):
        child = mutate(parent, rng, config)
        if genome_distance(child, target.representative, config) < target.threshold:
            return child, target
    return child, None


def widen_fitness_range(fitness_range, fitnesses):
    """The run's `[lowest, highest]` fitness so far, `fitnesses` included.

    `fitness_range` is the range before (None at the start); `offspring_counts`
    normalises over it.
    """
    lo, hi = min(fitnesses), max(fitnesses)
    if fitness_range is not None:
        lo, hi = min(lo, fitness_range[0]), max(hi, fitness_range[1])
    return [float(lo), float(hi)]


def breed(population, fitnesses, species, counts, rng, config=GRNEATConfig()):
    """The next population: `counts[k]` children of species `k`, species after species.

    A species makes `int(count * crossover_rate)` crossovers of two distinct
    tournament winners (a crossover is skipped when `max_tries` draws find no
    second parent), then `int(count * mutation_rate)` mutants of tournament winners,
    and keeps its fittest member (its elite): when the brood already fills the
    count the elite replaces a random child, else it is added; tournament winners,
    unchanged, fill what is left.
    """
    size = config.tournament_size
    children = []
    for s, count in zip(species, counts):
        if count == 0:
            continue
        members = s.members
        brood = []
        for _ in range(int(count * config.crossover_rate)):
            first = tournament(fitnesses, members, rng, size)
            second = first
            for _ in range(config.max_tries):
                second = tournament(fitnesses, members, rng, size)
                if second != first:
                    break
            if second != first:
                brood.append(
                    crossover(population[members[first]], population[members[second]], rng, config)
                )
        for _ in range(int(count * config.mutation_rate)):
            parent = population[members[tournament(fitnesses, members, rng, size)]]
            brood.append(mutate(parent, rng, config))
        elite = population[max(members, key=lambda m: fitnesses[m])]
        if len(brood) >= count:
            brood = brood[:count]
            brood[int(rng.integers(count))] = elite
        else:
            brood.append(elite)
        while len(brood) < count:
            brood.append(population[members[tournament(fitnesses, members, rng, size)]])
        children += brood
    return children


def next_species(population, species, rng):
    """The species handed to the next generation: for each, a random member of
    `population` becomes its representative; thresholds are kept, members emptied."""
    return [
        Species(population[s.members[int(rng.integers(len(s.members)))]], s.threshold)
        for s in species
    ]


def reproduce(population, fitnesses, species, fitness_range, rng, config=GRNEATConfig()):
    """GRNEAT's reproduction: `offspring_counts`, `breed`, then `next_species`.

    Args:
        population, fitnesses, species: the generation as `dissolve_small_species`
            returns it (after `adapt_thresholds`).
        fitness_range: the run's `[lowest, highest]` fitness so far
            (`widen_fitness_range`).

    Returns:
        `(children, species)`: the next population (`config.population` genomes)
        and the species it will be split against.
    """
    counts = offspring_counts(species, fitnesses, fitness_range, rng, config.population)
    children = breed(population, fitnesses, species, counts, rng, config)
    return children, next_species(population, species, rng)
