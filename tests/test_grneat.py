"""GRNEAT's operators and speciation, on hand-built genomes."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_neuromod.agrn import Genome
from keras_neuromod.evolution import grneat
from keras_neuromod.evolution.grneat import GRNEATConfig

CONFIG = GRNEATConfig()


def genome(regulatory_ids, n_in=2, n_out=2, beta=1.0, delta=1.0, fixed=0.5, tags=None):
    """Inputs and outputs with all tags `fixed`; regulatory proteins with the
    given identifiers and enhancer/inhibitor tags equal to them (or `tags`)."""
    reg = list(regulatory_ids)
    ids = [fixed] * (n_in + n_out) + reg
    other = [fixed] * (n_in + n_out) + (list(tags) if tags is not None else reg)
    return Genome(n_in, n_out, len(reg), ids, other, other, beta, delta)


def test_protein_distance_weights():
    a = genome([0.2], tags=[0.4])
    b = genome([0.3], tags=[0.1])
    # 0.75 * |0.2 - 0.3| + 0.125 * |0.4 - 0.1| * 2
    assert grneat.protein_distance(a, 4, b, 4) == pytest.approx(0.75 * 0.1 + 0.25 * 0.3)


def test_genome_distance_hand_computed():
    a = genome([0.1, 0.9], beta=1.0, delta=0.5)
    b = genome([0.15], beta=1.5, delta=0.5)
    # fixed proteins identical; each regulatory protein of the larger genome
    # goes to its nearest in the smaller: |0.1-0.15| and |0.9-0.15|, times 1.0
    # (0.75 + 0.125 + 0.125 on equal tags); beta term 0.5 / 1.95
    expected = (0.05 + 0.75 + 0.5 / 1.95) / (6 + 2)
    assert grneat.genome_distance(a, b) == pytest.approx(expected)
    assert grneat.genome_distance(b, a) == pytest.approx(expected)
    empty = genome([])
    assert grneat.genome_distance(a, empty) == pytest.approx((2.0 + 0.5 / 1.95) / 8)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n1=st.integers(0, 5), n2=st.integers(0, 5))
def test_genome_distance_is_symmetric_and_zero_to_itself(seed, n1, n2):
    rng = np.random.default_rng(seed)
    a = Genome.random(3, 2, n1, rng=rng)
    b = Genome.random(3, 2, n2, rng=rng)
    assert grneat.genome_distance(a, a) == 0.0
    assert grneat.genome_distance(a, b) == pytest.approx(grneat.genome_distance(b, a), abs=1e-12)
    assert grneat.genome_distance(a, b) >= 0


def _regulatory_ids(g):
    return sorted(g.identifiers[g.n_inputs + g.n_outputs :].tolist())


@pytest.mark.parametrize("seed", range(40))
def test_crossover_takes_one_gene_of_each_aligned_pair(seed):
    p1 = genome([0.10, 0.40, 0.70], beta=0.5, delta=0.6)
    p2 = genome([0.12, 0.43, 0.68], beta=1.5, delta=1.6, fixed=0.3)
    child = grneat.crossover(p1, p2, np.random.default_rng(seed))
    ids = _regulatory_ids(child)
    assert len(ids) == 3
    for pair, got in zip([(0.10, 0.12), (0.40, 0.43), (0.70, 0.68)], ids):
        assert any(abs(got - v) < 1e-12 for v in pair), (pair, got)
    # the tags of each protein travel together (enhancer equals identifier here)
    n = child.n_inputs + child.n_outputs
    np.testing.assert_array_equal(child.identifiers[n:], child.enhancers[n:])
    assert child.beta in (0.5, 1.5) and child.delta in (0.6, 1.6)
    for k in range(n):
        assert child.identifiers[k] in (0.5, 0.3)


def test_crossover_mixes_parents_and_keeps_unaligned_genes_of_one_parent():
    p1 = genome([0.10, 0.95])  # 0.95 has no partner in p2
    p2 = genome([0.11, 0.50])  # 0.50 has no partner in p1
    seen_first = seen_second = 0
    for seed in range(200):
        child = grneat.crossover(p1, p2, np.random.default_rng(seed))
        ids = _regulatory_ids(child)
        assert len(ids) == 2
        assert ids[0] in (0.10, 0.11)
        assert ids[1] in (0.95, 0.50)
        # the unaligned gene comes from the parent that gave the aligned one
        # (share n1/(n1+n2) is 1 or 0 with a single aligned pair)
        if ids[0] == 0.10:
            assert ids[1] == 0.95
            seen_first += 1
        else:
            assert ids[1] == 0.50
            seen_second += 1
    assert seen_first > 60 and seen_second > 60


def test_crossover_respects_threshold_and_capacity():
    p1 = genome([0.1, 0.2, 0.3])
    p2 = genome([0.9])
    config = dataclasses.replace(CONFIG, max_regulatory=2)
    for seed in range(20):
        child = grneat.crossover(p1, p2, np.random.default_rng(seed), config)
        assert child.n_regulatory <= 2
        assert set(_regulatory_ids(child)) <= {0.1, 0.2, 0.3, 0.9}


def test_mutation_operators():
    rng = np.random.default_rng(0)
    g = genome([0.2, 0.6])
    added = grneat.mutate_add(g, rng)
    assert added.n_regulatory == 3
    np.testing.assert_array_equal(added.identifiers[:-1], g.identifiers)
    deleted = grneat.mutate_delete(g, rng)
    assert deleted.n_regulatory == 1 and _regulatory_ids(deleted)[0] in (0.2, 0.6)
    assert grneat.mutate_delete(genome([]), rng) is None
    assert grneat.mutate_add(g, rng, dataclasses.replace(CONFIG, max_regulatory=2)) is None
    for seed in range(50):
        modified = grneat.mutate_modify(g, np.random.default_rng(seed))
        changes = sum(
            int(np.sum(getattr(modified, f) != getattr(g, f)))
            for f in ("identifiers", "enhancers", "inhibitors")
        )
        changes += int(modified.beta != g.beta) + int(modified.delta != g.delta)
        assert changes == 1
        assert modified.n_regulatory == g.n_regulatory


def test_mutate_redraws_when_an_operator_cannot_apply():
    config = dataclasses.replace(CONFIG, add_rate=0.0, delete_rate=1.0, modify_rate=0.0)
    g = genome([])
    assert grneat.mutate(g, np.random.default_rng(0), config) is g  # gives up after max_tries
    config = dataclasses.replace(
        CONFIG,
        add_rate=0.5,
        delete_rate=0.5,
        modify_rate=0.0,
        initial_regulatory=0,
        max_regulatory=0,
    )
    assert grneat.mutate(g, np.random.default_rng(0), config) is g
    rng = np.random.default_rng(1)
    sizes = [grneat.mutate(genome([0.5]), rng).n_regulatory for _ in range(400)]
    # add 0.5, delete 0.25, modify 0.25
    assert abs(sizes.count(2) / 400 - 0.5) < 0.08
    assert abs(sizes.count(0) / 400 - 0.25) < 0.08


def test_initial_population_groups():
    config = dataclasses.replace(CONFIG, population=25)
    population = grneat.initial_population(13, 8, np.random.default_rng(0), config)
    assert len(population) == 25
    assert all(g.n_regulatory == 1 and (g.n_inputs, g.n_outputs) == (13, 8) for g in population)
    # groups of 10, 10, 5: each a founder (last) and its single-modify mutants
    for start, stop in ((0, 10), (10, 20), (20, 25)):
        founder = population[stop - 1]
        for mutant in population[start : stop - 1]:
            assert grneat.genome_distance(founder, mutant) < 0.1
    assert grneat.genome_distance(population[9], population[19]) > grneat.genome_distance(
        population[0], population[9]
    )


def test_speciation_groups_close_genomes_and_founds_new_species():
    near = [genome([0.1 + 0.01 * k]) for k in range(3)]
    far = [genome([0.9 - 0.01 * k], fixed=0.9) for k in range(2)]
    species = grneat.speciate(near + far, [], np.random.default_rng(0))
    assert [s.members for s in species] == [[0, 1, 2], [3, 4]]
    # an existing species keeps its representative and gets the close genomes
    old = grneat.Species(far[0], 0.15)
    species = grneat.speciate(near + far, [old], np.random.default_rng(0))
    assert species[0].representative is far[0] and species[0].members == [3, 4]
    assert species[1].members == [0, 1, 2]


def test_thresholds_adapt_towards_average_size_within_bounds():
    species = [
        grneat.Species(genome([]), 0.15, list(range(8))),
        grneat.Species(genome([]), 0.031, [8, 9]),
    ]
    grneat.adapt_thresholds(species)
    assert species[0].threshold == pytest.approx(0.14)  # larger than average: narrower
    assert species[1].threshold == pytest.approx(0.041)  # smaller: wider
    species[0].threshold = 0.035
    for _ in range(5):
        grneat.adapt_thresholds(species)
    assert species[0].threshold == 0.03


def test_offspring_counts_follow_normalised_mean_fitness():
    species = [grneat.Species(genome([]), 0.15, [0, 1]), grneat.Species(genome([]), 0.15, [2, 3])]
    fitnesses = [0.9, 0.7, 0.3, 0.1]
    counts = grneat.offspring_counts(species, fitnesses, (0.1, 0.9), np.random.default_rng(0), 20)
    # normalised means 0.875 and 0.125: 17.5 and 2.5 -> 17 or 18 and 3 or 2
    assert sum(counts) == 20 and counts[0] in (17, 18)
    counts = grneat.offspring_counts(species, [0.5] * 4, (0.5, 0.5), np.random.default_rng(0), 7)
    assert sorted(counts) == [3, 4]


# -- one generation --------------------------------------------------------------


def _two_groups(n_near, n_far):
    """Genomes in two far-apart groups, and their fitnesses (index / 10)."""
    near = [genome([0.1 + 0.01 * k]) for k in range(n_near)]
    far = [genome([0.9 - 0.01 * k], fixed=0.9) for k in range(n_far)]
    return near + far, [k / 10 for k in range(n_near + n_far)]


def test_small_species_are_replaced_by_evaluated_mutants_of_the_survivors():
    population, fitnesses = _two_groups(6, 2)
    species = grneat.speciate(population, [], np.random.default_rng(0))
    assert [len(s.members) for s in species] == [6, 2]
    calls = []

    def evaluate(genomes):
        calls.append(list(genomes))
        return [-1.0] * len(genomes)

    kept, new_population, new_fitnesses = grneat.dissolve_small_species(
        population, fitnesses, species, evaluate, np.random.default_rng(1), CONFIG
    )
    assert len(calls) == 1 and len(calls[0]) == 2  # both mutants scored in one call
    assert new_population[:6] == population[:6] and new_population[6:] == calls[0]
    assert new_fitnesses == fitnesses[:6] + [-1.0, -1.0]
    assert sorted(m for s in kept for m in s.members) == list(range(8))
    for mutant in calls[0]:  # mutants of the surviving (near) species, not of the far one
        assert grneat.genome_distance(mutant, population[0]) < grneat.genome_distance(
            mutant, population[6]
        )


def test_when_every_species_is_too_small_they_merge_into_the_largest():
    population, fitnesses = _two_groups(3, 2)
    species = grneat.speciate(population, [], np.random.default_rng(0))

    def evaluate(genomes):
        raise AssertionError("nothing to evaluate")

    kept, new_population, new_fitnesses = grneat.dissolve_small_species(
        population, fitnesses, species, evaluate, np.random.default_rng(1), CONFIG
    )
    assert len(kept) == 1 and kept[0].representative is population[0]
    assert kept[0].members == list(range(5))
    assert new_population == population and new_fitnesses == fitnesses


def test_breeding_makes_each_species_its_count_and_keeps_its_elite():
    population, fitnesses = _two_groups(6, 5)
    species = grneat.speciate(population, [], np.random.default_rng(0))
    children = grneat.breed(
        population, fitnesses, species, [7, 3], np.random.default_rng(2), CONFIG
    )
    assert len(children) == 10
    assert any(child is population[5] for child in children[:7])  # the near group's elite
    assert any(child is population[10] for child in children[7:])  # the far group's elite
    # crossover and mutation make new genomes
    assert sum(all(child is not g for g in population) for child in children) >= 5
    # a species given no offspring has no descendant
    children = grneat.breed(
        population, fitnesses, species, [10, 0], np.random.default_rng(2), CONFIG
    )
    assert len(children) == 10
    for child in children:
        assert grneat.genome_distance(child, population[0]) < grneat.genome_distance(
            child, population[6]
        )


def test_the_next_species_keep_their_thresholds_with_a_member_as_representative():
    population, fitnesses = _two_groups(4, 3)
    species = grneat.speciate(population, [], np.random.default_rng(0))
    species[1].threshold = 0.2
    following = grneat.next_species(population, species, np.random.default_rng(3))
    assert [s.threshold for s in following] == [0.15, 0.2]
    assert all(not s.members for s in following)
    assert any(following[0].representative is population[m] for m in species[0].members)
    assert any(following[1].representative is population[m] for m in species[1].members)


def test_reproduce_keeps_the_population_size():
    config = dataclasses.replace(CONFIG, population=11)
    population, fitnesses = _two_groups(6, 5)
    species = grneat.speciate(population, [], np.random.default_rng(0))
    children, following = grneat.reproduce(
        population, fitnesses, species, [0.0, 1.0], np.random.default_rng(4), config
    )
    assert len(children) == 11 and len(following) == 2


def test_the_fitness_range_only_widens():
    assert grneat.widen_fitness_range(None, [0.5, 0.2, 0.7]) == [0.2, 0.7]
    assert grneat.widen_fitness_range([0.1, 0.6], [0.5, 0.2, 0.7]) == [0.1, 0.7]
    assert grneat.widen_fitness_range([0.0, 1.0], [0.5]) == [0.0, 1.0]


def test_tournament_picks_the_fittest_contestant():
    fitnesses = [0.1, 0.9, 0.5]
    rng = np.random.default_rng(0)
    picks = [grneat.tournament(fitnesses, [0, 1, 2], rng, 3) for _ in range(300)]
    # the best wins whenever drawn: P = 1 - (2/3)^3
    assert abs(picks.count(1) / 300 - (1 - (2 / 3) ** 3)) < 0.08
    assert grneat.tournament(fitnesses, [0], rng, 3) == 0


@pytest.mark.parametrize(
    "field,value",
    [
        ("population", 1),
        ("crossover_rate", 1.5),
        ("add_rate", 0.9),
        ("threshold_bounds", (0.5, 0.1)),
        ("max_regulatory", -1),
        ("tournament_size", 0),
        ("max_regulatory", 1025),
        ("id_weight", "1"),
        ("threshold_bounds", (0.1, 10**400)),
        ("threshold_bounds", 0.3),
        ("species_threshold", float("nan")),
    ],
)
def test_bad_config_is_refused(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        dataclasses.replace(CONFIG, **{field: value})


def test_config_round_trip():
    config = dataclasses.replace(CONFIG, population=12, max_regulatory=8)
    assert GRNEATConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown"):
        GRNEATConfig.from_dict({"populaton": 3})


def test_max_regulatory_is_capped_by_the_agrn_size():
    from keras_neuromod.agrn import MAX_PROTEINS
    from keras_neuromod.evolution import FitnessTask

    assert GRNEATConfig(max_regulatory=MAX_PROTEINS).max_regulatory == MAX_PROTEINS
    with pytest.raises(ValueError, match="max_regulatory must be at most 1024.*MAX_PROTEINS"):
        GRNEATConfig(max_regulatory=10**9)
    # the fitness task knows its outputs: 13 inputs + 8 outputs + max_regulatory <= 1024
    assert FitnessTask(base="adam", max_regulatory=MAX_PROTEINS - 21).max_regulatory == 1003
    with pytest.raises(ValueError, match=r"max_regulatory must be an integer in \[0, 1003\]"):
        FitnessTask(base="adam", max_regulatory=1004)
    with pytest.raises(ValueError, match=r"max_regulatory must be an integer in \[0, 1007\]"):
        FitnessTask(base="sgd", max_regulatory=10**30)
