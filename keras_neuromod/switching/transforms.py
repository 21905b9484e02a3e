"""The fixed weight-space transform ``W' = M W``, ``b' = b + v``, in numpy.

Keras stores a kernel as (inputs, units), the transpose of the paper's W, so
``W' = M W`` reads ``K' = K M^T``: M acts on the kernel's last axis. The same
functions serve the flat form, whose "kernel" is one vector of all the weights
(for a vector w, ``w M^T`` is ``M w``).

The conditioning of M is chosen by `modulation`:

* ``"identity_gaussian"``: ``M = I + scale * G / sqrt(n)``, G standard normal.
  Close to the identity for a small scale; with scale 1 its eigenvalues fill
  the unit disc around 1 (circular law), so M is invertible with probability
  one but may be poorly conditioned for a few units.
* ``"orthogonal"``: a Haar-random orthogonal matrix (QR of a Gaussian with the
  signs of R's diagonal fixed); perfectly conditioned, `scale` is not used.
* ``"gaussian"``: ``M = scale * G / sqrt(n)``, the plain random matrix the paper
  describes; the worst conditioned of the three.

v is ``bias_scale * N(0, 1)`` per unit. The paper gives no scale for either.
"""

import numpy as np

from keras_neuromod import _fields

__all__ = ["MODULATIONS", "draw_modulation", "transform", "inverse_transform"]

MODULATIONS = ("identity_gaussian", "orthogonal", "gaussian")


def check_seed(seed):
    """A non-negative int seed; None draws one from numpy's global generator.

    Drawn from the global generator, `keras.utils.set_random_seed` makes it
    reproducible, and a layer stores it in its config as a plain int.
    """
    if seed is None:
        return int(np.random.randint(0, 2**31 - 1))
    return _fields.integer(seed, "modulation_seed")


def draw_modulation(
    size, modulation="identity_gaussian", scale=1.0, bias_size=None, bias_scale=1.0, seed=0
):
    """Draw the fixed transform (M, v) from a seed.

    Args:
        size: the side n of the square matrix M.
        modulation: ``"identity_gaussian"``, ``"orthogonal"`` or ``"gaussian"``
            (see the module docstring).
        scale: scale of the Gaussian part of M (unused by ``"orthogonal"``).
        bias_size: length of v (default `size`); 0 for no v.
        bias_scale: standard deviation of v.
        seed: seed of numpy's generator; one seed gives one (M, v).

    Returns:
        ``(M, v)`` as float32 numpy arrays, shapes (n, n) and (bias_size,).
    """
    size = _fields.integer(size, "size", 1)
    _fields.choice(modulation, "modulation", MODULATIONS)
    scale = _fields.number(scale, "modulation_scale", 0)
    bias_scale = _fields.number(bias_scale, "bias_modulation_scale", 0)
    bias_size = size if bias_size is None else _fields.integer(bias_size, "bias_size")
    rng = np.random.default_rng(check_seed(seed))
    gaussian = rng.standard_normal((size, size))
    if modulation == "identity_gaussian":
        matrix = np.eye(size) + scale * gaussian / np.sqrt(size)
    elif modulation == "gaussian":
        matrix = scale * gaussian / np.sqrt(size)
    else:
        q, r = np.linalg.qr(gaussian)
        signs = np.sign(np.diag(r))
        signs[signs == 0] = 1.0
        matrix = q * signs
    vector = bias_scale * rng.standard_normal(bias_size)
    return matrix.astype("float32"), vector.astype("float32")


def transform(kernel, bias, matrix, vector):
    """Apply the transform to a Keras kernel and bias: ``K' = K M^T``, ``b' = b + v``.

    The kernel's last axis holds the layer's units (Keras's layout), so this is
    the paper's ``W' = M W`` for W = K^T; a flat weight vector w gives ``M w``.
    `bias` and `vector` may be None. Works on numpy arrays (float64 arithmetic)
    and returns numpy arrays.
    """
    kernel = np.asarray(kernel, dtype="float64")
    matrix = np.asarray(matrix, dtype="float64")
    new_kernel = kernel @ matrix.T
    new_bias = None if bias is None else np.asarray(bias, "float64") + np.asarray(vector)
    return new_kernel, new_bias


def inverse_transform(kernel, bias, matrix, vector):
    """Undo `transform`: ``K = K' M^-T``, ``b = b' - v`` (``W = M^-1 W'``).

    Solves with M rather than forming its inverse; raises `ValueError` when M is
    singular.
    """
    kernel = np.asarray(kernel, dtype="float64")
    matrix = np.asarray(matrix, dtype="float64")
    flat = kernel.reshape(-1, kernel.shape[-1])
    try:
        # K' = K M^T  <=>  M K^T = K'^T.
        solved = np.linalg.solve(matrix, flat.T).T
    except np.linalg.LinAlgError:
        raise ValueError("The modulation matrix M is singular; it has no inverse.") from None
    new_bias = None if bias is None else np.asarray(bias, "float64") - np.asarray(vector)
    return solved.reshape(kernel.shape), new_bias
