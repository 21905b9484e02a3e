"""Evolution of neuromodulatory agents (GRNEAT on DEAP) and of evolvable neural units.

`evolve` runs GRNEAT over real trainings, with a JSON checkpoint after every
generation: by default as compiled, batched JAX code (`VectorizedEvaluator`, the
fitness `model.fit` gives, many times faster), or one `model.fit` per individual,
serially, on local processes or on a Ray cluster.
`evolve(algorithm="static")` is the control without modulation: CMA-ES over fixed
hyperparameters (`FixedHyperparameters`, written as agents by `static_agent`).
`evolve(algorithm="cmaes")` searches the tags of genomes of a fixed topology with
CMA-ES, from a silent genome (`keras_neuromod.evolution.cmaes`).
`EvolutionStrategy` evolves the shared weights of evolvable neural units;
`ENUFitness` scores a whole population of ENU genomes in one compiled call.
"""

from keras_neuromod.evolution.engine import EvolutionResult
from keras_neuromod.evolution.engine import Individual
from keras_neuromod.evolution.engine import evolve
from keras_neuromod.evolution.engine import score_on_validation
from keras_neuromod.evolution.enu_fitness import ENUFitness
from keras_neuromod.evolution.fitness import Evaluator
from keras_neuromod.evolution.fitness import FitnessTask
from keras_neuromod.evolution.fitness import GenomeEvaluator
from keras_neuromod.evolution.fitness import TaskError
from keras_neuromod.evolution.grneat import GRNEATConfig
from keras_neuromod.evolution.static import FixedHyperparameters
from keras_neuromod.evolution.static import static_agent
from keras_neuromod.evolution.strategies import EvolutionStrategy
from keras_neuromod.evolution.suite import SuiteTask
from keras_neuromod.evolution.vectorized import VectorizedEvaluator

__all__ = [
    "evolve",
    "score_on_validation",
    "EvolutionResult",
    "EvolutionStrategy",
    "ENUFitness",
    "Individual",
    "GenomeEvaluator",
    "Evaluator",
    "VectorizedEvaluator",
    "FitnessTask",
    "GRNEATConfig",
    "SuiteTask",
    "TaskError",
    "FixedHyperparameters",
    "static_agent",
]
