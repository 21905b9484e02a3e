"""Atomic JSON files: nothing half-written, clear errors on bad files."""

import contextlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from keras_neuromod import io
from keras_neuromod.io import FolderLockedError
from keras_neuromod.io import atomic_open
from keras_neuromod.io import atomic_write_json
from keras_neuromod.io import atomic_write_text
from keras_neuromod.io import folder_lock
from keras_neuromod.io import read_json

# A child that takes the folder's lock and sleeps; io.py loaded alone starts fast.
_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock_io", {io!r})
lock_io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock_io)
with lock_io.folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_write_replaces_atomically_and_converts_numpy(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write_json(path, {"a": np.float32(1.5), "b": np.arange(3), "c": np.bool_(True)})
    assert read_json(path) == {"a": 1.5, "b": [0, 1, 2], "c": True}
    atomic_write_json(path, {"nan": float("nan"), "inf": -np.inf})
    assert json.loads(path.read_text()) == {"nan": "nan", "inf": "-inf"}
    assert os.listdir(tmp_path / "sub") == ["state.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600


def test_atomic_open_replaces_the_file_only_when_the_block_ends_well(tmp_path):
    path = tmp_path / "new" / "table.csv"
    with atomic_open(path, newline="") as stream:
        stream.write("a,b\r\n")
        assert not path.exists()  # nothing is seen before the block ends
    assert path.read_bytes() == b"a,b\r\n"
    with pytest.raises(RuntimeError):
        with atomic_open(path) as stream:
            stream.write("half")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"a,b\r\n"
    assert os.listdir(tmp_path / "new") == ["table.csv"]
    assert atomic_write_text(path, "text\n") == str(path) and path.read_text() == "text\n"


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"generation": 3})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"generation": object()})
    assert read_json(path) == {"generation": 3}
    assert os.listdir(tmp_path) == ["state.json"]


def test_missing_and_malformed_files_name_themselves(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        read_json(tmp_path / "nope.json", what="checkpoint")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        read_json(bad)


def test_size_cap_and_malformed_bytes_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"values": list(range(100))}))
    size = path.stat().st_size
    assert read_json(path, max_bytes=size)["values"][-1] == 99
    with pytest.raises(ValueError, match=f"big.json' has {size} bytes, more than the {size - 1}"):
        read_json(path, max_bytes=size - 1)
    path.write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(ValueError, match="big.json.*not UTF-8"):
        read_json(path)
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="big.json.*nested too deeply"):
        read_json(path)
    path.write_text("1" * 5000)
    with pytest.raises(ValueError, match="big.json.*not valid JSON"):
        read_json(path)
    with pytest.raises(ValueError, match="is a folder"):
        read_json(tmp_path)
    with pytest.raises(ValueError, match="more than the 10 that loading it allows"):
        atomic_write_json(tmp_path / "new.json", {"values": list(range(100))}, max_bytes=10)
    assert not (tmp_path / "new.json").exists()


@contextlib.contextmanager
def lock_held_by_another_process(folder):
    """A child process holding `folder`'s lock; yields it, kills it at the end."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER.format(io=io.__file__), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "locked", "the child took the lock"
        yield child
    finally:
        child.kill()
        child.wait()


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_folder_lock_refuses_a_second_process_and_takes_over_once_it_is_dead(tmp_path):
    folder = tmp_path / "run"
    with lock_held_by_another_process(folder) as child:
        holder = json.loads((folder / ".lock").read_text())
        assert holder["pid"] == child.pid and holder["host"] == socket.gethostname()
        with pytest.raises(FolderLockedError) as error:
            with folder_lock(folder):
                pass
        assert isinstance(error.value, RuntimeError) and error.value.holder["pid"] == child.pid
        assert str(folder) in str(error.value) and f"process {child.pid}" in str(error.value)
        assert json.loads((folder / ".lock").read_text()) == holder, "the holder keeps its lock"
    # killed, the child could not release its lock: it is stale now
    with pytest.warns(RuntimeWarning, match=f"stale lock.*process {child.pid}"):
        with folder_lock(folder) as path:
            assert json.loads(open(path).read())["pid"] == os.getpid()
    assert os.listdir(folder) == [], "released, and the stale lock left nothing behind"


def test_a_stale_lock_of_a_finished_process_is_taken_over_with_a_warning(tmp_path):
    pid = _dead_pid()
    (tmp_path / ".lock").write_text(
        json.dumps(
            {"pid": pid, "host": socket.gethostname(), "started": "2020-01-01T00:00:00+00:00"}
        )
    )
    with pytest.warns(RuntimeWarning, match=f"stale lock.*process {pid}"):
        with folder_lock(tmp_path):
            assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()


def test_folder_lock_is_released_on_an_exception_and_taken_again(tmp_path):
    with pytest.raises(KeyError):
        with folder_lock(tmp_path / "new" / "folder"):
            assert (tmp_path / "new" / "folder" / ".lock").exists()
            raise KeyError("inside the block")
    assert os.listdir(tmp_path / "new" / "folder") == []
    with folder_lock(tmp_path / "new" / "folder"):
        with pytest.raises(FolderLockedError, match=f"process {os.getpid()}"):
            with folder_lock(tmp_path / "new" / "folder"):
                pass


def test_a_lock_of_another_host_or_unreadable_is_refused_not_taken(tmp_path):
    (tmp_path / ".lock").write_text(
        json.dumps(
            {
                "pid": _dead_pid(),
                "host": "elsewhere.example",
                "started": "2020-01-01T00:00:00+00:00",
            }
        )
    )
    with pytest.raises(FolderLockedError, match="host 'elsewhere.example'.*remove the lock"):
        with folder_lock(tmp_path):
            pass
    (tmp_path / ".lock").write_text("{torn")
    with pytest.raises(FolderLockedError, match="cannot be read"):
        with folder_lock(tmp_path):
            pass
    assert (tmp_path / ".lock").read_text() == "{torn", "a lock it does not own is left alone"
