"""The evolution loop: GRNEAT generations over real training runs.

One generation:

1. draw the generation's architecture and initialisation seed;
2. evaluate every individual on them (on the chosen backend);
3. form the species: `grneat.speciate`, `grneat.dissolve_small_species`
   (species smaller than `min_species_size` dissolve into mutants of the
   survivors, evaluated on the same task before anything is selected),
   `grneat.adapt_thresholds`;
4. record the logbook, the hall of fame, the generation's best individual
   (and the last `RECENT_BESTS` generations' bests) and the run's best;
5. reproduce (`grneat.reproduce`: offspring per species, crossover, mutation,
   one elite per species, the next representatives);
6. write `checkpoint.json` atomically.

The GRNEAT steps live in `keras_neuromod.evolution.grneat`; this module holds the
loop, the record and the checkpoint. Two controls share them: ``"random"`` (fresh
random genomes every generation) and ``"static"`` (CMA-ES over fixed
hyperparameters, `keras_neuromod.evolution.static`), and so does ``"cmaes"``
(CMA-ES over the tags of genomes of a fixed topology,
`keras_neuromod.evolution.cmaes`). A single `numpy.random.Generator` seeded by
`seed` drives every random choice (the CMA-ES searches sample from a second
one, on a stream of their own), and its state is in the checkpoint, so a run
resumed from a checkpoint ends with exactly the result of an uninterrupted one.
"""

import contextlib
import dataclasses
import os
import time

import numpy as np
from deap import base
from deap import tools

from keras_neuromod import _fields
from keras_neuromod.agrn import MAX_PROTEINS
from keras_neuromod.agrn import Genome
from keras_neuromod.evolution import grneat
from keras_neuromod.evolution.cmaes import DEFAULT_REGULATORY
from keras_neuromod.evolution.cmaes import TagSearch
from keras_neuromod.evolution.fitness import FitnessTask
from keras_neuromod.evolution.parallel import check_not_all_failed
from keras_neuromod.evolution.parallel import in_spawned_start
from keras_neuromod.evolution.parallel import make_backend
from keras_neuromod.evolution.static import FixedHyperparameters
from keras_neuromod.evolution.static import StaticSearch
from keras_neuromod.io import atomic_write_json
from keras_neuromod.io import folder_lock
from keras_neuromod.io import read_json

__all__ = [
    "evolve",
    "score_on_validation",
    "EvolutionResult",
    "Individual",
    "CHECKPOINT_FORMAT",
    "ALGORITHMS",
]

CHECKPOINT_FORMAT = "keras_neuromod.grneat-checkpoint/1"


class FitnessMax(base.Fitness):
    """DEAP fitness, maximised."""

    weights = (1.0,)


class Individual:
    """A genome with a DEAP fitness (so that DEAP's tools work on it).

    In the static search (`evolve(algorithm="static")`), `genome` holds the
    candidate's `FixedHyperparameters` instead (the CMA-ES search of
    `evolve(algorithm="cmaes")` has genomes, of one topology).
    """

    __slots__ = ("genome", "fitness", "generation")

    def __init__(self, genome, fitness=None, generation=None):
        self.genome = genome
        self.fitness = FitnessMax()
        if fitness is not None:
            self.fitness.values = (float(fitness),)
        self.generation = generation

    def __eq__(self, other):
        return isinstance(other, Individual) and self.genome == other.genome

    def __deepcopy__(self, memo):
        fitness = self.fitness.values[0] if self.fitness.valid else None
        return Individual(self.genome, fitness, self.generation)

    def to_dict(self):
        return {
            "genome": self.genome.to_dict(),
            "fitness": self.fitness.values[0] if self.fitness.valid else None,
            "generation": self.generation,
        }

    def __repr__(self):
        fitness = f"{self.fitness.values[0]:.4f}" if self.fitness.valid else "unevaluated"
        return f"Individual({self.genome!r}, fitness={fitness})"


@dataclasses.dataclass
class EvolutionResult:
    """What `evolve` returns.

    Attributes:
        best: the best `Individual` of the whole run: the hall of fame's
            first, the highest fitness any generation recorded; or, in the rare
            run where a genome already in the hall of fame scored higher on a
            later generation (DEAP's hall of fame keeps a genome's first
            fitness), that later evaluation. None before the first generation.
        last_best: the best `Individual` of the last generation (the paper's
            pick; fitnesses of different generations come from different tasks).
        hall_of_fame: DEAP `HallOfFame` of the best individuals of the run
            (fitnesses of different generations come from different tasks).
        logbook: DEAP `Logbook`, one record per generation: its draw
            (``architecture``), evaluations, species, mean genome size, the
            fitness statistics, ``drift``, the wall ``seconds`` and
            ``cpu_seconds``, the workers' CPU time on its evaluations
            (missing for generations a checkpoint recorded without it).
        generations: generations finished.
        evaluations: evaluations over the whole run.
        evaluated_now: evaluations made by this call (0 for a finished run).
        out: the output folder, or None.
        recent_bests: the best `Individual` of each of the last `RECENT_BESTS`
            generations, oldest first. Each is the best of its own draw, so,
            unlike the hall of fame, they do not gather where draws were easy.
    """

    best: Individual
    last_best: Individual
    hall_of_fame: tools.HallOfFame
    logbook: tools.Logbook
    generations: int
    evaluations: int
    evaluated_now: int
    out: str = None
    recent_bests: tuple = ()


