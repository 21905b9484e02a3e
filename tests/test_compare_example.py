"""examples/compare.py: the paper's models, over keras_neuromod.evidence, recorded and resumed."""

import json
import os

import pytest

from examples_loader import load_example
from keras_neuromod import zoo
from keras_neuromod.io import read_json


@pytest.fixture(scope="module")
def compare():
    return load_example("compare")


@pytest.mark.slow
def test_a_quick_comparison_on_wine(compare, tmp_path, capsys):
    agent = str(tmp_path / "agent.json")
    zoo.save(zoo.load("nm_sgd_digits"), agent)
    out = str(tmp_path / "out")
    argv = [
        "--quick",
        "--agent",
        agent,
        "--dataset",
        "wine",
        "--seeds",
        "2",
        "--epochs",
        "3",
        "--out",
        out,
        "--record",
    ]
    compare.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    headline = json.loads(lines[-1])
    assert headline["dataset"] == "wine" and headline["seeds"] == 2 and headline["epochs"] == 3
    methods = [r["method"] for r in headline["rows"]]
    assert methods == ["Nm-SGD", "SGD", "Adam", "SGD*", "Adam*"]
    assert {r["model"] for r in headline["rows"]} == {"mlp"}
    assert {(p["method"], p["baseline"]) for p in headline["paired"]} == {
        ("Nm-SGD", b) for b in ("SGD", "Adam", "SGD*", "Adam*")
    }
    assert all(p["verdict"] in ("better", "within noise", "worse") for p in headline["paired"])
    tuned = {r["method"]: r["settings"] for r in headline["rows"]}
    assert (
        set(tuned["SGD*"]) == {"learning_rate", "momentum"} and tuned["SGD"] is None
    )  # quick axes
    assert os.path.exists(headline["figure"])
    card = zoo.load(agent).benchmark["wine"]
    assert card["method"] == "Nm-SGD" and card["paired"] == headline["paired"]

    # a rerun trains nothing again
    record = os.path.join(out, "compare_wine.record.json")
    before = read_json(record)
    compare.main(argv[:-1])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == headline["rows"]
    assert read_json(record) == before


def test_bad_arguments(compare):
    for bad in (["--seeds", "1", "--agent", "nm_adam_digits"], ["--agent", "no_such_agent"], []):
        with pytest.raises(SystemExit) as exit_info:
            compare.parse_args(bad)
        assert exit_info.value.code == 2
