"""Evolution strategies over a batched fitness function, seeded and resumable.

`EvolutionStrategy` evolves one flat parameter vector (the centre, `theta`) the way
Salimans et al. (2017) and the evolvable-neural-unit paper (Bertens and Lee, 2020)
do it:

* mirrored Gaussian sampling: `population // 2` noise vectors `eps` and their
  negatives, offspring `theta + sigma * eps`;
* rank-based fitness shaping: fitnesses are replaced by centred ranks in
  `[-0.5, 0.5]`, so the update ignores the scale of the fitness and outliers;
* the gradient estimate `g = sum_i u_i eps_i / (population * sigma)` (optionally with
  an L2 pull `- weight_decay * theta` added) and, by default, the paper's momentum
  update `v = momentum * v + g`, `theta = theta + learning_rate * v`; or, with
  `update="adam"`, the Adam step that Salimans et al. use (`momentum` is then Adam's
  `beta_1`): `m = b1 m + (1 - b1) g`, `s = b2 s + (1 - b2) g^2`,
  `theta = theta + learning_rate * m_hat / (sqrt(s_hat) + epsilon)` with the usual
  bias corrections. Adam moves every parameter by about `learning_rate` per
  generation whatever the scale of its gradient estimate, which helps where a few
  weights must grow large (a steep spike threshold, say);
* environments randomised every generation: the trainer draws one environment seed
  per generation and hands the fitness function a fresh `numpy.random.Generator`
  built from it, so all offspring of a generation meet the same environments
  (common random numbers, which makes the mirrored differences meaningful) and
  every generation meets new ones. Any unit state is the fitness function's to
  reset; `keras_neuromod.evolution.enu_fitness.ENUFitness`, the fitness of ENU
  tasks, starts every evaluation from zero state.

The fitness function is *batched*: it receives all offspring at once, as an array
of shape `(population, num_params)` (float32), and returns `population` fitnesses
(higher is better). That is where the speed comes from: one call evaluates a whole
generation, e.g. one compiled `keras.ops` computation with a population axis on the
weights (see `keras_neuromod.evolution.enu_fitness`).

Every generation is recorded in a DEAP `tools.Logbook` (`logbook`: `gen`, `max`,
`mean`, `min`, `std` of the offspring's fitness, `seconds`), as GRNEAT's evolution
records its own. Checkpoints are JSON (`keras_neuromod.io.atomic_write_json`),
written atomically after every generation: the centre and the momentum as lists of
floats (float64, which JSON round-trips exactly), the numpy generator's
`bit_generator.state`, the logbook and the configuration. As with
`keras_neuromod.evolution.evolve`, `run` continues a checkpoint only when told to
(`resume=True`) and refuses to overwrite one otherwise. A run resumed from a
checkpoint redoes no generation and ends with exactly the result of an uninterrupted
run with the same seed (given a deterministic fitness function).
"""

import os
import time

import numpy as np
from deap import tools

from keras_neuromod import _fields
from keras_neuromod.io import atomic_write_json
from keras_neuromod.io import read_json

__all__ = ["EvolutionStrategy", "centered_ranks"]

CHECKPOINT_FORMAT = "keras_neuromod.EvolutionStrategy/2"
LOGBOOK_HEADER = ("gen", "max", "mean", "min", "std", "seconds")
UPDATES = ("momentum", "adam")


def centered_ranks(fitness):
    """Rank-based fitness shaping: centred ranks in `[-0.5, 0.5]`.

    The worst offspring gets -0.5, the best +0.5, the others equally spaced by rank.
    Ties are broken by position (deterministic), as in the reference ES code. With
    mirrored sampling (offspring `i` at `+eps_i`, offspring `half + i` at `-eps_i`)
    a tied pair then counts as a win of its `-eps_i` twin, so a generation on a
    plateau, where all offspring score the same, steps along `-sum_i eps_i`: a
    random direction, fresh every generation. That random walk is what carries the
    search off flat regions, which tasks scored by discrete outcomes (the T-maze's
    rewards, a silent spiking unit) have; with ties given their average rank the
    centre would never leave them.
    """
    fitness = np.asarray(fitness, dtype=np.float64).ravel()
    if fitness.size < 2:
        raise ValueError(f"`fitness` needs at least 2 values, got {fitness.size}.")
    ranks = np.empty(fitness.size, dtype=np.float64)
    ranks[np.argsort(fitness, kind="stable")] = np.arange(fitness.size)
    return ranks / (fitness.size - 1) - 0.5