# Generations over which the logbook's "drift" column reads the population mean's changes.
DRIFT_WINDOW = 10
# Generations whose best individuals a run keeps (`EvolutionResult.recent_bests`): with the
# hall of fame, the candidates a suite run's agent is chosen from on a validation draw.
RECENT_BESTS = 20


def drift(means):
    """The spread of the population mean between generations, from the means so far.

    `sqrt(mean(d ** 2) / 2)` over the last `DRIFT_WINDOW` changes `d` of the
    mean from one generation to the next (0 before the second generation): the
    standard deviation of a mean that only jitters from draw to draw, and
    insensitive to a slow trend. The logbook records it as ``drift`` beside
    ``std``, the spread within the generation. Every individual of a generation
    meets the same instances, so a draw that moves the mean does not reorder the
    generation, but it makes fitness values of different generations hard to
    compare (which is why a suite run's agent is chosen on a fixed validation
    draw). How far a draw's order holds on other instances is the fitness's
    reliability (`suite.reliability`; `benchmarks/fitness_reliability.py`).
    """
    changes = np.diff(np.asarray(means[-(DRIFT_WINDOW + 1) :], np.float64))
    return float(np.sqrt(np.mean(changes**2) / 2)) if changes.size else 0.0


def _statistics():
    stats = tools.Statistics(lambda ind: ind.fitness.values[0])
    stats.register("max", np.max)
    stats.register("mean", np.mean)
    stats.register("min", np.min)
    stats.register("std", np.std)
    return stats


class _Run:
    """The state of one evolution, and its JSON checkpoint."""

    def __init__(self, settings, config, rng):
        self.settings = settings
        self.config = config
        self.rng = rng
        self.generation = 0
        self.population = []
        self.species = []
        self.fitness_range = None
        self.logbook = tools.Logbook()
        self.logbook.header = [
            "gen",
            "architecture",
            "evals",
            "species",
            "size",
            "max",
            "mean",
            "min",
            "std",
            "drift",
            "seconds",
            "cpu_seconds",
        ]
        self.hall_of_fame = tools.HallOfFame(settings["hall_of_fame"])
        self.last_best = None  # the last generation's best (the checkpoint's "best")
        self.run_best = None  # the best of all generations (the checkpoint's "run_best")
        self.recent_bests = []  # the last RECENT_BESTS generations' bests, oldest first
        self.evaluations = 0
        self.search = None  # the CMA-ES of a search (algorithms "static" and "cmaes")

    def to_dict(self):
        data = {
            "format": CHECKPOINT_FORMAT,
            "settings": self.settings,
            "config": self.config.to_dict(),
            "generation": self.generation,
            "population": [g.to_dict() for g in self.population],
            "species": [s.to_dict() for s in self.species],
            "fitness_range": self.fitness_range,
            "rng_state": self.rng.bit_generator.state,
            "logbook": list(self.logbook),
            "hall_of_fame": [ind.to_dict() for ind in self.hall_of_fame],
            "best": self.last_best.to_dict() if self.last_best else None,
            "run_best": self.run_best.to_dict() if self.run_best else None,
            "recent_bests": [ind.to_dict() for ind in self.recent_bests],
            "evaluations": self.evaluations,
        }
        if self.search is not None:
            data["search"] = self.search.to_dict()
        return data

    @classmethod
    def load(cls, path, settings, config):
        """Resume from the checkpoint file `path` (errors name the file and the field)."""
        return cls.from_dict(read_json(path, "checkpoint"), settings, config, source=path)

    @classmethod
    def from_dict(cls, data, settings, config, source=None):
        """Validate a checkpoint against this run's settings and config, and rebuild the run.

        Anything malformed raises `ValueError` naming the checkpoint (`source`)
        and the field; a checkpoint made with other settings or another
        `GRNEATConfig` names the differing fields with both values.
        """
        saved = _CheckpointReader(data, settings, config, source)
        run = cls(settings, config, saved.generator())
        run.generation = saved.integer("generation")
        run.population = saved.population()
        run.species = saved.species()
        run.fitness_range = saved.fitness_range()
        saved.logbook(run.logbook, run.generation)
        saved.hall_of_fame(run.hall_of_fame)
        run.last_best = saved.individual_or_none("best")
        # the zoo's runs (zoo/runs/*/checkpoint.json, resumed by `evolve`) predate the
        # field: their run's best is in the hall of fame, or the last generation's best
        run.run_best = saved.individual_or_none("run_best") or _run_best(
            run.hall_of_fame, run.last_best
        )
        run.recent_bests = saved.recent_bests(run.last_best)
        run.evaluations = saved.integer("evaluations")
        run.search = saved.search()
        return run


