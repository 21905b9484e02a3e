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
