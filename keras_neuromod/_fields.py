"""Checks of hand-editable JSON fields, raising `ValueError` that names them.

Every loader of a shared file (agents, zoo indexes, GRNEAT and ES checkpoints)
validates what it reads with these before using it, so that a malformed file
raises `ValueError` naming the file and the field, never `KeyError` or
`TypeError`. `where` is the start of the message, e.g.
``"The checkpoint 'out/checkpoint.json', field 'generation'"``.
"""

import math

import numpy as np


def fields(data, where, required, optional=()):
    """`data` must be a dict holding every `required` key and no key outside `optional`."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}.")
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"{where} is missing field(s) {missing}.")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        expected = list(required) + list(optional)
        raise ValueError(f"{where} has unknown field(s) {unknown}; expected {expected}.")
    return data


def is_integer(value):
    """Whether `value` is an integer: a Python or numpy int, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value):
    """Whether `value` is a real number: a Python or numpy int or float, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def integer(value, where, minimum=0, maximum=None):
    """An int (not a bool) in [minimum, maximum]."""
    if not is_integer(value):
        raise ValueError(f"{where} must be an integer, got {value!r:.80}.")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{where} must be an integer {bounds}, got {value!r:.80}.")
    return value


def number(value, where, minimum=-math.inf, maximum=math.inf):
    """A finite real number (not a bool) in [minimum, maximum], as a float."""
    if not is_number(value):
        raise ValueError(f"{where} must be a number, got {value!r:.80}.")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{where} is too large for a float.") from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ValueError(
            f"{where} must be a finite number in [{minimum}, {maximum}], got {value!r}."
        )
    return value


def choice(value, where, choices):
    """One of `choices`, e.g. a layer's mode argument."""
    if value not in choices:
        raise ValueError(f"{where} must be one of {list(choices)}, got {value!r:.80}.")
    return value


def items(value, where, length=None, max_length=None):
    """A list (of `length` items, or at most `max_length`)."""
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list, got {type(value).__name__}.")
    if length is not None and len(value) != length:
        raise ValueError(f"{where} must have {length} items, got {len(value)}.")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"{where} must have at most {max_length} items, got {len(value)}.")
    return value


def text(value, where):
    """A string."""
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r:.80}.")
    return value


def generator(state, where):
    """A numpy `Generator` restored from its `bit_generator.state` (a PCG64 state dict)."""
    if not isinstance(state, dict):
        raise ValueError(f"{where} must be a JSON object.")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as error:
        raise ValueError(f"{where} is not a numpy PCG64 generator state: {error!r:.200}") from None
    return rng


def unit_array(value, where):
    """A one-dimensional list of finite numbers in [0, 1], as a float64 numpy array.

    The items follow `is_number` (bools and strings are refused); a numpy array of
    ints or floats is accepted too.
    """
    if isinstance(value, np.ndarray):
        numbers = value.dtype.kind in "iuf"
    else:
        numbers = isinstance(value, (list, tuple)) and all(is_number(item) for item in value)
    if not numbers:
        raise ValueError(f"{where} must be a list of numbers, got {value!r:.80}.")
    try:
        array = np.array(value, dtype=np.float64)
    except OverflowError:
        raise ValueError(f"{where} must be a list of numbers, got {value!r:.80}.") from None
    if array.ndim != 1:
        raise ValueError(f"{where} must be one-dimensional, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where} contains non-finite values.")
    bad = np.flatnonzero((array < 0.0) | (array > 1.0))
    if bad.size:
        raise ValueError(
            f"{where} must lie in [0, 1]; value {array[bad[0]]!r} at index {int(bad[0])} does not."
        )
    return array
