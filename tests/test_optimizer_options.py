"""Keras's optimizer options on the neuromodulated optimizers, against numpy.

With every range a single value, the AGRN's outputs change nothing, so Nm-SGD
and Nm-Adam must take the steps of plain SGD and Adam. Here those steps, the
gradient clipping (`clipnorm`, `global_clipnorm`) and the moving average of
the weights (`use_ema`) are computed independently in numpy, and the
optimizers' variables must hold the same values after every step.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_neuromod import Genome
from keras_neuromod import NmAdam
from keras_neuromod import NmSGD

SHAPES = [(3, 4), (5,)]
STEPS = 6
LR, MOMENTUM = 0.1, 0.9
ADAM = {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-6}


def _initial():
    rng = np.random.default_rng(0)
    return [rng.normal(size=shape).astype("float32") for shape in SHAPES]


def _gradients():
    """Gradients of norms from about 0.1 to 10, so that some are clipped and some not."""
    rng = np.random.default_rng(1)
    return [
        [(rng.normal(size=shape) * scale).astype("float32") for shape in SHAPES]
        for scale in np.geomspace(0.05, 5.0, STEPS)
    ]


def _nm_sgd(**options):
    fixed = {"learning_rate": (LR, LR), "momentum": (MOMENTUM, MOMENTUM)}
    return NmSGD(agent=Genome.random(13, 4, 2, rng=0), ranges=fixed, **options)


def _nm_adam(**options):
    fixed = {name: (value, value) for name, value in ADAM.items()}
    return NmAdam(agent=Genome.random(13, 8, 2, rng=0), ranges=fixed, **options)


def _train(optimizer):
    """The variables after each step (numpy), and the optimizer."""
    variables = [keras.Variable(value) for value in _initial()]
    history = []
    for grads in _gradients():
        optimizer.apply_gradients(zip([ops.convert_to_tensor(g) for g in grads], variables))
        history.append([ops.convert_to_numpy(v) for v in variables])
    return history, optimizer


def _clip_each(grads, clipnorm):
    return [g * clipnorm / max(np.linalg.norm(g), clipnorm) for g in grads]


def _clip_global(grads, clipnorm):
    norm = np.sqrt(sum(np.sum(g.astype("float64") ** 2) for g in grads))
    return [g * clipnorm / max(norm, clipnorm) for g in grads]


def _numpy_sgd(clip=lambda grads: grads):
    weights = [w.astype("float64") for w in _initial()]
    velocity = [np.zeros_like(w) for w in weights]
    history = []
    for grads in _gradients():
        for w, v, g in zip(weights, velocity, clip(grads)):
            v *= MOMENTUM
            v -= LR * g
            w += v
        history.append([w.copy() for w in weights])
    return history


def _numpy_adam(clip=lambda grads: grads):
    lr, b1, b2, eps = (ADAM[k] for k in ("learning_rate", "beta_1", "beta_2", "epsilon"))
    weights = [w.astype("float64") for w in _initial()]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    history = []
    for t, grads in enumerate(_gradients(), start=1):
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        for w, mi, vi, g in zip(weights, m, v, clip(grads)):
            mi += (1 - b1) * (g - mi)
            vi += (1 - b2) * (g * g - vi)
            w -= alpha * mi / (np.sqrt(vi) + eps)
        history.append([w.copy() for w in weights])
    return history


def _assert_close(got, expected):
    for step, (a_step, b_step) in enumerate(zip(got, expected, strict=True)):
        for a, b in zip(a_step, b_step, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {step + 1}")


def test_the_numpy_reference_clips_some_gradients_and_not_others():
    norms = [np.linalg.norm(g) for grads in _gradients() for g in grads]
    assert min(norms) < 0.5 < 2.0 < max(norms)


def test_without_options_the_steps_are_numpy_sgd_and_adam():
    _assert_close(_train(_nm_sgd())[0], _numpy_sgd())
    _assert_close(_train(_nm_adam())[0], _numpy_adam())


@pytest.mark.parametrize("clipnorm", [0.5, 2.0])
def test_clipnorm_clips_each_gradient_by_its_own_norm(clipnorm):
    _assert_close(
        _train(_nm_sgd(clipnorm=clipnorm))[0], _numpy_sgd(lambda grads: _clip_each(grads, clipnorm))
    )
    _assert_close(
        _train(_nm_adam(clipnorm=clipnorm))[0],
        _numpy_adam(lambda grads: _clip_each(grads, clipnorm)),
    )


def test_clipnorm_changes_the_steps():
    clipped = _numpy_sgd(lambda grads: _clip_each(grads, 0.5))
    assert not np.allclose(clipped[-1][0], _numpy_sgd()[-1][0], rtol=1e-3)


@pytest.mark.parametrize("clipnorm", [0.5, 2.0])
def test_global_clipnorm_clips_all_gradients_by_their_joint_norm(clipnorm):
    _assert_close(
        _train(_nm_sgd(global_clipnorm=clipnorm))[0],
        _numpy_sgd(lambda grads: _clip_global(grads, clipnorm)),
    )


@pytest.mark.parametrize(
    "make, reference", [(_nm_sgd, _numpy_sgd), (_nm_adam, _numpy_adam)], ids=["sgd", "adam"]
)
def test_use_ema_keeps_the_numpy_moving_average_of_the_weights(make, reference):
    momentum = 0.7
    history, optimizer = _train(make(use_ema=True, ema_momentum=momentum))
    expected = reference()
    _assert_close(history, expected)  # the weights themselves are not changed
    average = None
    for weights in expected:  # the first step copies the weights, then averages
        average = (
            weights
            if average is None
            else [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
        )
    got = [ops.convert_to_numpy(v) for v in optimizer._model_variables_moving_average]
    _assert_close([got], [average])
    assert not np.allclose(got[0], expected[-1][0], rtol=1e-3)  # an average, not the weights
