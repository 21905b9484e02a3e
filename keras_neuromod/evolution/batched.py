"""Scoring a population in compiled, batched calls: the machinery both evolutions share.

GRNEAT's vectorized evaluation (`keras_neuromod.evolution.vectorized`) and the
evolution strategy's ENU fitness (`keras_neuromod.evolution.enu_fitness`) score a
whole population with one compiled function that takes the population's genomes
along a leading axis. Both go through `evaluate_population`, which

* splits the population into groups of a fixed `width`, padding the last group
  with copies of its first genome (so one compiled program serves every group,
  and an individual's result does not depend on how the population is split),
* calls the compiled function once per group,
* and gives every individual whose score is not finite (a diverging training, a
  simulation that blew up) the worst fitness, leaving the others alone.

`compile_batched` compiles a `keras.ops` function with the backend's own compiler.
"""

import math

import keras
import numpy as np

__all__ = ["compile_batched", "evaluate_groups", "evaluate_population"]


def compile_batched(fn):
    """Compile a `keras.ops` function once with the backend's own compiler.

    TensorFlow: `tf.function` (graph mode; XLA is left off, it is slower on CPU for
    small recurrent steps). JAX: `jax.jit`. Other backends: the function as it
    is. The function's code itself stays backend-agnostic.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def _population_size(population):
    sizes = {int(np.shape(part)[0]) for part in population}
    if len(sizes) != 1:
        raise ValueError(f"The population's arrays disagree on its size: {sorted(sizes)}.")
    return sizes.pop()


def evaluate_groups(call, population, width=None):
    """Call `call` on the population group by group; return the results stacked.

    Args:
        call: `call(group) -> results`: `group` is a tuple of arrays (numpy),
            each with a leading axis of exactly `width` individuals (the last
            group padded with copies of its first individual); returns `width`
            results along its leading axis (a tensor or an array).
        population: an array, or a tuple of arrays, with the individuals along
            the leading axis.
        width: individuals per call (None: the whole population in one call).

    Returns:
        A float64 numpy array whose leading axis has one entry per individual.
    """
    single = not isinstance(population, tuple)
    parts = (population,) if single else population
    parts = tuple(np.asarray(part) for part in parts)
    size = _population_size(parts)
    if size == 0:
        return np.zeros((0,), np.float64)
    width = size if width is None else int(width)
    if width < 1:
        raise ValueError(f"width must be at least 1, got {width!r}.")
    results = []
    for start in range(0, size, width):
        stop = min(start + width, size)
        index = np.arange(start, start + width)
        index[stop - start :] = start  # pad with copies of the group's first individual
        group = tuple(part[index] for part in parts)
        result = np.asarray(
            keras.ops.convert_to_numpy(call(group[0] if single else group)), np.float64
        )
        if result.ndim == 0 or result.shape[0] != width:
            got = 1 if result.ndim == 0 else result.shape[0]
            raise ValueError(
                f"The population's score function returned {got} scores for a group of {width}."
            )
        results.append(result[: stop - start])
    return np.concatenate(results)


def evaluate_population(call, population, width=None, worst_fitness=-math.inf):
    """Score a population group by group; non-finite scores become `worst_fitness`.

    Args:
        call: `call(group) -> scores`, as in `evaluate_groups`, with one score
            per individual.
        population: an array, or a tuple of arrays, with the individuals along
            the leading axis.
        width: individuals per call (None: the whole population in one call).
        worst_fitness: the score of an individual whose score is NaN or Inf.

    Returns:
        A float64 numpy array of one score per individual.
    """
    scores = evaluate_groups(
        lambda group: np.reshape(np.asarray(keras.ops.convert_to_numpy(call(group))), (-1,)),
        population,
        width,
    )
    return np.where(np.isfinite(scores), scores, float(worst_fitness))