class _CheckpointReader:
    """The fields of a checkpoint, each checked as it is read; errors name the file and field.

    Made with the run's `settings` and `config`: the checkpoint's format, its
    settings and its `GRNEATConfig` are checked at once.
    """

    def __init__(self, data, settings, config, source=None):
        self.where = "The checkpoint" + (f" {source!r}" if source is not None else "")
        self.data, self.config = data, config
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"Not a GRNEAT checkpoint: {self.where[4:]} has format {found!r:.80}, "
                f"expected {CHECKPOINT_FORMAT!r}."
            )
        _fields.fields(data, self.where, _CHECKPOINT_FIELDS, ("search", "run_best", "recent_bests"))
        self._check_settings(settings)
        self._check_config(config)
        self.task = _task_from_dict(settings["task"])
        algorithm = settings.get("algorithm", _SETTING_DEFAULTS["algorithm"])
        self.static = algorithm == "static"
        # the fixed number of regulatory proteins of a "cmaes" run's genomes; None otherwise
        self.regulatory = settings.get("cmaes_regulatory") if algorithm == "cmaes" else None
        searched = algorithm in _SEARCHES
        if searched != ("search" in data):
            raise ValueError(
                f"{self.where} {'lacks' if searched else 'has'} the field 'search', which a "
                f"{algorithm} run's checkpoint {'holds' if searched else 'does not hold'}."
            )

    def at(self, field):
        """`field` of this checkpoint, as error messages name it."""
        return f"{self.where}, field {field!r}"

    def _check_settings(self, settings):
        saved = self.data["settings"]
        if not isinstance(saved, dict):
            raise ValueError(f"{self.at('settings')} must be a JSON object.")
        # the tasks as this version reads them: fields added since read at their values
        # (a checkpoint of the paper's sets written before input and output sets resumes)
        saved, now = dict(saved), dict(settings)
        for given in (saved, now):
            if "task" in given:
                given["task"] = _normalised_task(given["task"])
        differing = sorted(
            k
            for k in now
            if k != "generations" and saved.get(k, _SETTING_DEFAULTS.get(k)) != now[k]
        )
        if differing:
            raise ValueError(
                f"{self.where} was made with other settings; resuming would not give "
                f"the same evolution. Differing: {differing} "
                f"(checkpoint: {[saved.get(k) for k in differing]}, "
                f"now: {[settings[k] for k in differing]})."
            )

    def _check_config(self, config):
        try:
            saved = grneat.GRNEATConfig.from_dict(self.data["config"])
        except ValueError as error:
            raise ValueError(f"{self.at('config')}: {error}") from None
        if saved != config:
            differing = [
                f"{field.name} (checkpoint: {getattr(saved, field.name)!r}, "
                f"now: {getattr(config, field.name)!r})"
                for field in dataclasses.fields(config)
                if getattr(saved, field.name) != getattr(config, field.name)
            ]
            raise ValueError(
                f"{self.where} was made with another GRNEATConfig; resuming would not give the "
                f"same evolution. Differing: {'; '.join(differing)}."
            )

    def generator(self):
        """The run's `numpy.random.Generator`, in its saved state."""
        return _fields.generator(self.data["rng_state"], self.at("rng_state"))

    def integer(self, field):
        """The integer `field`."""
        return _fields.integer(self.data[field], self.at(field))

    def genome(self, value, field):
        """A `Genome` of this run's agents (a static run: `FixedHyperparameters` of its base)."""
        kind = FixedHyperparameters if self.static else Genome
        try:
            result = kind.from_dict(value)
        except ValueError as error:
            raise ValueError(f"{self.at(field)}: {error}") from None
        if self.static:
            if result.base != self.task.base:
                raise ValueError(
                    f"{self.at(field)} fixes hyperparameters of the {result.base!r} "
                    f"base; this run searches the {self.task.base!r} base's."
                )
            return result
        n_inputs, n_outputs = self.task.n_inputs, self.task.n_outputs
        if (result.n_inputs, result.n_outputs) != (n_inputs, n_outputs):
            raise ValueError(
                f"{self.at(field)} has {result.n_inputs} inputs and {result.n_outputs} outputs; "
                f"this run's agents have {n_inputs} and {n_outputs}."
            )
        if result.n_regulatory > self.config.max_regulatory:
            raise ValueError(
                f"{self.at(field)} has {result.n_regulatory} regulatory proteins, more than "
                f"max_regulatory ({self.config.max_regulatory})."
            )
        if self.regulatory is not None and result.n_regulatory != self.regulatory:
            raise ValueError(
                f"{self.at(field)} has {result.n_regulatory} regulatory proteins; this CMA-ES "
                f"run's genomes have {self.regulatory} (cmaes_regulatory)."
            )
        return result

    def individual(self, value, field):
        """An `Individual`: its genome, fitness and generation."""
        _fields.fields(value, self.at(field), ("genome", "fitness", "generation"))
        fitness = _fields.number(value["fitness"], self.at(f"{field}.fitness"))
        generation = _fields.integer(value["generation"], self.at(f"{field}.generation"))
        return Individual(self.genome(value["genome"], f"{field}.genome"), fitness, generation)

    def individual_or_none(self, field):
        """The `Individual` at `field`, or None where the field is null or absent."""
        value = self.data.get(field)
        return None if value is None else self.individual(value, field)

    def population(self):
        """The next generation's genomes (none in a static or cmaes run: CMA-ES draws them)."""
        population = _fields.items(
            self.data["population"],
            self.at("population"),
            length=0 if "search" in self.data else self.config.population,
        )
        return [self.genome(g, f"population[{i}]") for i, g in enumerate(population)]

    def species(self):
        """The species the next generation is split against."""
        species = _fields.items(
            self.data["species"], self.at("species"), max_length=self.config.population
        )
        lo, hi = self.config.threshold_bounds
        result = []
        for i, value in enumerate(species):
            _fields.fields(value, self.at(f"species[{i}]"), ("representative", "threshold"))
            result.append(
                grneat.Species(
                    self.genome(value["representative"], f"species[{i}].representative"),
                    _fields.number(value["threshold"], self.at(f"species[{i}].threshold"), lo, hi),
                )
            )
        return result

    def fitness_range(self):
        """The run's `[lowest, highest]` fitness so far, or None."""
        if self.data["fitness_range"] is None:
            return None
        pair = _fields.items(self.data["fitness_range"], self.at("fitness_range"), length=2)
        pair = [_fields.number(v, self.at("fitness_range")) for v in pair]
        if pair[0] > pair[1]:
            raise ValueError(
                f"{self.at('fitness_range')} must be [lo, hi] with lo <= hi, got {pair}."
            )
        return pair

    def logbook(self, logbook, generations):
        """Record the saved logbook's `generations` records into the DEAP `logbook`."""
        records = _fields.items(self.data["logbook"], self.at("logbook"), length=generations)
        for i, record in enumerate(records):
            # "drift" derives from the means: a checkpoint written before it gets it here;
            # one written before "cpu_seconds" was measured leaves it empty
            optional = ["drift", "cpu_seconds"]
            required = [key for key in logbook.header if key not in optional]
            _fields.fields(record, self.at(f"logbook[{i}]"), required, optional)
            for key in ("gen", "evals", "species"):
                _fields.integer(record[key], self.at(f"logbook[{i}].{key}"))
            _fields.text(record["architecture"], self.at(f"logbook[{i}].architecture"))
            for key in ("size", "max", "mean", "min", "std", "drift", "seconds", "cpu_seconds"):
                if key in record:
                    _fields.number(record[key], self.at(f"logbook[{i}].{key}"))
            if "drift" not in record:
                record = {**record, "drift": drift([r["mean"] for r in logbook] + [record["mean"]])}
            logbook.record(**record)

    def recent_bests(self, last_best):
        """The last generations' bests; a checkpoint written without them has the last one's."""
        if "recent_bests" not in self.data:
            return [last_best] if last_best is not None else []
        values = _fields.items(
            self.data["recent_bests"], self.at("recent_bests"), max_length=RECENT_BESTS
        )
        return [self.individual(value, f"recent_bests[{i}]") for i, value in enumerate(values)]

    def hall_of_fame(self, hall_of_fame):
        """Fill the DEAP `hall_of_fame` exactly as it was saved."""
        hall = _fields.items(
            self.data["hall_of_fame"], self.at("hall_of_fame"), max_length=hall_of_fame.maxsize
        )
        hall = [self.individual(value, f"hall_of_fame[{i}]") for i, value in enumerate(hall)]
        fitnesses = [ind.fitness.values[0] for ind in hall]
        if any(a < b for a, b in zip(fitnesses, fitnesses[1:])):
            raise ValueError(f"{self.at('hall_of_fame')} must be sorted by fitness, best first.")
        # Restore DEAP's lists exactly as saved (best first; `keys` ascending): inserting
        # the entries again would reverse the order of entries with equal fitness.
        hall_of_fame.items = hall
        hall_of_fame.keys = [ind.fitness for ind in reversed(hall)]

    def search(self):
        """The CMA-ES of a static run (`StaticSearch`) or of a cmaes run (`TagSearch`), in its
        saved state; None for the others."""
        if self.regulatory is not None:
            return TagSearch.from_dict(
                self.data["search"],
                self.task.n_inputs,
                self.task.n_outputs,
                self.regulatory,
                self.config.population,
                where=self.at("search"),
            )
        if not self.static:
            return None
        return StaticSearch.from_dict(
            self.data["search"],
            self.task.base,
            self.task.ranges,
            self.config.population,
            where=self.at("search"),
            outputs=self.task.outputs,
        )


