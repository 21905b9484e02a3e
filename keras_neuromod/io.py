"""Safe JSON files: atomic writes and loads with clear errors.

Agents and checkpoints are shared between people, so they are JSON, never
pickle, and a crash while writing never leaves a half-written file behind.
"""

import json
import math
import os
import tempfile

import numpy as np

__all__ = ["atomic_write_json", "read_json", "to_jsonable"]


def to_jsonable(value):
    """Convert numpy scalars and arrays (nested in dicts, lists, tuples) to plain Python."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN or Inf; keep them readable and explicit.
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def atomic_write_json(path, data, indent=2):
    """Write `data` as JSON to `path` atomically.

    The text goes to a temporary file in the same folder, is flushed and synced,
    then renamed over `path`: a reader sees the old file or the new one, never a
    half-written one.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    text = json.dumps(to_jsonable(data), indent=indent, allow_nan=False)
    handle, temporary = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private (0600); give it the usual permissions
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path, what="file"):
    """Read a JSON file; a missing or malformed file raises `ValueError` naming it."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"The {what} {path!r} does not exist.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"The {what} {path!r} is not valid JSON: {error}") from None
