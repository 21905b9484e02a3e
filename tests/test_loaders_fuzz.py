"""Fuzzing every loader of shared files with corruptions of valid ones.

Agent files, genome files, the zoo index, GRNEAT checkpoints and ES
checkpoints are loaded from hypothesis-made corruptions of valid files:
truncated text, values swapped for values of other types, missing and extra
keys, `NaN`/`Infinity` literals, huge numbers (1e308, 10**30 as counts), huge
lists and strings, shortened and repeated lists. A loader may refuse a file
only with `ValueError` (or `FileNotFoundError`); any other exception fails the
test, and so would an attempt to allocate memory for a huge count. What a
loader accepts must come back unchanged (`to_dict` gives the content read),
so a loader that validated nothing would fail too.

Besides the fuzzing, each valid file loads back to equal content, and the same
file with one field spoiled is refused with an error that names that field.

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

from helpers import make_agent
from helpers import sphere
from helpers import toy_evolution
from keras_neuromod import Genome
from keras_neuromod import zoo
from keras_neuromod.evolution import EvolutionStrategy
from keras_neuromod.optimizers.base import resolve_agent

ALLOWED = (ValueError, FileNotFoundError)
EXAMPLES = int(os.environ.get("KERAS_NEUROMOD_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

WEIRD = [
    None,
    True,
    False,
    "",
    "x",
    "nan",
    -1,
    0,
    1,
    2.5,
    -0.0,
    1e308,
    -1e308,
    10**30,
    -(10**30),
    10**400,
    math.nan,
    math.inf,
    -math.inf,
    [],
    {},
    [0.5, 0.5],
    {"a": 1},
    [[1, 2], [3]],
    [0.5] * 100_000,
    list(range(50_000)),
    "a" * 1_000_000,
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
    kind = draw(
        st.sampled_from(["replace", "swap", "delete", "extra", "shorten", "repeat", "nudge"])
    )
    if kind == "nudge" and isinstance(target, (int, float)) and not isinstance(target, bool):
        # a plausible value that a hand edit might leave: often still valid
        nudged = (
            target + 1
            if isinstance(target, int)
            else target * draw(st.sampled_from([0.5, 0.99, 1.01]))
        )
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
        return call()
    except ALLOWED:
        return None


def _same(a, b, defaults=False):
    """Equal JSON content: numbers by value (NaN equals NaN), the rest by type and value.

    With `defaults`, the objects of `a` may hold more keys than those of `b`
    (optional fields filled in with their defaults).
    """
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, number) and isinstance(b, number):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        keys = a.keys() >= b.keys() if defaults else a.keys() == b.keys()
        return keys and all(_same(a[key], b[key], defaults) for key in b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, defaults) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _accepted_unchanged(call, value):
    """Whatever `call` accepts, its `to_dict()` must give back `value` (plus defaults)."""
    loaded = _only_allowed(call)
    if loaded is not None:
        assert _same(loaded.to_dict(), value, defaults=True), "a loader changed what it accepted"


def _leaves(value, prefix=()):
    """Paths of the fields of a JSON object, down to scalars and lists of numbers."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, prefix + (key,))
    else:
        yield prefix


def _spoiled(valid, path, bad):
    value = copy.deepcopy(valid)
    return _set(value, path, bad)


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
    try:
        value = json.loads(text)
    except ValueError:
        _only_allowed(lambda: zoo.load(str(path)))
        return
    _accepted_unchanged(lambda: zoo.load(str(path)), value)
    _accepted_unchanged(lambda: zoo.Agent.from_dict(copy.deepcopy(value)), value)


# free-form records: any JSON object is kept as it is
FREE_FORM = ("provenance", "benchmark")


def test_a_valid_agent_file_loads_back_unchanged(folder):
    path = folder / "valid_agent.json"
    path.write_text(json.dumps(AGENT))
    assert zoo.load(str(path)).to_dict() == AGENT
    assert zoo.Agent.from_dict(copy.deepcopy(AGENT)).to_dict() == AGENT


@pytest.mark.parametrize("path", [p for p in _leaves(AGENT) if p[0] not in FREE_FORM], ids="/".join)
@pytest.mark.parametrize("bad", [None, {"value": 1}], ids=["null", "object"])
def test_an_agent_with_one_field_spoiled_is_refused_naming_it(path, bad):
    with pytest.raises(ValueError, match=f"'{path[-1]}'"):
        zoo.Agent.from_dict(_spoiled(AGENT, path, bad))


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
        if valid is GENOME:
            _accepted_unchanged(lambda: Genome.from_dict(value), value)
            _accepted_unchanged(lambda: Genome.from_json(text), value)
        else:
            _only_allowed(lambda: Genome.from_dict(value))
        # (a file holding another JSON value: see the next test)
        _only_allowed(lambda: resolve_agent(str(path)))