def _normalised_task(data):
    """A checkpoint's task as this version writes it (the fields added since, at the values
    they read as), or as it is if it does not read as a task."""
    try:
        return _task_from_dict(data).to_dict()
    except (AttributeError, KeyError, TypeError, ValueError):
        return data


def _task_from_dict(data):
    from keras_neuromod.evolution.suite import SuiteTask

    if isinstance(data, dict) and data.get("kind") == "suite":
        return SuiteTask.from_dict(data)
    return FitnessTask.from_dict(data)


def _best_of(individuals):
    """The individual of highest fitness (the first of equals), or None.

    Args:
        individuals: `Individual`s with valid fitnesses, or Nones (skipped).
    """
    individuals = [ind for ind in individuals if ind is not None]
    return max(individuals, key=lambda ind: ind.fitness.values[0]) if individuals else None


def _run_best(hall_of_fame, *seen):
    """The run's best: the hall of fame's first, unless one of `seen` scored higher.

    A genome already in the hall of fame keeps its first fitness there, so its
    higher score on a later generation is only in `seen`.

    Args:
        hall_of_fame: the run's DEAP `HallOfFame` (best first).
        *seen: the best individuals seen so far (the run's best until now and
            the generation's best), or Nones.
    """
    best = _best_of(seen)
    if len(hall_of_fame) and (
        best is None or hall_of_fame[0].fitness.values[0] >= best.fitness.values[0]
    ):
        return hall_of_fame[0]
    return best


