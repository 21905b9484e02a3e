"""Runs in a fresh process under Keras's JAX backend (see test_static_search.py).

What the static search computes in its JAX workers: a static agent trains as
Keras's Adam / SGD with its values under JAX too, and a candidate's fitness
(the "frozen" ablation, batched, as the search scores it) is the fitness of its
agent (collapsed ranges) scored as agents are. Prints one JSON object.

    KERAS_BACKEND=jax python tests/static_jax.py AGENT_DIR
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_neuromod import Genome  # noqa: E402
from keras_neuromod import zoo  # noqa: E402
from keras_neuromod.evolution import SuiteTask  # noqa: E402
from keras_neuromod.evolution.static import FixedHyperparameters  # noqa: E402
from keras_neuromod.evolution.static import static_agent  # noqa: E402
from keras_neuromod.evolution.suite import SuiteEvaluator  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import train_weights  # noqa: E402
from test_static_search import POSITIONS  # noqa: E402


def like_keras(folder):
    """Largest weight difference between each static agent and Keras's optimizer."""
    differences = {}
    for base, positions in POSITIONS.items():
        candidate = FixedHyperparameters.at(base, positions)
        path = zoo.save(
            static_agent(candidate, f"static_{base}"), os.path.join(folder, f"{base}.json")
        )
        agent = zoo.load(path)
        keras_optimizer = (keras.optimizers.Adam if base == "adam" else keras.optimizers.SGD)(
            **candidate.values
        )
        got = train_weights(agent.optimizer())
        expected = train_weights(keras_optimizer)
        differences[base] = max(float(np.max(np.abs(a - b))) for a, b in zip(got, expected))
    return differences


def fitness_as_agent():
    """The search's scores of candidates, and the scores of their agents as agents."""
    # at the task's budget, unscaled: a varied instance (longer, of larger initial weights)
    # amplifies the two programs' rounding differences as training grows chaotic
    suite = SuiteTask(
        tasks=("friedman1",),
        instances=2,
        max_regulatory=4,
        inputs="paper",
        reference="default",
        augmentation="none",
    )
    candidates = [
        FixedHyperparameters.at("adam", p) for p in ([0.5, 0.9, 0.998, 0.125], [0.7, 0.5, 0.9, 0.3])
    ]
    searched, _ = SuiteEvaluator(suite).scores(candidates, 11)
    as_agents = []
    for candidate in candidates:
        fixed = SuiteTask(
            tasks=suite.tasks,
            instances=2,
            max_regulatory=4,
            ranges=candidate.ranges,
            inputs="paper",
            reference="default",
            augmentation="none",
        )
        genome = Genome.random(13, 8, 2, rng=0)  # any genome: every range is one value
        as_agents.append(SuiteEvaluator(fixed).scores([genome], 11)[0][0].tolist())
    return {"searched": searched.tolist(), "as_agents": as_agents}


def main():
    keras.utils.set_random_seed(0)
    out = {
        "backend": keras.backend.backend(),
        "like_keras": like_keras(sys.argv[1]),
        "fitness": fitness_as_agent(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
