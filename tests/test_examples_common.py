"""examples/_common.py: the examples' shared flags, tables, figures and JSON line."""

import json

import numpy as np
import pytest

from examples_loader import load_example


def load(name):
    return load_example(name)


@pytest.fixture(scope="module")
def common():
    return load("_common")


def test_one_flag_vocabulary(common):
    parser = common.parser(
        "An example.\n\nMore text.", "runs/x", quick="small", resume="go on", progress=True
    )
    common.add_learning_rate(parser, 0.003, "step size")
    args = parser.parse_args([])
    assert (args.quick, args.seed, args.out, args.resume, args.no_progress, args.learning_rate) == (
        False,
        0,
        "runs/x",
        False,
        False,
        0.003,
    )
    assert parser.description == "An example."
    assert parser.parse_args(["--learning-rate", "0.1"]).learning_rate == 0.1
    assert parser.parse_args(["--lr", "0.2"]).learning_rate == 0.2  # the old spelling still works
    help_text = parser.format_help()
    assert "--learning-rate" in help_text and "--lr" not in help_text


def test_optional_flags_left_out(common):
    parser = common.parser("An example.", "runs/x", seed=None)
    for flag in ("--quick", "--seed", "--resume", "--no-progress"):
        with pytest.raises(SystemExit):
            parser.parse_args([flag])


def test_tables(common):
    assert common.table([("a", "1"), ("long key", "two words")], align="ll") == (
        "a         1\nlong key  two words"
    )
    text = common.table([("x", 1.5), ("yy", 10)], headers=("name", "value"))
    assert text == "name  value\nx       1.5\nyy       10"
    markdown = common.table([("x", "1")], headers=("name", "value"), align="lr", markdown=True)
    assert markdown == "| name | value |\n|---|---:|\n| x | 1 |"


def test_figure_and_json_line(common, tmp_path, capsys):
    figure, axis = common.pyplot().subplots()
    axis.plot([0, 1], [1, 0])
    path = common.save_figure(figure, str(tmp_path / "new" / "figure.png"))
    with open(path, "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
    common.print_json_line({"a": np.float32(0.5), "b": np.arange(2), "c": np.bool_(True)})
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "a": 0.5,
        "b": [0, 1],
        "c": True,
    }


@pytest.mark.parametrize(
    "name",
    [
        "cue_reward",
        "enu_iaf",
        "enu_stdp",
        "enu_tmaze",
        "pattern_memory",
        "switch_digits",
        "switch_gates",
    ],
)
def test_examples_read_learning_rate(name, capsys):
    example = load(name)
    with pytest.raises(SystemExit):
        example.main(["--help"])
    assert "--learning-rate" in capsys.readouterr().out