# Settings added after the first checkpoints: a checkpoint without one was made with this
# value. Three of the zoo's runs (zoo/runs/nm_adam_digits, nm_sgd_digits and nm_adam_general,
# their checkpoint.json) were made before "algorithm" existed, and `evolve` resumes them.
_SETTING_DEFAULTS = {"algorithm": "grneat"}
ALGORITHMS = ("grneat", "random", "static", "cmaes")
# the algorithms whose candidates a CMA-ES draws (the checkpoint's "search" holds its state)
_SEARCHES = ("static", "cmaes")

_CHECKPOINT_FIELDS = (
    "format",
    "settings",
    "config",
    "generation",
    "population",
    "species",
    "fitness_range",
    "rng_state",
    "logbook",
    "hall_of_fame",
    "best",
    "evaluations",
)


def evolve(
    task="digits",
    base="adam",
    population=50,
    generations=50,
    epochs=20,
    models=("A", "B", "C"),
    backend=None,
    workers=None,
    ray_address=None,
    seed=0,
    out=None,
    resume=False,
    fitness=None,
    config=None,
    hall_of_fame=10,
    progress=True,
    verbose=True,
    timeout=None,
    vectorized=False,
    algorithm="grneat",
    cmaes_regulatory=None,
    **task_options,
):
    """Evolve an AGRN agent with GRNEAT so that `model.fit` learns better.

    Args:
        task: the data set (``"digits"``, ``"cifar10"``, ``"cifar100"``), a
            ready `FitnessTask`, or a `SuiteTask` (multi-task fitness over
            `keras_neuromod.tasks`; `models` is then unused: each generation's
            seed draws its instances; needs vectorized evaluation).
        base: ``"sgd"`` for Nm-SGD agents, ``"adam"`` for Nm-Adam agents.
        population: individuals per generation.
        generations: generations to run in total (a resumed run continues up
            to this number).
        epochs: training epochs per evaluation.
        models: architectures drawn from, one per generation.
        backend: where and how the individuals train. ``"vectorized"`` (the
            default for a `FitnessTask`): compiled, batched JAX trainings in
            this process (when it runs Keras on JAX and `workers` is 1) or
            in local JAX workers, the same fitness as `model.fit` many times faster
            (`keras_neuromod.evolution.vectorized`). ``"process"`` (the
            default with a `fitness` function): one `model.fit` per
            individual in local processes; ``"serial"``: in this process;
            ``"ray"``: on a Ray cluster (with `vectorized=True`, chunks of
            the population are trained vectorized on the Ray actors).
            This is the evaluation backend, not Keras's: vectorized
            trainings run Keras on JAX in their workers, and `model.fit` runs
            it on the backend the workers inherit (`KERAS_BACKEND`).
        workers: parallel workers (default: the CPU count).
        ray_address: with ``backend="ray"``: None starts a local cluster,
            ``"auto"`` or an address joins an existing one.
        seed: one seed for the whole evolution.
        out: folder for `checkpoint.json` (written after every generation).
            The run holds the folder's lock (`out/.lock`, `io.folder_lock`)
            while it lasts: a second run on the folder meanwhile raises
            `io.FolderLockedError`.
        resume: continue from `out/checkpoint.json` if it exists.
        fitness: a picklable function `f(genome_dict, architecture, seed)`
            to evaluate instead of training (the `task` then only names it).
        config: a `GRNEATConfig` (its `population` is set from `population`).
        hall_of_fame: size of the hall of fame.
        progress: show a progress bar (tqdm) over each generation's evaluations.
        verbose: print the logbook line of every generation.
        timeout: seconds one evaluation may take in a worker (``"process"``
            and ``"ray"`` backends) before the worker is killed and the
            evaluation run once more, then scored worst, as a crashed one.
            A fresh worker's start-up is not counted. None (the default): no
            limit, since a full-size evaluation can take many minutes.
            With vectorized evaluation, it limits one chunk of the population.
        vectorized: with ``backend="ray"``, train chunks of the population
            vectorized on the actors instead of one `model.fit` each.
        algorithm: ``"grneat"`` (the default) evolves; ``"random"`` is the
            control with the same budget: every generation evaluates
            `population` fresh random genomes (`grneat.random_population`,
            every size up to `max_regulatory`) on a draw of its own made
            as an evolution makes it (one architecture and seed, or one set
            of suite instances, per generation), and the hall of fame keeps
            the best of them all. ``"static"`` is the control without
            modulation (a `SuiteTask` only): with the same budget it searches
            the best fixed hyperparameters of the base (one value each, for
            every tensor and step, within the task's ranges) with CMA-ES
            (`keras_neuromod.evolution.static`), `population` candidates per
            generation, on the very instances the random control with the
            same seed and population draws, with the same fitness and hall
            of fame; the individuals' `genome` is then a
            `FixedHyperparameters`, and `static.static_agent` writes one as
            an agent with collapsed ranges. ``"cmaes"`` keeps the genome's
            topology fixed (the task's inputs and outputs and
            `cmaes_regulatory` regulatory proteins) and searches its tags,
            beta and delta with CMA-ES (`keras_neuromod.evolution.cmaes`),
            starting from a silent genome (every hyperparameter in the
            middle of its range), `population` genomes per generation on the
            random control's instances; it takes any task, as GRNEAT does.
        cmaes_regulatory: with ``algorithm="cmaes"``, the regulatory
            proteins of every genome searched (None:
            `cmaes.DEFAULT_REGULATORY`, 8); at most the task's
            `max_regulatory` and the config's.
        **task_options: more `FitnessTask` fields (`batch_size`, `width`,
            `metric`, `train_subset`, `ranges`, ...).

    Returns:
        An `EvolutionResult` (the run's best, the last generation's best, hall of
        fame, logbook, counts).

    Raises:
        io.FolderLockedError: another live run holds `out`'s lock.
        FileExistsError: `out` holds a checkpoint and `resume` is false.
        TaskError: the task cannot be evaluated (its data, its models or the
            reference's training fail, a worker process cannot start, or every
            evaluation of a generation failed); nothing more is evaluated and
            the last checkpoint stays as it was.
        RuntimeError: called while a worker process imports the script that
            started the run (the script lacks an ``if __name__ ==
            "__main__":`` guard).
    """
    _refuse_spawned_start()
    fitness_task, config, models = _prepare(
        task, base, epochs, population, config, models, algorithm, fitness, task_options
    )
    regulatory = _cmaes_regulatory(cmaes_regulatory, algorithm, fitness_task, config)
    generations = _fields.integer(generations, "generations")
    if backend is None:
        backend = "process" if fitness is not None else "vectorized"
    settings = _settings(fitness_task, fitness, models, seed, generations, hall_of_fame, algorithm)
    if regulatory is not None:
        settings["cmaes_regulatory"] = regulatory
    checkpoint = os.path.join(out, "checkpoint.json") if out else None
    # the folder's lock, held from reading the checkpoint to writing the last one
    with folder_lock(out) if out else contextlib.nullcontext():
        run = _start(settings, config, fitness_task, checkpoint, resume, verbose)
        evaluated_now = 0
        if run.generation < generations:
            engine = make_backend(
                backend,
                fitness if fitness is not None else fitness_task,
                workers,
                ray_address,
                timeout=timeout,
                vectorized=vectorized,
            )
            try:
                evaluated_now = _run_generations(run, engine, models, checkpoint, progress, verbose)
            finally:
                engine.close()
    return EvolutionResult(
        best=run.run_best,
        last_best=run.last_best,
        hall_of_fame=run.hall_of_fame,
        logbook=run.logbook,
        generations=run.generation,
        evaluations=run.evaluations,
        evaluated_now=evaluated_now,
        out=out,
        recent_bests=tuple(run.recent_bests),
    )


