"""The agent zoo: the JSON format, the integrity check, loading by name."""

import json

import keras
import numpy as np
import pytest

from helpers import make_agent
from keras_neuromod import Genome
from keras_neuromod import NmAdam
from keras_neuromod import NmSGD
from keras_neuromod import zoo


@pytest.fixture
def zoo_folder(tmp_path, monkeypatch):
    zoo.save(make_agent(), tmp_path / "nm_adam_test.json")
    zoo.save(make_agent("nm_sgd_test", "sgd", 1), tmp_path / "nm_sgd_test.json")
    (tmp_path / "notes.json").write_text('{"not": "an agent"}')
    zoo.write_index(tmp_path, summaries={"nm_adam_test": "a test agent"})
    monkeypatch.setenv("KERAS_NEUROMOD_ZOO", str(tmp_path))
    return tmp_path


def test_agent_json_round_trip(tmp_path):
    agent = make_agent(ranges={"learning_rate": (1e-4, 1e-2)})
    path = zoo.save(agent, tmp_path / "a.json")
    again = zoo.load(path)
    assert again == agent
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["format"] == zoo.AGENT_FORMAT and data["genome"]["n_outputs"] == 8
    assert again.card["provenance"]["command"].startswith("python examples/evolve.py")


def test_list_and_load_by_name(zoo_folder):
    listed = zoo.list_agents()
    assert [a["name"] for a in listed] == ["nm_adam_test", "nm_sgd_test"]
    assert listed[0]["summary"] == "a test agent" and listed[1]["base"] == "sgd"
    agent = zoo.load("nm_adam_test")
    assert agent.base == "adam" and agent.genome == make_agent().genome


def test_optimizers_load_zoo_agents_by_name_with_their_settings(zoo_folder):
    optimizer = NmAdam(agent="nm_adam_test")
    assert optimizer.genome == make_agent().genome
    assert (optimizer.warmup_steps, optimizer.grn_steps_per_update) == (7, 2)
    assert NmAdam(agent="nm_adam_test", warmup_steps=3).warmup_steps == 3
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=NmSGD(agent="nm_sgd_test"), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    history = model.fit(rng.random((32, 4)), rng.integers(0, 3, 32), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    with pytest.raises(ValueError, match="made for NmSGD"):
        NmAdam(agent="nm_sgd_test")
    with pytest.raises(ValueError, match="known agents: nm_adam_test, nm_sgd_test"):
        NmAdam(agent="nm_adam_missing")


def test_modified_or_truncated_agent_is_refused(zoo_folder):
    path = zoo_folder / "nm_adam_test.json"
    text = path.read_text()
    path.write_text(text.replace('"digits"', '"cifar10"'))
    with pytest.raises(ValueError, match="sha256"):
        zoo.load("nm_adam_test")
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="modified or truncated"):
        NmAdam(agent="nm_adam_test")
    path.write_text(text)
    assert zoo.load("nm_adam_test").name == "nm_adam_test"
    path.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        zoo.load("nm_adam_test")


@pytest.mark.parametrize(
    "change,match",
    [
        ({"format": "other/9"}, "format"),
        ({"base": "rmsprop"}, "base"),
        ({"extra": 1}, "Unknown agent field"),
        ({"name": ""}, "name"),
        ({"ranges": {"lr": [0.1, 0.2]}}, "Unknown hyperparameter"),
        ({"settings": {"warmup": 3}}, "settings"),
        ({"genome": {"n_inputs": 13}}, "missing"),
    ],
)
def test_malformed_agents_are_refused(tmp_path, change, match):
    data = make_agent().to_dict()
    data.update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        zoo.load(str(path))


def test_sgd_genome_in_an_adam_agent_is_refused():
    with pytest.raises(ValueError, match="needs 13 and 8"):
        zoo.Agent(name="x", base="adam", genome=Genome.random(13, 4, 1, rng=0))
    with pytest.raises(TypeError):
        zoo.save(make_agent().to_dict(), "unused.json")


