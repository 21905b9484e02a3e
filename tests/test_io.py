"""Atomic JSON files: nothing half-written, clear errors on bad files."""

import json
import os

import numpy as np
import pytest

from keras_neuromod.io import atomic_write_json
from keras_neuromod.io import read_json


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
