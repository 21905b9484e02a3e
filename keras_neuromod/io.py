"""Safe JSON files: atomic writes and loads with clear errors.

Agents and checkpoints are shared between people, so they are JSON, never
pickle, and a crash while writing never leaves a half-written file behind.

Agent, genome and zoo index files larger than `MAX_AGENT_BYTES` are refused
before they are parsed, so that loading a shared file can neither run code nor
exhaust memory. Python's `json` reads `NaN`, `Infinity` and numbers too large
for a float (as non-finite floats); the loaders refuse them, naming the field,
wherever a number must be finite.
"""

import json
import math
import os
import tempfile

import numpy as np

__all__ = ["atomic_write_json", "read_bytes", "read_json", "parse_json", "to_jsonable", "MAX_AGENT_BYTES"]

# The largest agent, genome or zoo index file that is read: 4 MiB. A genome at
# the protein cap (`agrn.MAX_PROTEINS`) takes about 85 kB of indented JSON and the
# shipped agent cards about 11 kB; parsing 4 MiB of JSON costs at most about a
# hundred megabytes of Python objects.
MAX_AGENT_BYTES = 4 * 2**20


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


def atomic_write_json(path, data, indent=2, max_bytes=None):
    """Write `data` as JSON to `path` atomically.

    The text goes to a temporary file in the same folder, is flushed and synced,
    then renamed over `path`: a reader sees the old file or the new one, never a
    half-written one. With `max_bytes`, a text longer than that (which
    `read_json` would refuse with the same limit) raises `ValueError` and
    nothing is written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    text = json.dumps(to_jsonable(data), indent=indent, allow_nan=False)
    if max_bytes is not None and len(text.encode("utf-8")) + 1 > max_bytes:
        raise ValueError(
            f"Not writing {path!r}: its JSON takes {len(text.encode('utf-8')) + 1} bytes, "
            f"more than the {max_bytes} that loading it allows."
        )
    os.makedirs(folder, exist_ok=True)
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


def parse_json(text, what="JSON text", max_bytes=None):
    """Parse JSON text; anything malformed raises `ValueError` naming `what`.

    Texts nested too deeply for the parser are refused, and with `max_bytes`
    texts longer than that (checked before parsing).
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"The {what} is not UTF-8 text: {error}") from None
    if not isinstance(text, str):
        raise ValueError(f"The {what} must be a JSON string, got {type(text).__name__}.")
    if max_bytes is not None and len(text) > max_bytes:
        # (characters: at most as many as the bytes, so this never refuses too early)
        raise ValueError(
            f"The {what} is larger than {max_bytes} bytes, the most that is read."
        )
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"The {what} is not valid JSON: it is nested too deeply.") from None
    except ValueError as error:  # JSONDecodeError, and too many digits in an integer
        raise ValueError(f"The {what} is not valid JSON: {error}") from None


def read_bytes(path, what="file", max_bytes=None):
    """Read a file's bytes; a missing, oversized or folder path raises an error naming it.

    Args:
        path: the file.
        what: what the file is, for the messages (``"agent file"``).
        max_bytes: refuse a file larger than this, before reading it (None: no
            limit). Agents, genomes and zoo indexes use `MAX_AGENT_BYTES`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is a folder or is too large.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"The {what} {path!r} is a folder, not a file.")
    try:
        with open(path, "rb") as stream:
            if max_bytes is not None:
                size = os.fstat(stream.fileno()).st_size
                if size > max_bytes:
                    raise ValueError(
                        f"The {what} {path!r} has {size} bytes, more than the {max_bytes} "
                        "that are read (keras_neuromod.io.MAX_AGENT_BYTES for agents)."
                    )
                data = stream.read(max_bytes + 1)  # a file that grows is still bounded
            else:
                data = stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"The {what} {path!r} does not exist.") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"The {what} {path!r} has more than the {max_bytes} bytes that are read.")
    return data


def read_json(path, what="file", max_bytes=None):
    """Read a JSON file; a missing or malformed file raises an error naming it.

    Args:
        path: the file.
        what: what the file is, for the messages (``"agent file"``).
        max_bytes: as in `read_bytes`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is a folder, is too large, is not UTF-8, or is not
            valid JSON.
    """
    path = os.fspath(path)
    data = read_bytes(path, what, max_bytes)
    return parse_json(data, what=f"{what} {path!r}")