def test_shipped_index_is_valid():
    # the source tree's zoo: every listed agent passes its integrity check
    for entry in zoo.list_agents(zoo.directory()):
        assert zoo.load(entry["name"], zoo_dir=zoo.directory()).name == entry["name"]


def test_record_benchmark_updates_the_card_and_the_index(zoo_folder):
    result = {"dataset": "wine", "rows": [{"model": "mlp", "method": "Nm-Adam", "test_mean": 0.9}]}
    agent = zoo.record_benchmark("nm_adam_test", "wine", result)
    assert agent.benchmark["wine"] == result and agent.benchmark["note"] == "made in a test"
    # the file changed, the index followed it (and kept the summary), so the check still passes
    assert zoo.load("nm_adam_test").card["benchmark"]["wine"] == result
    assert zoo.list_agents()[0]["summary"] == "a test agent"
    # a plain file path is rewritten without an index
    path = zoo.save(make_agent("loose"), zoo_folder.parent / "loose.json")
    zoo.record_benchmark(str(path), "digits", {"rows": []})
    assert zoo.load(str(path)).benchmark["digits"] == {"rows": []}
    assert "loose" not in [a["name"] for a in zoo.list_agents()]


SHIPPED = [
    ("nm_adam_digits", "adam", NmAdam),
    ("nm_sgd_digits", "sgd", NmSGD),
    ("nm_adam_general", "adam", NmAdam),
    ("nm_sgd_general", "sgd", NmSGD),
]
# the evidence each card holds: the digits agents' comparisons, the general agents' held-out one
EVIDENCE = {
    "nm_adam_digits": {"digits", "wine"},
    "nm_sgd_digits": {"digits", "wine"},
    "nm_adam_general": {"held_out"},
    "nm_sgd_general": {"held_out"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name,base,optimizer_class", SHIPPED)
def test_shipped_agents_load_by_name_and_train(name, base, optimizer_class, monkeypatch):
    monkeypatch.delenv("KERAS_NEUROMOD_ZOO", raising=False)  # the source tree's zoo
    agent = zoo.load(name)  # integrity-checked against keras_neuromod/zoo/index.json
    assert agent.base == base
    assert agent.provenance["command"].startswith("python examples/evolve.py")
    assert EVIDENCE[name] <= set(agent.benchmark)  # its evidence, in the card
    from keras_neuromod import datasets
    from keras_neuromod import models

    (x, y), _, classes = datasets.load("digits")
    model = models.build("mlp", x.shape[1:], classes, width=0.25, seed=0)
    model.compile(
        optimizer=optimizer_class(agent=name),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.5


@pytest.mark.parametrize("name", [name for name, _, _ in SHIPPED])
def test_a_corrupted_shipped_agent_is_refused(name, tmp_path):
    import shutil

    folder = tmp_path / "zoo"
    shutil.copytree(zoo.directory(), folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = folder / {a["name"]: a for a in zoo.list_agents(folder)}[name]["file"]
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"base"', b'"base" ', 1))  # one byte more, same JSON
    with pytest.raises(ValueError, match="modified or truncated"):
        zoo.load(name, zoo_dir=folder)
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="sha256"):
        zoo.load(name, zoo_dir=folder)


def test_the_shipped_zoo_is_package_data(monkeypatch):
    # the default zoo is the keras_neuromod.zoo package's own folder (a wheel
    # carries it), and setup.cfg's package data takes every file of it
    import configparser
    import glob
    import os

    import keras_neuromod

    monkeypatch.delenv("KERAS_NEUROMOD_ZOO", raising=False)
    package = os.path.dirname(os.path.abspath(keras_neuromod.__file__))
    folder = zoo.directory()
    assert folder == os.path.dirname(os.path.abspath(zoo.__file__)) == os.path.join(package, "zoo")
    assert os.path.isfile(os.path.join(folder, "index.json"))
    setup = configparser.ConfigParser()
    setup.read(os.path.join(os.path.dirname(package), "setup.cfg"))
    shipped = set()
    for dotted, patterns in setup["options.package_data"].items():
        where = os.path.join(os.path.dirname(package), *dotted.split("."))
        shipped |= {
            os.path.normpath(path)
            for p in patterns.split()
            for path in glob.glob(os.path.join(where, p))
        }
    listed = {os.path.normpath(os.path.join(folder, a["file"])) for a in zoo.list_agents()}
    assert os.path.join(folder, "index.json") in shipped and listed and listed <= shipped
    assert {a["name"] for a in zoo.list_agents()} == {name for name, _, _ in SHIPPED}


def _index_with(folder, entry):
    data = json.loads((folder / "index.json").read_text())
    data["agents"]["nm_adam_test"] = entry
    (folder / "index.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda e: e.update(file="../outside.json"), "inside the zoo folder"),
        (lambda e: e.update(file="sub/../../outside.json"), "inside the zoo folder"),
        (lambda e: e.update(file="/etc/passwd"), "inside the zoo folder"),
        (lambda e: e.update(file=""), "inside the zoo folder"),
        (lambda e: e.update(file="a\0b"), "inside the zoo folder"),
        (lambda e: e.update(file=3), "'file' must be a string"),
        (lambda e: e.pop("file"), r"missing field\(s\) \['file'\]"),
        (lambda e: e.pop("sha256"), r"missing field\(s\) \['sha256'\]"),
        (lambda e: e.update(sha256=None), "'sha256' must be a string"),
        (lambda e: e.update(sha256="abc"), "64 lowercase hex"),
        (
            lambda e: e.update(base=["adam"]),
            r"'base' must name a registered optimizer base \('adam' or 'sgd'\)",
        ),
        (lambda e: e.update(summary=7), "'summary' must be a string"),
        (lambda e: e.update(size=1), r"unknown field\(s\) \['size'\]"),
    ],
)
def test_malformed_index_entries_name_the_index_and_the_entry(zoo_folder, change, match):
    entry = json.loads((zoo_folder / "index.json").read_text())["agents"]["nm_adam_test"]
    change(entry)
    _index_with(zoo_folder, entry)
    for call in (
        lambda: zoo.load("nm_adam_test"),
        zoo.list_agents,
        lambda: NmAdam(agent="nm_sgd_test"),
    ):
        with pytest.raises(ValueError, match=match) as error:
            call()
        assert "index.json" in str(error.value) and "'nm_adam_test'" in str(error.value)


def test_an_index_entry_that_is_not_a_dict_is_refused(zoo_folder):
    _index_with(zoo_folder, ["nm_adam_test.json"])
    with pytest.raises(ValueError, match="entry 'nm_adam_test' must be a JSON object"):
        zoo.load("nm_adam_test")


def test_a_symlink_leading_out_of_the_zoo_is_refused(zoo_folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "agent.json"
    zoo.save(make_agent(), outside)
    (zoo_folder / "link.json").symlink_to(outside)
    entry = json.loads((zoo_folder / "index.json").read_text())["agents"]["nm_adam_test"]
    _index_with(
        zoo_folder, {**entry, "file": "link.json", "sha256": zoo._sha256(outside.read_bytes())}
    )
    with pytest.raises(ValueError, match="symlink leading out"):
        zoo.load("nm_adam_test")
    # a symlink that stays inside the zoo is fine
    (zoo_folder / "inside.json").symlink_to(zoo_folder / "nm_adam_test.json")
    _index_with(zoo_folder, {**entry, "file": "inside.json"})
    assert zoo.load("nm_adam_test").name == "nm_adam_test"


def test_oversized_agent_files_are_refused_before_parsing(tmp_path, monkeypatch):
    from keras_neuromod import io

    path = zoo.save(make_agent(), tmp_path / "a.json")
    size = len((tmp_path / "a.json").read_bytes())
    monkeypatch.setattr(io, "MAX_AGENT_BYTES", size - 1)
    monkeypatch.setattr(zoo, "MAX_AGENT_BYTES", size - 1)
    with pytest.raises(ValueError, match=f"has {size} bytes, more than the {size - 1}"):
        zoo.load(path)
    with pytest.raises(
        ValueError, match="more than the"
    ):  # and nothing is written that could not load
        zoo.save(make_agent(), tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()
    monkeypatch.setattr(zoo, "MAX_AGENT_BYTES", size)
    assert zoo.load(path).name == "nm_adam_test"


def test_an_oversized_zoo_agent_is_refused_before_it_is_hashed(zoo_folder, monkeypatch):
    monkeypatch.setattr(zoo, "_sha256", None)  # hashing it would fail the test
    monkeypatch.setattr(zoo, "MAX_AGENT_BYTES", 1000)  # more than the index, less than the agent
    with pytest.raises(ValueError, match="nm_adam_test.json' has .* bytes, more than the 1000"):
        zoo.load("nm_adam_test")


def test_an_agent_too_large_for_the_agrn_is_refused_before_its_tags_are_read(tmp_path):
    from keras_neuromod import agrn

    data = make_agent().to_dict()
    data["genome"]["n_regulatory"] = 30000  # the tags still have 23 values each
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"more than the {agrn.MAX_PROTEINS}") as error:
        zoo.load(str(path))
    assert "huge.json" in str(error.value) and "n_regulatory 30000" in str(error.value)


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"warmup_steps": 10**9}, r"'warmup_steps' must be an integer in \[0, 1000\]"),
        ({"grn_steps_per_update": 0}, r"'grn_steps_per_update' must be an integer in \[1, 1000\]"),
        ({"warmup_steps": 2.5}, "'warmup_steps' must be an integer"),
        ([1], "'settings' must be a dict"),
    ],
)
def test_agent_settings_are_bounded(settings, match):
    with pytest.raises(ValueError, match=match):
        zoo.Agent.from_dict({**make_agent().to_dict(), "settings": settings})