def _refuse_spawned_start():
    """Raise `RuntimeError` while a worker process imports the script that started the run."""
    if in_spawned_start():
        raise RuntimeError(
            "evolve() was called while a worker process imported the script that started the "
            "evolution: each worker imports that script, so the code that runs the evolution "
            'must sit under `if __name__ == "__main__":` (the main guard).'
        )


def _prepare(task, base, epochs, population, config, models, algorithm, fitness, task_options):
    """`evolve`'s task, `GRNEATConfig` and architectures, checked.

    Returns:
        `(fitness_task, config, models)`: the `FitnessTask` or `SuiteTask`, the
        config with `population` (and `max_regulatory` at most the task's), and
        the architectures (``("suite",)`` for a `SuiteTask`: each generation's
        seed draws its instances).
    """
    from keras_neuromod.evolution.suite import SuiteTask
    from keras_neuromod.models import layer_plan

    suite = isinstance(task, SuiteTask)
    if isinstance(task, (FitnessTask, SuiteTask)):
        fitness_task = task
    else:
        fitness_task = FitnessTask(dataset=task, base=base, epochs=epochs, **task_options)
    config = dataclasses.replace(config or grneat.GRNEATConfig(), population=population)
    if fitness_task.max_regulatory < config.max_regulatory:
        config = dataclasses.replace(config, max_regulatory=fitness_task.max_regulatory)
    models = ("suite",) if suite else tuple(models)
    if not models:
        raise ValueError("models must name at least one architecture.")
    for name in models if not suite else ():
        layer_plan(name)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
    if algorithm == "static":
        _check_static(fitness_task, fitness)
    return fitness_task, config, models


def _cmaes_regulatory(value, algorithm, task, config):
    """The regulatory proteins of a cmaes run's genomes, checked; None for the others.

    Raises:
        ValueError: `value` given with another algorithm, not an integer of at
            least 0, more than an AGRN of the task's inputs and outputs may
            hold, or more than the run's `max_regulatory`.
    """
    if algorithm != "cmaes":
        if value is not None:
            raise ValueError(
                f"cmaes_regulatory goes with algorithm='cmaes' (the fixed topology of its "
                f"genomes), got {value!r:.80} with algorithm={algorithm!r}."
            )
        return None
    value = DEFAULT_REGULATORY if value is None else value
    limit = MAX_PROTEINS - task.n_inputs - task.n_outputs
    value = _fields.integer(value, "cmaes_regulatory")
    if value > limit:
        raise ValueError(
            f"cmaes_regulatory must be at most {limit}: an AGRN of {task.n_inputs} inputs and "
            f"{task.n_outputs} outputs may have that many regulatory proteins "
            f"(keras_neuromod.agrn.MAX_PROTEINS = {MAX_PROTEINS}), got {value}."
        )
    if value > config.max_regulatory:
        raise ValueError(
            f"cmaes_regulatory ({value}) exceeds the run's max_regulatory "
            f"({config.max_regulatory}, the least of the task's and the GRNEATConfig's): "
            f"the trainings' AGRN holds at most that many regulatory proteins. Raise both, or "
            f"search fewer."
        )
    return value


