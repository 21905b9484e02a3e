"""examples/generalization.py: a thin script over keras_neuromod.evidence, its record and resume."""

import json
import os

import pytest

from examples_loader import load_example
from keras_neuromod import Genome
from keras_neuromod import zoo
from keras_neuromod.io import read_json


@pytest.fixture(scope="module")
def example():
    return load_example("generalization")


@pytest.mark.slow
def test_a_small_comparison_records_resumes_and_stores_its_summary(
    example, tmp_path, capsys, monkeypatch
):
    # fewer baselines than the real record, to keep the test short: the wiring is the same
    monkeypatch.setattr(example, "DEFAULTS", ("Adam",))
    monkeypatch.setattr(
        example,
        "TUNED",
        {"Adam*": ("Adam", None, None), "Adam* cosine": ("Adam", "cosine", "Adam*")},
    )
    control = str(tmp_path / "control.json")
    zoo.save(
        zoo.Agent(
            name="random_adam",
            base="adam",
            genome=Genome.random(13, 8, 3, rng=4),
            provenance={"algorithm": "random"},
        ),
        control,
    )
    agent = str(tmp_path / "agent.json")
    zoo.save(zoo.load("nm_adam_digits"), agent)
    out = str(tmp_path / "out")
    argv = [
        "--quick",
        "--tasks",
        "diabetes:linear",
        "--seeds",
        "2",
        "--agent",
        agent,
        "--control",
        control,
        "--ablations",
        "--out",
        out,
        "--record",
    ]
    example.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    headline = json.loads(lines[-1])
    assert headline["pairs"] == 1 and headline["seeds"] == 2
    assert set(headline) >= {
        "nm_adam_digits vs Adam",
        "nm_adam_digits vs Adam*",
        "random search (adam) vs Adam",
    }
    result = read_json(os.path.join(out, "generalization.json"))
    methods = [r["method"] for r in result["rows"]]
    assert methods == [
        "Adam",
        "Adam*",
        "Adam* cosine",
        "nm_adam_digits",
        "nm_adam_digits / frozen",
        "nm_adam_digits / network mean",
        "random search (adam)",
    ]
    tuned = {r["method"]: r["settings"] for r in result["rows"]}
    assert tuned["Adam*"]["learning_rate"] > 0 and tuned["Adam"] is None
    # the cosine schedule's search starts from the constant search's choice
    assert {k: v for k, v in tuned["Adam* cosine"].items() if k != "learning_rate"} == {
        k: v for k, v in tuned["Adam*"].items() if k != "learning_rate"
    }
    searched = result["budgets"]["tuned_search_trainings"]["Adam*"]["diabetes:linear"]
    assert searched >= 2  # the quick grid, extended where its best point was on an edge
    # the agent is also compared with its ablations and its control
    assert {(s["method"], s["baseline"]) for s in result["summary"]} >= {
        ("nm_adam_digits", "nm_adam_digits / frozen"),
        ("nm_adam_digits", "random search (adam)"),
    }
    assert os.path.exists(result["figure"])
    assert os.path.exists(os.path.join(out, "trace_nm_adam_digits_diabetes_linear.png"))
    card = zoo.load(agent).benchmark["held_out"]
    assert card["pairs"] == ["diabetes:linear"] and card["command"].startswith(
        "python examples/generalization.py"
    )
    assert {s["method"] for s in card["summary"]} == {"nm_adam_digits"}

    # rerun: nothing is trained again, the same figures come out
    record = os.path.join(out, "records", "diabetes.json")
    before = os.stat(record).st_mtime_ns
    traced = os.path.join(out, "trace_nm_adam_digits_diabetes_linear.png")
    traced_at = os.stat(traced).st_mtime_ns
    kept = read_json(record)["models"]["linear"]["methods"]
    example.main(argv[:-1])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == headline
    assert read_json(record)["models"]["linear"]["methods"] == kept
    assert os.stat(traced).st_mtime_ns == traced_at  # the same agent's trace is kept
    # another agent joins: only its runs are trained, the others are kept as they were
    other = str(tmp_path / "other.json")
    zoo.save(zoo.Agent(name="other", base="adam", genome=Genome.random(13, 8, 2, rng=9)), other)
    example.main(argv[:-1] + ["--agent", agent, other, "--ablations", "nm_adam_digits"])
    capsys.readouterr()
    saved = read_json(record)["models"]["linear"]["methods"]
    assert {m: saved[m] for m in kept} == kept
    assert set(saved) - set(kept) == {"other"}
    assert os.stat(record).st_mtime_ns != before
    for bad in (
        ["--seeds", "1"],
        ["--tasks", "wine:lstm"],
        ["--agent", "no_such_agent"],
        ["--agent", "nm_adam_digits", "--ablations", "nm_sgd_digits"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            example.parse_args(bad)
        assert exit_info.value.code == 2


@pytest.mark.slow
def test_an_agent_that_reads_the_horizon_is_told_it_and_also_compared_untold(
    example, tmp_path, capsys, monkeypatch
):
    from keras_neuromod.inputs import SENSING

    monkeypatch.setattr(example, "DEFAULTS", ("Adam",))
    monkeypatch.setattr(example, "TUNED", {})
    agent = str(tmp_path / "sensing.json")
    genome = Genome.random(SENSING.size, 8, 3, rng=1)
    zoo.save(
        zoo.Agent(name="sensing", base="adam", genome=genome, settings={"inputs": "sensing"}),
        agent,
    )
    out = str(tmp_path / "out")
    argv = ["--quick", "--tasks", "diabetes:linear", "--seeds", "2", "--agent", agent]
    argv += ["nm_adam_general", "--versus", "nm_adam_general"]
    example.main(argv + ["--ablations", "sensing", "--out", out])
    capsys.readouterr()
    result = read_json(os.path.join(out, "generalization.json"))
    assert [r["method"] for r in result["rows"]] == [
        "Adam",
        "sensing",
        "sensing / not told",
        "sensing / frozen",
        "sensing / network mean",
        "nm_adam_general",
    ]
    summarised = {(s["method"], s["baseline"]) for s in result["summary"]}
    # told against untold, and untold against the baselines: what a fit without the callback gets
    assert {("sensing", "sensing / not told"), ("sensing / not told", "Adam")} <= summarised
    # and both against the agent it would replace
    versus = {("sensing", "nm_adam_general"), ("sensing / not told", "nm_adam_general")}
    assert versus <= summarised
    saved = read_json(os.path.join(out, "records", "diabetes.json"))["models"]["linear"]
    told, untold = saved["methods"]["sensing"], saved["methods"]["sensing / not told"]
    assert told["identity"] != untold["identity"] and told["runs"] != untold["runs"]
    stamp = read_json(os.path.join(out, "trace_sensing_diabetes_linear.json"))
    assert stamp["told the horizon"] is True


def test_controls_are_named_by_search_base_and_input_set_and_never_twice(example, tmp_path):
    from keras_neuromod.inputs import SENSING

    def control(name, inputs=None, command=None, searched_with=None):
        size = 13 if inputs is None else SENSING.size
        settings = {} if inputs is None else {"inputs": inputs}
        genome = Genome.random(size, 8, 2, rng=3)
        provenance = {"algorithm": "static"}
        if command is not None:
            provenance["command"] = command
        if searched_with is not None:
            provenance["inputs"] = searched_with
        agent = zoo.Agent(
            name=name, base="adam", genome=genome, settings=settings, provenance=provenance
        )
        return zoo.save(agent, str(tmp_path / f"{name}.json"))

    paper, sensing, again = control("a"), control("b", "sensing"), control("c")
    # a static search's agent holds the paper's 13-input placeholder: its command tells
    evolve = "python examples/evolve.py --suite --base adam --algorithm static"
    searched = control("d", command=f"{evolve} --inputs sensing --seed 1")
    searched_equals = control("e", command=f"{evolve} --inputs=sensing")
    default = control("f", command=f"{evolve} --seed 1")
    argv = ["--tasks", "wine:mlp", "--agent", "nm_adam_digits", "--control"]
    args = example.parse_args(argv + [paper, sensing])
    assert [example.control_label(c) for c in args.controls] == [
        "static search (adam)",
        "static search (adam, sensing)",
    ]
    searched_args = example.parse_args(argv + [searched, default])
    assert [example.control_label(c) for c in searched_args.controls] == [
        "static search (adam, sensing)",
        "static search (adam)",
    ]
    assert example.control_label(zoo.load(searched_equals)) == "static search (adam, sensing)"
    # the provenance's input set comes before the command's (files of the command only are older)
    recorded = control("g", command=f"{evolve} --seed 1", searched_with="sensing")
    assert example.control_label(zoo.load(recorded)) == "static search (adam, sensing)"
    with pytest.raises(SystemExit) as exit_info:  # two controls of one name
        example.parse_args(argv + [paper, again])
    assert exit_info.value.code == 2


def test_versus_compares_each_agent_of_a_base_told_and_untold_with_the_named_ones(
    example, tmp_path, capsys
):
    from keras_neuromod.inputs import SENSING

    genome = Genome.random(SENSING.size, 8, 3, rng=1)
    candidate = zoo.Agent(name="cand", base="adam", genome=genome, settings={"inputs": "sensing"})
    path = zoo.save(candidate, str(tmp_path / "cand.json"))
    argv = ["--tasks", "wine:mlp", "--agent", "nm_adam_general", "nm_sgd_general", path]
    args = example.parse_args([*argv, "--versus", "nm_adam_general", "nm_sgd_general"])
    pairs = example.comparisons(args)
    assert ("cand", "nm_adam_general") in pairs and ("cand / not told", "nm_adam_general") in pairs
    # only within a base, and never an agent against itself
    assert ("cand", "nm_sgd_general") not in pairs
    assert not {
        ("nm_sgd_general", "nm_adam_general"),
        ("nm_adam_general", "nm_adam_general"),
    } & set(pairs)
    assert not [p for p in example.comparisons(example.parse_args(argv)) if "general" in p[1]]
    with pytest.raises(SystemExit) as exit_info:
        example.parse_args([*argv, "--versus", "nm_adam_digits"])
    assert exit_info.value.code == 2 and "not among the agents" in capsys.readouterr().err
