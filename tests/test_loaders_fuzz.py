"""Fuzzing every loader of shared files with corruptions of valid ones.

Agent files, genome files, the zoo index, GRNEAT checkpoints and ES
checkpoints are loaded from hypothesis-made corruptions of valid files:
truncated text, values swapped for values of other types, missing and extra
keys, `NaN`/`Infinity` literals, huge numbers (1e308, 10**30 as counts), huge
lists and strings, shortened and repeated lists. A loader may refuse a file
only with `ValueError` (or `FileNotFoundError`); any other exception fails the
test, and so would an attempt to allocate memory for a huge count.

Each test tries a few dozen corruptions; set `KERAS_NEUROMOD_FUZZ_EXAMPLES`
(e.g. to 2000) for a longer search.
"""

import copy
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_neuromod import Genome
from keras_neuromod import zoo
from keras_neuromod.evolution import EvolutionStrategy
from keras_neuromod.optimizers.base import resolve_agent
from test_checkpoints import sphere
from test_evolution import run
from test_zoo import make_agent

ALLOWED = (ValueError, FileNotFoundError)
EXAMPLES = int(os.environ.get("KERAS_NEUROMOD_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WEIRD = [
    None, True, False, "", "x", "nan", -1, 0, 1, 2.5, -0.0,
    1e308, -1e308, 10**30, -(10**30), 10**400, math.nan, math.inf, -math.inf,
    [], {}, [0.5, 0.5], {"a": 1}, [[1, 2], [3]],
    [0.5] * 100_000, list(range(50_000)), "a" * 1_000_000,
]


def _paths(value, prefix=()):
    """Every path (tuple of keys and indices) inside a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def _get(value, path):
    for key in path:
        value = value[key]
    return value


def _set(value, path, new):
    if not path:
        return new
    _get(value, path[:-1])[path[-1]] = new
    return value


def _weird(draw):
    return copy.deepcopy(draw(st.sampled_from(WEIRD)))  # later corruptions may change it


def _mutate(draw, value):
    """One corruption of the JSON value `value` (changed in place where it can be)."""
    paths = list(_paths(value))
    path = draw(st.sampled_from(paths))
    target = _get(value, path)
    kind = draw(st.sampled_from(["replace", "swap", "delete", "extra", "shorten", "repeat", "nudge"]))
    if kind == "nudge" and isinstance(target, (int, float)) and not isinstance(target, bool):
        # a plausible value that a hand edit might leave: often still valid
        nudged = target + 1 if isinstance(target, int) else target * draw(st.sampled_from([0.5, 0.99, 1.01]))
        return _set(value, path, nudged)
    if kind == "replace":
        return _set(value, path, _weird(draw))
    if kind == "swap":  # the same content under another type
        swapped = draw(st.sampled_from([str(target), [target], {"value": target}]))
        return _set(value, path, swapped)
    if kind == "delete" and path:
        parent = _get(value, path[:-1])
        del parent[path[-1]]
        return value
    if kind == "extra" and isinstance(target, dict):
        target[draw(st.sampled_from(["extra", "", "format", "n_regulatory"]))] = _weird(draw)
        return value
    if kind == "shorten" and isinstance(target, (list, str)) and target:
        return _set(value, path, target[: draw(st.integers(0, len(target) - 1))])
    if kind == "repeat" and isinstance(target, (list, str)):
        return _set(value, path, target * draw(st.sampled_from([2, 10, 1000])))
    return _set(value, path, _weird(draw))


def corrupt(draw, valid):
    """JSON text of 1 to 3 corruptions of `valid`, cut short one time in four."""
    value = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        value = _mutate(draw, value)
    text = json.dumps(value)  # NaN and Infinity become the literals NaN, Infinity
    if draw(st.integers(0, 3)) == 0 and len(text) > 1:
        text = text[: draw(st.integers(0, len(text) - 1))]
    return text


def _only_allowed(call):
    try:
        call()
    except ALLOWED:
        pass


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


AGENT = make_agent(ranges={"learning_rate": (1e-4, 1e-2)}).to_dict()


@FUZZ
@given(data=st.data())
def test_agent_files(folder, data):
    text = corrupt(data.draw, AGENT)
    path = folder / "agent.json"
    path.write_text(text)
    _only_allowed(lambda: zoo.load(str(path)))
    try:
        value = json.loads(text)
    except ValueError:
        return
    _only_allowed(lambda: zoo.Agent.from_dict(value))


GENOME = Genome.random(13, 8, 3, rng=0).to_dict()


@FUZZ
@given(data=st.data())
def test_genome_files_and_agent_paths(folder, data):
    valid = data.draw(st.sampled_from([GENOME, {"genome": GENOME}, AGENT]))
    text = corrupt(data.draw, valid)
    _only_allowed(lambda: Genome.from_json(text))
    path = folder / "genome.json"
    path.write_text(text)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        _only_allowed(lambda: Genome.from_dict(value))
        # (a file holding another JSON value: see the next test)
        _only_allowed(lambda: resolve_agent(str(path)))


@pytest.mark.parametrize("content", [[1, 2], 3, "SELF"])
def test_agent_paths_holding_no_json_object(folder, content):
    path = folder / "not_an_object.json"
    path.write_text(json.dumps(str(path) if content == "SELF" else content))
    with pytest.raises(ValueError, match="must hold a JSON object"):
        resolve_agent(str(path))


@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo")
    zoo.save(make_agent(), path / "nm_adam_test.json")
    zoo.save(make_agent("nm_sgd_test", "sgd", 1), path / "nm_sgd_test.json")
    os.mkdir(path / "sub")
    zoo.write_index(path, summaries={"nm_adam_test": "a test agent"})
    return path, json.loads((path / "index.json").read_text())


@FUZZ
@given(data=st.data())
def test_zoo_index(zoo_folder, data):
    zoo_folder, valid = zoo_folder
    text = corrupt(data.draw, valid)
    (zoo_folder / "index.json").write_text(text)
    try:
        for name in ("nm_adam_test", "nm_sgd_test", "sub", "index.json"):
            _only_allowed(lambda: zoo.load(name, zoo_dir=zoo_folder))
        _only_allowed(lambda: zoo.list_agents(zoo_folder))
    finally:
        (zoo_folder / "index.json").write_text(json.dumps(valid))


@pytest.fixture(scope="module")
def grneat_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("grneat")
    run(seed=1, generations=2, population=8, hall_of_fame=4, out=str(out))
    return json.loads((out / "checkpoint.json").read_text())


@settings(FUZZ, max_examples=max(1, EXAMPLES * 5 // 6))
@given(data=st.data())
def test_grneat_checkpoints(folder, grneat_checkpoint, data):
    out = folder / "grneat"
    out.mkdir(exist_ok=True)
    (out / "checkpoint.json").write_text(corrupt(data.draw, grneat_checkpoint))
    # a checkpoint that is accepted must also evolve on
    _only_allowed(lambda: run(seed=1, generations=3, population=8, hall_of_fame=4, out=str(out),
                              resume=True))


@pytest.fixture(scope="module")
def es_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("es") / "es.json"
    EvolutionStrategy(sphere, np.zeros(3), population=4, seed=0).run(2, checkpoint_path=path, progress=False)
    return json.loads(path.read_text())


@FUZZ
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # a huge but finite centre overflows the fitness
@given(data=st.data())
def test_es_checkpoints(folder, es_checkpoint, data):
    path = folder / "es.json"
    path.write_text(corrupt(data.draw, es_checkpoint))
    es = EvolutionStrategy(sphere, np.zeros(3), population=4, seed=0)
    _only_allowed(lambda: es.run(3, checkpoint_path=path, progress=False, resume=True))
