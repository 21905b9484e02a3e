"""The `keras-neuromod` command: `zoo list`, `zoo show`, `evolve` and `python -m keras_neuromod`."""

import json
import os
import subprocess
import sys

import pytest

from helpers import TINY_EVOLVE
from keras_neuromod import zoo
from keras_neuromod.cli import _startup
from keras_neuromod.cli import evolve
from keras_neuromod.cli import main

TINY = list(TINY_EVOLVE)


def test_zoo_list_prints_every_shipped_agent(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for entry in zoo.list_agents():
        assert entry["name"] in out and entry["summary"] in out
    assert main(["zoo", "list", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["name"] for line in lines] == [e["name"] for e in zoo.list_agents()]


def test_zoo_show_prints_the_card_and_refuses_an_unknown_agent(capsys, tmp_path):
    assert main(["zoo", "show", "nm_sgd_digits"]) == 0
    out = capsys.readouterr().out
    agent = zoo.load("nm_sgd_digits")
    assert out.startswith("nm_sgd_digits: an NmSGD agent")
    assert f"{agent.genome.n_regulatory} regulatory proteins" in out
    assert agent.provenance["command"] in out
    assert main(["zoo", "show", "nm_sgd_digits", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["provenance"] == agent.provenance and card["benchmark"] == agent.benchmark
    assert card["genome"]["n_regulatory"] == agent.genome.n_regulatory
    # an agent file shows as a zoo agent does
    path = zoo.save(agent, str(tmp_path / "mine.json"))
    assert main(["zoo", "show", path]) == 0
    assert "nm_sgd_digits: an NmSGD agent" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "show", "no_such_agent"])
    assert "no_such_agent" in str(exit_info.value.code) and "known agents" in str(
        exit_info.value.code
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo"])
    assert exit_info.value.code == 2


def test_zoo_show_prints_the_verdicts_of_an_evidence_record(capsys):
    assert main(["zoo", "show", "nm_adam_general"]) == 0
    out = capsys.readouterr().out
    record = zoo.load("nm_adam_general").benchmark["held_out"]
    assert f"{record['seeds']} seeds on each of {len(record['pairs'])} (task, model) pairs" in out
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    for entry in record["summary"]:
        ratio = entry["log_error_ratio"]
        line = rows[entry["baseline"]]
        assert f"{entry['better']} / {entry['within_noise']} / {entry['worse']}" in line
        assert f"{ratio['mean']:+.2f} [{ratio['ci'][0]:+.2f}, {ratio['ci'][1]:+.2f}]" in line
        assert line.rstrip().endswith(ratio["verdict"])


def test_zoo_show_prints_a_comparisons_paired_differences(capsys):
    assert main(["zoo", "show", "nm_sgd_digits"]) == 0
    out = capsys.readouterr().out
    record = zoo.load("nm_sgd_digits").benchmark["digits"]
    assert f"{record['seeds']} seeds on digits; the agent's test accuracy minus" in out
    lines = [line.split() for line in out.splitlines()]
    for p in record["paired"]:
        low, high = p["ci"]
        cells = [p["model"], p["baseline"], f"{p['mean']:+.4f}", f"[{low:+.4f},", f"{high:+.4f}]"]
        assert cells + p["verdict"].split() in lines


def test_evolve_is_the_example_flag_for_flag(tmp_path, capsys):
    out = str(tmp_path / "run")
    ranges = ["--ranges", "learning_rate=1e-4:1e-2"]
    assert main(["evolve", *TINY, "--generations", "1", *ranges, "--out", out]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["generations"] == 1 and summary["evaluations"] == 4
    assert sorted(os.listdir(out)) == [
        "best_agent.json",
        "checkpoint.json",
        "fitness.png",
        "logbook.csv",
    ]
    agent = zoo.load(summary["agent"])
    assert agent.ranges["learning_rate"] == (1e-4, 1e-2)  # the file keeps the run's ranges
    assert agent.optimizer().ranges["learning_rate"] == (1e-4, 1e-2)
    assert (agent.provenance["inputs"], agent.provenance["outputs"]) == ("paper", "paper")
    command = agent.provenance["command"]
    assert command.startswith("keras-neuromod evolve --task digits --base adam --population 4 ")
    assert " --ranges learning_rate=0.0001:0.01" in command
    # the recorded command parses back to the same run
    replay = evolve.parse_args(command.split()[2:])
    assert (replay.population, replay.generations, replay.models, replay.seed) == (
        4,
        1,
        ("mlp",),
        0,
    )
    assert replay.ranges == {"learning_rate": (1e-4, 1e-2)}
    # the flags and the settings are the example's
    from examples_loader import load_example

    example = load_example("evolve")
    for argv in (
        [],
        ["--quick", "--task", "cifar10"],
        ["--suite"],
        ["--timeout", "90", "--workers", "2"],
    ):
        ours, theirs = vars(evolve.parse_args(argv)), vars(example.parse_args(argv))
        assert ours.pop("prog") == "keras-neuromod evolve" and theirs.pop("prog") == example.PROG
        assert ours == theirs
    assert example.reproducing_command(example.parse_args([]), 1).startswith(
        "python examples/evolve.py "
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["evolve", "--generations", "-1"])
    assert exit_info.value.code == 2


def test_the_command_line_is_recognised_and_nothing_else():
    assert _startup.is_command_line(["python", "/venv/bin/keras-neuromod", "zoo", "list"])
    assert _startup.is_command_line(["python3", "-X", "utf8", "-m", "keras_neuromod", "zoo"])
    assert not _startup.is_command_line(["python", "train.py", "-m", "keras_neuromod"])
    assert not _startup.is_command_line(["python", "-m", "pytest", "tests"])
    assert not _startup.is_command_line(["python", "-c", "import keras_neuromod"])
    assert not _startup.is_command_line(["python"])


@pytest.mark.slow
def test_python_m_keras_neuromod_starts_without_tensorflow_notices(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", "keras_neuromod", "zoo", "list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    assert "nm_adam_general" in done.stdout
    assert done.stderr == "", done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "keras_neuromod", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert helped.returncode == 0 and helped.stdout.startswith("keras_neuromod ")


def test_compare_is_the_example_flag_for_flag(capsys):
    from examples_loader import load_example
    from keras_neuromod.cli import compare

    example = load_example("compare")
    for argv in (
        ["--agent", "nm_adam_digits"],
        ["--quick", "--agent", "nm_sgd_digits", "--dataset", "wine"],
    ):
        ours, theirs = vars(compare.parse_args(argv)), vars(example.parse_args(argv))
        assert ours.keys() == theirs.keys()
        assert {k: v for k, v in ours.items() if k != "agents"} == {
            k: v for k, v in theirs.items() if k != "agents"
        }
        assert [a.name for a in ours["agents"]] == [a.name for a in theirs["agents"]]
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--agent", "no_such_agent"])
    assert exit_info.value.code == 2
    assert "keras-neuromod compare" in capsys.readouterr().err


def test_an_agents_cpu_hours_add_the_measured_generations_and_estimate_the_others():
    # generations of a resumed run: two recorded without their CPU time, two with it
    logbook = [
        {"seconds": 100.0},
        {"seconds": 50.0, "cpu_seconds": None},
        {"seconds": 400.0, "cpu_seconds": 700.0},
        {"seconds": 300.0, "cpu_seconds": 500.0},
    ]
    record = evolve._cpu_hours(logbook, workers=2, selection={"cpu_seconds": 600.0})
    assert record["cpu_hours"] == round((150 * 2 + 700 + 500 + 600) / 3600, 2)
    assert record["cpu_hours_estimated"].startswith("2 of 4 generations")
    measured = evolve._cpu_hours(logbook[2:], workers=2, selection=None)
    assert measured == {"cpu_hours": round(1200 / 3600, 2)}