def _settings(fitness_task, fitness, models, seed, generations, hall_of_fame, algorithm):
    """The run's settings, as its checkpoint records them (a resumed run must match them)."""
    return {
        "task": fitness_task.to_dict(),
        "fitness": None if fitness is None else f"{fitness.__module__}.{fitness.__qualname__}",
        "models": list(models),
        "seed": int(seed),
        "generations": int(generations),
        "hall_of_fame": int(hall_of_fame),
        "algorithm": algorithm,
    }


def _run_generations(run, engine, models, checkpoint, progress, verbose):
    """Run generations up to the settings' number, writing the checkpoint after each.

    Returns:
        The evaluations made.
    """
    step = _search_generation if run.settings["algorithm"] in _SEARCHES else _generation
    evaluated = 0
    while run.generation < run.settings["generations"]:
        evaluated += step(run, engine, models, progress, verbose)
        if checkpoint:
            atomic_write_json(checkpoint, run.to_dict())
    return evaluated


def _start(settings, config, fitness_task, checkpoint, resume, verbose):
    """The run resumed from `checkpoint`, or a new one (its first population drawn).

    Args:
        settings: the run's settings (`evolve` builds them).
        config: its `GRNEATConfig`.
        fitness_task: its `FitnessTask` or `SuiteTask`.
        checkpoint: the checkpoint file, or None without an output folder.
        resume: continue from `checkpoint` if it exists.
        verbose: say so when resuming.

    Raises:
        FileExistsError: `checkpoint` exists and `resume` is false.
    """
    if resume and checkpoint and os.path.exists(checkpoint):
        run = _Run.load(checkpoint, settings, config)
        run.settings = settings
        if verbose:
            print(f"Resuming from {checkpoint}: {run.generation} generation(s) done.", flush=True)
        return run
    if checkpoint and os.path.exists(checkpoint):
        raise FileExistsError(
            f"{checkpoint} exists: pass resume=True to continue it, or choose another folder."
        )
    seed, algorithm = settings["seed"], settings["algorithm"]
    rng = np.random.default_rng(seed)
    run = _Run(settings, config, rng)
    first = grneat.initial_population if algorithm == "grneat" else grneat.random_population
    run.population = first(fitness_task.n_inputs, fitness_task.n_outputs, rng, config)
    if algorithm in _SEARCHES:
        # the random control's genomes are drawn and dropped, so that its generator and
        # so its draws stay those of the random control; CMA-ES has a stream of its own
        run.population = []
        stream = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(1)[0])
        if algorithm == "static":
            run.search = StaticSearch(
                fitness_task.base,
                fitness_task.ranges,
                config.population,
                stream,
                outputs=fitness_task.outputs,
            )
        else:  # its start, a silent genome, is the stream's first draw
            run.search = TagSearch(
                fitness_task.n_inputs,
                fitness_task.n_outputs,
                settings["cmaes_regulatory"],
                config.population,
                stream,
            )
    return run


def _check_static(task, fitness):
    """The static search's needs: a `SuiteTask` and its own fitness."""
    from keras_neuromod.evolution.suite import SuiteTask

    if not isinstance(task, SuiteTask) or fitness is not None:
        raise ValueError(
            "algorithm='static' searches fixed hyperparameters on a SuiteTask (its "
            "vectorized trainings against its reference); pass task=SuiteTask(...) "
            "and no fitness function."
        )


def _progress_bar(total, generation, enabled):
    if not enabled:
        return None, None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=total, desc=f"generation {generation}", unit="eval", leave=False)
    return bar, bar.update


def _draw(rng, models):
    """The generation's architecture and seed (which, on a suite, draws its instances)."""
    architecture = models[int(rng.integers(len(models)))]
    return architecture, int(rng.integers(2**31 - 1))


class _Scoring:
    """Scores genomes on the generation's draw: `scoring(genomes) -> fitnesses`.

    Each call is one `map` of the backend (a call in which every evaluation
    failed raises `TaskError`); `count` adds up the evaluations. Used as a
    context manager, it shows a progress bar (when `progress`) until it ends.
    """

    def __init__(self, engine, architecture, seed, expected, generation, progress):
        self.engine, self.architecture, self.seed = engine, architecture, seed
        self.count = 0
        self.cpu_seconds = 0.0  # the workers' CPU time on this draw's evaluations
        self.bar, self.tick = _progress_bar(expected, generation, progress)

    def __call__(self, genomes):
        jobs = [
            {"genome": g.to_dict(), "architecture": self.architecture, "seed": self.seed}
            for g in genomes
        ]
        if self.bar is not None:
            self.bar.total = self.count + len(jobs)
            self.bar.refresh()
        before = self.engine.cpu_seconds
        values = self.engine.map(jobs, progress=self.tick)
        check_not_all_failed(self.engine)
        self.count += len(jobs)
        self.cpu_seconds += self.engine.cpu_seconds - before
        return values

    def __enter__(self):
        return self

    def __exit__(self, *error):
        if self.bar is not None:
            self.bar.close()


