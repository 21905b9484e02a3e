"""Batched fitness of evolvable neural units: a whole ES generation in one compiled call.

An `EvolutionStrategy` hands its fitness function all offspring of a generation at
once, as flat genomes `(population, num_params)` (the layout of
`ENUCell.get_flat_weights` or `ENUNetwork.get_flat_weights`), and a
`numpy.random.Generator` for that generation's environments. `ENUFitness` is that
function for ENU tasks: it draws the environments with the task's own
`environments(rng)`, then scores every genome on every environment with the task's
`score`, written in `keras.ops` with a population axis on the weights and compiled
once by the backend's compiler (`compile_batched`), so that a generation is one call
(or one call per `width` offspring). The population goes through the same machinery
as GRNEAT's vectorized training (`keras_neuromod.evolution.batched`): groups of a
fixed width, and the worst fitness for an offspring whose score is not finite.

For a task where one ENU reads a given input sequence (integrate-and-fire, STDP),
`enu_outputs` runs each genome's ENU on the shared environments from zero state;
for a network of ENUs in a closed loop with its environment (the T-maze), the score
steps `keras_neuromod.layers.enu.network_step` with `population=True` itself. Every
evaluation starts from zero unit state.

    def score(genomes, inputs, targets):              # (P, n), (T, E, 1), (T, E)
        outputs = enu_outputs(genomes, inputs, memory=8, channels=2)   # (T, P, E, 2)
        return -ops.mean(ops.square(outputs[..., 0] - targets[:, None]), axis=(0, 2))

    fitness = ENUFitness(score, lambda rng: make_environments(rng))
    EvolutionStrategy(fitness, initial, population=128).run(1000)
"""

import math

from keras import ops

from keras_neuromod.evolution.batched import compile_batched
from keras_neuromod.evolution.batched import evaluate_population
from keras_neuromod.layers.enu import enu_run
from keras_neuromod.layers.enu import enu_unflatten

__all__ = ["ENUFitness", "enu_outputs", "compile_batched"]


def enu_outputs(genomes, inputs, memory, channels):
    """Outputs of ENUs with the given flat genomes on shared input sequences.

    Args:
        genomes: `(P, num_params)`, one genome per individual, or one genome
            `(num_params,)`.
        inputs: `(T, E, input_dim)`: `E` environments, time first; every individual
            reads the same ones.
        memory, channels: the ENU's sizes (`input_dim` is the inputs' last axis).

    Returns:
        `(T, P, E, channels)`, or `(T, E, channels)` for one genome, from zero state.
    """
    steps, envs, input_dim = (int(d) for d in ops.shape(inputs))
    weights = enu_unflatten(genomes, input_dim, memory, channels)
    if len(ops.shape(genomes)) == 1:
        return enu_run(weights, inputs, memory, channels)
    population = ops.shape(genomes)[0]
    x = ops.broadcast_to(inputs[:, None], (steps, population, envs, input_dim))
    return enu_run(weights, x, memory, channels)


class ENUFitness:
    """A population of flat ENU genomes scored on one generation's environments.

    Args:
        score: `score(genomes, *environment)` in `keras.ops`: `genomes` is
            `(P, num_params)`, `environment` the arrays `environments` returns;
            returns the `(P,)` fitnesses (higher is better), or a tuple whose first
            item they are (the others, e.g. the agent's behaviour, are for
            `evaluate`). Compiled once with `compile_batched`.
        environments: `environments(rng) -> tuple of arrays`, one generation's
            environments drawn from the generator the ES gives.
        width: offspring per compiled call (None: the whole population in
            one call); a smaller width bounds the memory of large populations.
        worst_fitness: the fitness of an offspring whose score is NaN or Inf
            (a simulation that blew up).

    Calling it, `fitness(genomes, rng)`, is `EvolutionStrategy`'s fitness contract:
    it returns the fitnesses as a numpy array.
    """

    def __init__(self, score, environments, width=None, worst_fitness=-math.inf):
        if not callable(score) or not callable(environments):
            raise ValueError("`score` and `environments` must be callable.")
        self.score = score
        self.environments = environments
        self.width = width
        self.worst_fitness = float(worst_fitness)
        self.compiled = compile_batched(score)

    def evaluate(self, genomes, *environment):
        """The compiled score on given environments, as numpy (every item of a tuple)."""
        result = self.compiled(genomes, *environment)
        if isinstance(result, (tuple, list)):
            return tuple(ops.convert_to_numpy(r) for r in result)
        return ops.convert_to_numpy(result)

    def __call__(self, genomes, rng):
        environment = self.environments(rng)
        if not isinstance(environment, tuple):
            environment = (environment,)

        def call(group):
            result = self.compiled(group, *environment)
            return result[0] if isinstance(result, (tuple, list)) else result

        return evaluate_population(call, genomes, self.width, self.worst_fitness)
