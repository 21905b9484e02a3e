"""Safe JSON files: atomic writes and loads with clear errors.

Agents and checkpoints are shared between people, so they are JSON, never
pickle, and a crash while writing never leaves a half-written file behind.

Agent, genome and zoo index files larger than `MAX_AGENT_BYTES` are refused
before they are parsed, so that loading a shared file can neither run code nor
exhaust memory. Python's `json` reads `NaN`, `Infinity` and numbers too large
for a float (as non-finite floats); the loaders refuse them, naming the field,
wherever a number must be finite.

`folder_lock` keeps two runs from writing into one output folder at once.
"""

import contextlib
import datetime
import json
import math
import os
import socket
import tempfile
import time
import warnings

import numpy as np

__all__ = [
    "atomic_open",
    "atomic_write_text",
    "atomic_write_json",
    "read_bytes",
    "read_json",
    "parse_json",
    "to_jsonable",
    "MAX_AGENT_BYTES",
    "folder_lock",
    "FolderLockedError",
]

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


@contextlib.contextmanager
def atomic_open(path, newline=None):
    """Open `path` for writing text, atomically: a context manager that yields the stream.

    The stream writes a temporary file in the same folder (made as needed);
    when the block ends without an error the file is flushed, synced and
    renamed over `path`, so a reader sees the old file or the new one, never a
    half-written one. When the block raises, the temporary file is removed and
    `path` stays as it was. The library's files (checkpoints, agents, logbooks,
    traces) are all written through it.

    Args:
        path: the file to write.
        newline: as `open`'s (``""`` for the `csv` module).

    Example:

    ```python
    with atomic_open("logbook.csv", newline="") as stream:
        csv.writer(stream).writerows(rows)
    ```
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline=newline) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private (0600); give it the usual permissions
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def atomic_write_text(path, text):
    """Write the string `text` to `path` atomically (`atomic_open`); return `path`."""
    with atomic_open(path) as stream:
        stream.write(text)
    return os.fspath(path)


def atomic_write_json(path, data, indent=2, max_bytes=None):
    """Write `data` as JSON to `path` atomically (`atomic_open`).

    A reader sees the old file or the new one, never a half-written one. With
    `max_bytes`, a text longer than that (which `read_json` would refuse with
    the same limit) raises `ValueError` and nothing is written.
    """
    path = os.fspath(path)
    text = json.dumps(to_jsonable(data), indent=indent, allow_nan=False) + "\n"
    if max_bytes is not None and len(text.encode("utf-8")) > max_bytes:
        raise ValueError(
            f"Not writing {path!r}: its JSON takes {len(text.encode('utf-8'))} bytes, "
            f"more than the {max_bytes} that loading it allows."
        )
    return atomic_write_text(path, text)


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
        raise ValueError(f"The {what} is larger than {max_bytes} bytes, the most that is read.")
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


# --------------------------------------------------------------------------
# Output folder locks
# --------------------------------------------------------------------------

LOCK_NAME = ".lock"


class FolderLockedError(RuntimeError):
    """Another live process holds the lock of an output folder.

    Attributes:
        folder: the locked folder.
        holder: the lock file's record (``pid``, ``host``, ``started``), or
            None if it could not be read.
    """

    def __init__(self, folder, holder, message):
        super().__init__(message)
        self.folder = folder
        self.holder = holder


@contextlib.contextmanager
def folder_lock(folder, name=LOCK_NAME):
    """Hold the lock of an output folder while the block runs.

    The lock is the file `folder/name`, created atomically (``O_CREAT |
    O_EXCL``) and holding JSON ``{"pid", "host", "started"}``; it is removed
    when the block ends, also on an exception. A lock whose process is no
    longer alive on this host is stale: it is taken over with a warning. The
    folder is created if needed.

    Args:
        folder: the output folder.
        name: the lock file's name in it.

    Yields:
        The lock file's path.

    Raises:
        FolderLockedError: a live process (or one on another host, which
            cannot be checked) holds the lock.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    record = _acquire_lock(folder, path)
    try:
        yield path
    finally:
        _release_lock(path, record)


def _acquire_lock(folder, path):
    """Create the lock file `path` with this process's record, taking over a stale one.

    Args:
        folder: the locked folder, for the messages.
        path: the lock file.

    Returns:
        The record written.
    """
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for _ in range(3):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _take_over_if_stale(folder, path, _lock_holder(path))
            continue
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        return record
    raise FolderLockedError(
        folder,
        _lock_holder(path),
        f"Could not lock the folder {folder!r}: other processes keep taking its lock {path!r}.",
    )


def _lock_holder(path, tries=10, pause=0.05):
    """The lock file's record; None if it is gone or stays unreadable (being written, or torn).

    Args:
        path: the lock file.
        tries: reads before giving up (a new lock is written just after its creation).
        pause: seconds between reads.
    """
    for attempt in range(tries):
        try:
            with open(path, encoding="utf-8") as stream:
                holder = json.load(stream)
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        if attempt + 1 < tries:
            time.sleep(pause)
    return None


def _take_over_if_stale(folder, path, holder):
    """Remove the lock `path` if its process is dead; else raise `FolderLockedError`.

    The stale file is first renamed to a name of this process's own, then read
    again: if another process took it over meanwhile, its live lock is put back.

    Args:
        folder: the locked folder, for the messages.
        path: the lock file.
        holder: its record, or None if it is gone or unreadable.
    """
    if holder is None:
        if not os.path.exists(path):
            return  # released meanwhile: try again
        raise FolderLockedError(
            folder,
            None,
            f"The folder {folder!r} is locked by {path!r}, which cannot be read; "
            "remove that file if no run uses the folder.",
        )
    here = holder.get("host") == socket.gethostname()
    if not here or _process_alive(holder["pid"]):
        where = "this host" if here else f"host {holder.get('host')!r}"
        raise FolderLockedError(
            folder,
            holder,
            f"The folder {folder!r} is in use by another run: process "
            f"{holder['pid']} on {where} (started {holder.get('started')}) holds "
            f"its lock {path!r}. Wait for it to end, or choose another folder"
            + ("." if here else "; remove the lock if that run is over."),
        )
    aside = f"{path}.stale.{os.getpid()}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process took it over first: try again
    if _lock_holder(aside, tries=1) != holder:  # a live lock taken over meanwhile: put it back
        with contextlib.suppress(OSError):
            os.link(aside, path)
        os.unlink(aside)
        return
    os.unlink(aside)
    warnings.warn(
        f"Taking over the stale lock {path!r} of process {holder['pid']} (started "
        f"{holder.get('started')}), which is no longer running.",
        RuntimeWarning,
        stacklevel=4,
    )


def _process_alive(pid):
    """Whether process `pid` exists on this host (assumed alive where it cannot be checked)."""
    if os.name == "nt":
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def _release_lock(path, record):
    """Remove the lock `path` if it is still this process's `record`."""
    if _lock_holder(path, tries=1) == record:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