def test_a_valid_genome_loads_back_unchanged():
    assert Genome.from_json(json.dumps(GENOME)).to_dict() == GENOME
    assert Genome.from_dict(copy.deepcopy(GENOME)).to_dict() == GENOME


@pytest.mark.parametrize("field", list(GENOME))
@pytest.mark.parametrize("bad", [None, "0.5", 2.5, [0.5]], ids=["null", "text", "float", "list"])
def test_a_genome_with_one_field_spoiled_is_refused_naming_it(field, bad):
    with pytest.raises(ValueError, match=f"'{field}'"):
        Genome.from_dict(_spoiled(GENOME, (field,), bad))


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
            _only_allowed(lambda name=name: zoo.load(name, zoo_dir=zoo_folder))
        _only_allowed(lambda: zoo.list_agents(zoo_folder))
    finally:
        (zoo_folder / "index.json").write_text(json.dumps(valid))


@pytest.fixture(scope="module")
def grneat_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("grneat")
    toy_evolution(seed=1, generations=2, population=8, hall_of_fame=4, out=str(out))
    return json.loads((out / "checkpoint.json").read_text())


@settings(FUZZ, max_examples=max(1, EXAMPLES * 5 // 6))
@given(data=st.data())
def test_grneat_checkpoints(folder, grneat_checkpoint, data):
    out = folder / "grneat"
    out.mkdir(exist_ok=True)
    (out / "checkpoint.json").write_text(corrupt(data.draw, grneat_checkpoint))
    # a checkpoint that is accepted must also evolve on
    _only_allowed(
        lambda: toy_evolution(
            seed=1, generations=3, population=8, hall_of_fame=4, out=str(out), resume=True
        )
    )


def test_a_valid_grneat_checkpoint_is_resumed_from(folder, grneat_checkpoint):
    out = folder / "grneat_valid"
    out.mkdir()
    (out / "checkpoint.json").write_text(json.dumps(grneat_checkpoint))
    resumed = toy_evolution(
        seed=1, generations=3, population=8, hall_of_fame=4, out=str(out), resume=True
    )
    assert resumed.generations == 3 and resumed.evaluated_now > 0
    assert _same(json.loads(json.dumps(resumed.logbook[:2])), grneat_checkpoint["logbook"])


@pytest.mark.parametrize(
    "field",
    [
        "format",
        "settings",
        "config",
        "generation",
        "population",
        "species",
        "fitness_range",
        "rng_state",
        "logbook",
        "hall_of_fame",
        "best",
        "run_best",
        "recent_bests",
        "evaluations",
    ],
)
def test_a_grneat_checkpoint_with_one_field_spoiled_is_refused_naming_it(
    folder, grneat_checkpoint, field
):
    assert field in grneat_checkpoint
    out = folder / f"grneat_{field}"
    out.mkdir()
    (out / "checkpoint.json").write_text(json.dumps(_spoiled(grneat_checkpoint, (field,), "x")))
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        toy_evolution(
            seed=1, generations=3, population=8, hall_of_fame=4, out=str(out), resume=True
        )


@pytest.fixture(scope="module")
def es_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("es") / "es.json"
    EvolutionStrategy(sphere, np.zeros(3), population=4, seed=0).run(
        2, checkpoint_path=path, progress=False
    )
    return json.loads(path.read_text())


@FUZZ
@pytest.mark.filterwarnings(
    "ignore::RuntimeWarning"
)  # a huge but finite centre overflows the fitness
@given(data=st.data())
def test_es_checkpoints(folder, es_checkpoint, data):
    path = folder / "es.json"
    path.write_text(corrupt(data.draw, es_checkpoint))
    es = EvolutionStrategy(sphere, np.zeros(3), population=4, seed=0)
    _only_allowed(lambda: es.run(3, checkpoint_path=path, progress=False, resume=True))


def test_a_valid_es_checkpoint_is_resumed_from(folder, es_checkpoint):
    path = folder / "es_valid.json"
    path.write_text(json.dumps(es_checkpoint))
    es = EvolutionStrategy(sphere, np.zeros(3), population=4, seed=0)
    es.run(3, checkpoint_path=path, progress=False, resume=True)
    resumed = json.loads(path.read_text())
    assert resumed["generation"] == 3
    assert _same(resumed["logbook"][:2], es_checkpoint["logbook"])


@pytest.mark.parametrize(
    "field",
    [
        "format",
        "config",
        "generation",
        "theta",
        "velocity",
        "second_moment",
        "rng_state",
        "logbook",
    ],
)
def test_an_es_checkpoint_with_one_field_spoiled_is_refused_naming_it(folder, es_checkpoint, field):
    assert field in es_checkpoint
    path = folder / f"es_{field}.json"
    path.write_text(json.dumps(_spoiled(es_checkpoint, (field,), "x")))
    es = EvolutionStrategy(sphere, np.zeros(3), population=4, seed=0)
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        es.run(3, checkpoint_path=path, progress=False, resume=True)