def _record(run, population, fitnesses, score, species, start, verbose):
    """Log the generation; update the fitness range, the hall of fame, the bests and the count."""
    run.fitness_range = grneat.widen_fitness_range(run.fitness_range, fitnesses)
    individuals = [Individual(g, f, run.generation) for g, f in zip(population, fitnesses)]
    run.hall_of_fame.update(individuals)
    run.last_best = _best_of(individuals)
    run.run_best = _run_best(run.hall_of_fame, run.run_best, run.last_best)
    run.recent_bests = [*run.recent_bests, run.last_best][-RECENT_BESTS:]
    run.evaluations += score.count
    record = {k: float(v) for k, v in _statistics().compile(individuals).items()}
    run.logbook.record(
        gen=run.generation,
        architecture=score.architecture,
        evals=score.count,
        species=species,
        size=float(np.mean([g.n_regulatory for g in population])),
        drift=drift([r["mean"] for r in run.logbook] + [record["mean"]]),
        seconds=round(time.perf_counter() - start, 2),
        cpu_seconds=round(score.cpu_seconds, 2),
        **record,
    )
    if verbose:
        print(run.logbook.stream, flush=True)


def _generation(run, engine, models, progress, verbose):
    """One generation of GRNEAT (or of the random search): draw, score, speciate, record, breed.

    Returns:
        The evaluations made (the population's, and the mutants' that replace
        the members of species too small to keep).
    """
    config, rng = run.config, run.rng
    start = time.perf_counter()
    architecture, task_seed = _draw(rng, models)
    random_search = run.settings["algorithm"] == "random"
    population, species = list(run.population), []
    with _Scoring(
        engine, architecture, task_seed, len(population), run.generation, progress
    ) as score:
        fitnesses = score(population)
        if not random_search:
            species = grneat.speciate(population, run.species, rng, config)
            # the members of species too small to keep are replaced by mutants, scored here
            species, population, fitnesses = grneat.dissolve_small_species(
                population, fitnesses, species, score, rng, config
            )
            grneat.adapt_thresholds(species, config)
    _record(run, population, fitnesses, score, len(species), start, verbose)
    if random_search:
        n_inputs, n_outputs = population[0].n_inputs, population[0].n_outputs
        run.population, run.species = grneat.random_population(n_inputs, n_outputs, rng, config), []
    else:
        run.population, run.species = grneat.reproduce(
            population, fitnesses, species, run.fitness_range, rng, config
        )
    run.generation += 1
    return score.count


def _search_generation(run, engine, models, progress, verbose):
    """One generation of a CMA-ES search (``"static"``, ``"cmaes"``): CMA-ES asks, the
    backend scores, CMA-ES learns.

    The run's generator draws the generation's instances and then the random
    control's genomes (dropped), exactly as a ``"random"`` run's does, so the
    searches and the controls meet the same instances generation by generation.

    Returns:
        The evaluations made (the population's).
    """
    start = time.perf_counter()
    architecture, task_seed = _draw(run.rng, models)
    positions = run.search.ask()
    candidates = [run.search.candidate(p) for p in positions]
    with _Scoring(
        engine, architecture, task_seed, len(candidates), run.generation, progress
    ) as score:
        fitnesses = score(candidates)
    run.search.tell(positions, fitnesses)
    _record(run, candidates, fitnesses, score, 0, start, verbose)
    task = _task_from_dict(run.settings["task"])
    grneat.random_population(task.n_inputs, task.n_outputs, run.rng, run.config)
    run.generation += 1
    return score.count


def score_on_validation(genomes, suite, draws=8, workers=None, first_seed=None, timeout=None):
    """Scores of candidate agents on a fixed validation draw of the suite.

    An evolution's fitnesses come from different instances every generation,
    so the best fitness of a run is partly the luck of its draw. Candidates (a
    hall of fame) are compared here on the same `draws * suite.instances`
    instances, drawn from seeds of their own (`first_seed`, `first_seed + 1`,
    ...), on validation data as during evolution.

    Args:
        genomes: `Genome`s or genome dicts, or `FixedHyperparameters` (the
            static search's candidates) or their dicts.
        suite: the `SuiteTask`.
        draws: draws of `suite.instances` instances each.
        workers: JAX worker processes (`VectorizedBackend`; default: the
            CPU count).
        first_seed: the seed of the first draw (None:
            `suite.VALIDATION_SEEDS`, a stream apart from an evolution's).
        timeout: seconds a chunk of trainings may take in a worker.

    Returns:
        numpy float64 `[len(genomes), draws]`: each genome's mean score over
        each draw's instances (its fitness on that draw).
    """
    from keras_neuromod.evolution.suite import VALIDATION_SEEDS

    if first_seed is None:
        first_seed = VALIDATION_SEEDS
    genomes = [
        g.to_dict() if isinstance(g, (Genome, FixedHyperparameters)) else dict(g) for g in genomes
    ]
    draws = _fields.integer(draws, "draws", minimum=1)
    seeds = [int(first_seed) + i for i in range(draws)]
    jobs = [{"genome": g, "architecture": "suite", "seed": s} for s in seeds for g in genomes]
    engine = make_backend("vectorized", suite, workers, timeout=timeout)
    try:
        values = engine.map(jobs)
        check_not_all_failed(engine)
    finally:
        engine.close()
    return np.asarray(values, np.float64).reshape(draws, len(genomes)).T