class EvolutionStrategy:
    """Evolution strategies with mirrored sampling, rank shaping and momentum.

    Args:
        fitness_fn: callable `fitness_fn(genomes, rng) -> fitness`; `genomes` is a
            float32 array of shape `(population, num_params)`, `rng` a
            `numpy.random.Generator` for this generation's environments; returns
            `population` fitness values (higher is better, finite).
        initial: the initial centre, a 1-D array of the parameters.
        population: number of offspring per generation, even (mirrored pairs).
            The paper uses 512.
        sigma: standard deviation of the Gaussian perturbations (paper: 0.01).
        learning_rate: step size (on the momentum buffer, or of Adam's normalised
            step).
        momentum: momentum coefficient (paper: 0.9); Adam's `beta_1` with
            `update="adam"`.
        weight_decay: L2 coefficient pulling the centre towards zero (0 disables).
        seed: integer seed of the numpy generator (noise and environment seeds).
        update: `"momentum"` (the paper's) or `"adam"`.
        beta_2: Adam's second-moment decay (used with `update="adam"`).
        epsilon: Adam's denominator offset (used with `update="adam"`).

    Attributes:
        theta: the centre (float64).
        generation: generations run.
        logbook: DEAP `tools.Logbook`, one record per generation: `gen`, the
            offspring's `max`, `mean`, `min` and `std` fitness, and `seconds`.
    """

    def __init__(
        self,
        fitness_fn,
        initial,
        population=512,
        sigma=0.01,
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=0.0,
        seed=0,
        update="momentum",
        beta_2=0.999,
        epsilon=1e-8,
    ):
        initial, population, seed = _check_settings(
            fitness_fn,
            initial,
            population,
            sigma,
            learning_rate,
            momentum,
            weight_decay,
            seed,
            update,
            beta_2,
            epsilon,
        )
        self.fitness_fn = fitness_fn
        self.population = int(population)
        self.sigma = float(sigma)
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)
        self.update = update
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.theta = initial.copy()
        # The momentum buffer, or Adam's first moment; Adam's second moment.
        self.velocity = np.zeros_like(self.theta)
        self.second_moment = np.zeros_like(self.theta)
        self.rng = np.random.default_rng(self.seed)
        self.generation = 0
        self.logbook = _logbook()

    @property
    def num_params(self):
        return self.theta.size

    def get_config(self):
        """The hyperparameters that a checkpoint must agree with to be resumed."""
        return {
            "population": self.population,
            "sigma": self.sigma,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "num_params": self.num_params,
            "update": self.update,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }

    def ask(self):
        """Draw this generation's noise and environment seed.

        Returns `(genomes, noise, env_seed)`: `genomes` float32 `(population, n)`,
        `noise` float64 `(population // 2, n)`.
        """
        half = self.population // 2
        noise = self.rng.standard_normal((half, self.num_params))
        env_seed = int(self.rng.integers(0, 2**63 - 1))
        offsets = np.concatenate([noise, -noise], axis=0)
        genomes = (self.theta[None, :] + self.sigma * offsets).astype(np.float32)
        return genomes, noise, env_seed

    def tell(self, noise, fitness):
        """Update the centre from the offspring's fitness; this ends a generation."""
        fitness = np.asarray(fitness, dtype=np.float64).ravel()
        if fitness.size != self.population:
            raise ValueError(
                f"The fitness function returned {fitness.size} values for "
                f"{self.population} offspring."
            )
        if not np.all(np.isfinite(fitness)):
            raise ValueError("The fitness function returned non-finite values.")
        shaped = centered_ranks(fitness)
        half = self.population // 2
        # Mirrored pairs share one noise vector: offspring i used +eps_i and
        # offspring half + i used -eps_i.
        weights = shaped[:half] - shaped[half:]
        grad = weights @ noise / (self.population * self.sigma)
        if self.weight_decay:
            grad = grad - self.weight_decay * self.theta
        self.generation += 1
        if self.update == "momentum":
            self.velocity = self.momentum * self.velocity + grad
            self.theta = self.theta + self.learning_rate * self.velocity
            return
        step = self.generation  # Adam's bias corrections count from 1
        self.velocity = self.momentum * self.velocity + (1.0 - self.momentum) * grad
        self.second_moment = self.beta_2 * self.second_moment + (1.0 - self.beta_2) * grad**2
        m_hat = self.velocity / (1.0 - self.momentum**step)
        s_hat = self.second_moment / (1.0 - self.beta_2**step)
        self.theta = self.theta + self.learning_rate * m_hat / (np.sqrt(s_hat) + self.epsilon)

    def step(self):
        """Run one generation and return its logbook record."""
        start = time.perf_counter()
        genomes, noise, env_seed = self.ask()
        fitness = np.asarray(
            self.fitness_fn(genomes, np.random.default_rng(env_seed)), dtype=np.float64
        ).ravel()
        record = {
            "gen": self.generation,
            "max": float(fitness.max()),
            "mean": float(fitness.mean()),
            "min": float(fitness.min()),
            "std": float(fitness.std()),
        }
        self.tell(noise, fitness)
        record["seconds"] = time.perf_counter() - start
        self.logbook.record(**record)
        return record

    def run(self, generations, checkpoint_path=None, resume=False, progress=True):
        """Evolve until `generations` generations in total have run.

        Args:
            generations: the total number of generations (not additional ones).
            checkpoint_path: JSON file written atomically after every generation.
            resume: continue from `checkpoint_path` if it exists (its configuration
                must match this trainer's). Without it, an existing checkpoint
                raises `FileExistsError` rather than being overwritten.
            progress: show a tqdm progress bar.

        Returns:
            The centre `theta` after the last generation (float64 array).
        """
        generations = _fields.integer(generations, "`generations`")
        if checkpoint_path is not None and os.path.exists(checkpoint_path):
            if not resume:
                raise FileExistsError(
                    f"{os.fspath(checkpoint_path)} exists: pass resume=True to continue it, "
                    f"or choose another path."
                )
            self.load_checkpoint(checkpoint_path)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=int(generations),
                initial=min(self.generation, generations),
                desc="ES",
                unit="gen",
            )
        try:
            while self.generation < generations:
                record = self.step()
                if checkpoint_path is not None:
                    self.save_checkpoint(checkpoint_path)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(mean=f"{record['mean']:.4f}", best=f"{record['max']:.4f}")
        finally:
            if bar is not None:
                bar.close()
        return self.theta.copy()

    def state_dict(self):
        """Everything needed to resume, as JSON-ready Python values."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.get_config(),
            "generation": self.generation,
            "theta": self.theta.tolist(),
            "velocity": self.velocity.tolist(),
            "second_moment": self.second_moment.tolist(),
            "rng_state": self.rng.bit_generator.state,
            "logbook": list(self.logbook),
        }

    def load_state_dict(self, state, source=None):
        """Resume from `state_dict()` output; anything malformed raises `ValueError`.

        The messages name the checkpoint (`source`, a path) and the field.
        """
        where = "The checkpoint" + (f" {source!r}" if source is not None else "")

        def at(field):
            return f"{where}, field {field!r}"

        _check_checkpoint_fields(state, where)
        self._check_saved_config(state["config"], where, at)
        vectors = {
            name: self._read_vector(state[name], at(name))
            for name in ("theta", "velocity", "second_moment")
        }
        rng = _fields.generator(state["rng_state"], at("rng_state"))
        generation = _fields.integer(state["generation"], at("generation"))
        logbook = _read_logbook(state["logbook"], generation, at)
        self.theta, self.velocity, self.rng = vectors["theta"], vectors["velocity"], rng
        self.second_moment = vectors["second_moment"]
        self.generation = generation
        self.logbook = logbook

    def _check_saved_config(self, saved, where, at):
        """Raise unless the checkpoint's settings are this trainer's."""
        config = self.get_config()
        if not isinstance(saved, dict):
            raise ValueError(f"{at('config')} must be a JSON object.")
        if saved != config:
            diff = sorted(k for k in set(config) | set(saved) if config.get(k) != saved.get(k))
            raise ValueError(
                f"{where} was written with other settings ({', '.join(diff)}): "
                f"checkpoint {saved}, trainer {config}."
            )

    def _read_vector(self, value, field):
        """One saved parameter-sized vector as a float64 array."""
        values = _fields.items(value, field, length=self.num_params)
        return np.array([_fields.number(v, field) for v in values], dtype=np.float64)

    def save_checkpoint(self, path):
        atomic_write_json(path, self.state_dict())

    def load_checkpoint(self, path):
        self.load_state_dict(read_json(path, "ES checkpoint"), source=os.fspath(path))


def _check_checkpoint_fields(state, where):
    """Raise unless `state` is a checkpoint of this format with exactly its fields."""
    found = state.get("format") if isinstance(state, dict) else None
    if found != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{where} is not an EvolutionStrategy checkpoint that this version reads: its "
            f"format is {found!r:.80}, expected {CHECKPOINT_FORMAT!r}."
        )
    _fields.fields(
        state,
        where,
        (
            "format",
            "config",
            "generation",
            "theta",
            "velocity",
            "second_moment",
            "rng_state",
            "logbook",
        ),
    )


def _read_logbook(value, generation, at):
    """The saved logbook, one checked record per generation."""
    logbook = _logbook()
    records = _fields.items(value, at("logbook"), length=generation)
    for i, record in enumerate(records):
        _fields.fields(record, at(f"logbook[{i}]"), LOGBOOK_HEADER)
        logbook.record(
            **{
                name: (_fields.integer if name == "gen" else _fields.number)(
                    record[name], at(f"logbook[{i}].{name}")
                )
                for name in LOGBOOK_HEADER
            }
        )
    return logbook


def _check_settings(
    fitness_fn,
    initial,
    population,
    sigma,
    learning_rate,
    momentum,
    weight_decay,
    seed,
    update,
    beta_2,
    epsilon,
):
    """`EvolutionStrategy`'s arguments checked: `(initial, population, seed)` made plain.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    if not callable(fitness_fn):
        raise ValueError("`fitness_fn` must be callable.")
    initial = np.asarray(initial, dtype=np.float64)
    if initial.ndim != 1 or initial.size == 0:
        raise ValueError(f"`initial` must be a non-empty 1-D array, got shape {initial.shape}.")
    if not np.all(np.isfinite(initial)):
        raise ValueError("`initial` must be finite.")
    population = _fields.integer(population, "`population`", minimum=2)
    if population % 2:
        raise ValueError(f"`population` must be even (mirrored pairs), got {population}.")
    if not sigma > 0:
        raise ValueError(f"`sigma` must be positive, got {sigma!r}.")
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be positive, got {learning_rate!r}.")
    if not 0 <= momentum < 1:
        raise ValueError(f"`momentum` must be in [0, 1), got {momentum!r}.")
    if not weight_decay >= 0:
        raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay!r}.")
    seed = _fields.integer(seed, "`seed`")
    if update not in UPDATES:
        raise ValueError(f"`update` must be one of {UPDATES}, got {update!r}.")
    if not 0 <= beta_2 < 1:
        raise ValueError(f"`beta_2` must be in [0, 1), got {beta_2!r}.")
    if not epsilon > 0:
        raise ValueError(f"`epsilon` must be positive, got {epsilon!r}.")
    return initial, population, seed


def _logbook():
    logbook = tools.Logbook()
    logbook.header = list(LOGBOOK_HEADER)
    return logbook