@pytest.mark.parametrize("pair", [[1e-3, 10**400], [1e-3], "ab", [float("nan"), 1.0]])
def test_agent_ranges_must_be_pairs_of_finite_numbers(pair):
    with pytest.raises(ValueError, match="ranges"):
        zoo.Agent.from_dict({**make_agent().to_dict(), "ranges": {"learning_rate": pair}})


def test_a_crash_while_recording_leaves_the_agent_loadable_by_name(zoo_folder, monkeypatch):
    """`record_benchmark` rewrites the file and the index; a crash between the two loses nothing."""
    before = zoo.load("nm_adam_test")
    real_save, real_write_index = zoo.save, zoo.write_index

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    # a crash before the file is rewritten: the old agent loads
    monkeypatch.setattr(zoo, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        zoo.record_benchmark("nm_adam_test", "wine", {"rows": [1]})
    assert zoo.load("nm_adam_test") == before
    # a crash after the file, before the index is final: the new agent loads
    monkeypatch.setattr(zoo, "save", real_save)
    monkeypatch.setattr(zoo, "write_index", crash)
    with pytest.raises(KeyboardInterrupt):
        zoo.record_benchmark("nm_adam_test", "wine", {"rows": [2]})
    assert zoo.load("nm_adam_test").benchmark["wine"] == {"rows": [2]}
    monkeypatch.setattr(zoo, "write_index", real_write_index)
    # the next rewrite completes, and then only the new file's digest is accepted
    zoo.record_benchmark("nm_adam_test", "wine", {"rows": [3]})
    entry = json.loads((zoo_folder / "index.json").read_text())["agents"]["nm_adam_test"]
    assert "previous_sha256" not in entry
    path = zoo_folder / "nm_adam_test.json"
    path.write_text(path.read_text().replace('"rows"', '"Rows"'))
    with pytest.raises(ValueError, match="does not match the sha256"):
        zoo.load("nm_adam_test")


def test_a_zoo_name_wins_over_a_file_of_that_name(zoo_folder, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    other = make_agent(seed=5)
    zoo.save(other, work / "nm_adam_test")  # a file named like the zoo agent
    zoo_agent = zoo.load("nm_adam_test")
    assert zoo_agent != other
    assert NmAdam(agent="nm_adam_test").genome == zoo_agent.genome
    assert NmAdam(agent="./nm_adam_test").genome == other.genome
    assert zoo.load("./nm_adam_test") == other
