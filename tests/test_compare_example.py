"""examples/compare.py: the paired differences behind the evidence's verdicts."""

import numpy as np
import pytest
from examples_loader import load_example


@pytest.fixture(scope="module")
def compare():
    return load_example("compare")


def _result(model, method, finals):
    # two epochs of curves per seed; only the last is compared
    return {"model": model, "method": method, "test_curves": [[0.0, f] for f in finals]}


def test_paired_differences_match_a_hand_computed_interval(compare):
    agent = [0.9, 0.81, 0.72]
    baseline = [0.8, 0.7, 0.6]  # differences 0.10, 0.11, 0.12: mean 0.11, sd 0.01
    results = [_result("mlp", "Nm-Adam", agent), _result("mlp", "Adam", baseline)]
    (row,) = compare.paired_differences(results, ["Nm-Adam"])
    # Student's t, 2 degrees of freedom, 97.5%: 4.3027
    half = 4.302653 * 0.01 / np.sqrt(3)
    assert row["baseline"] == "Adam" and row["seeds"] == 3 and row["ahead"] == 3
    assert row["mean_difference"] == pytest.approx(0.11, abs=1e-4)
    assert row["ci_half_width"] == pytest.approx(half, abs=1e-4)
    assert row["within_noise"] is False  # [0.085, 0.135]
    assert "better" in compare.paired_table([row])

def test_an_interval_holding_zero_is_called_noise(compare):
    results = [_result("A", "Nm-SGD", [0.5, 0.7, 0.6, 0.6]),
               _result("A", "SGD*", [0.6, 0.6, 0.6, 0.5])]
    (row,) = compare.paired_differences(results, ["Nm-SGD"])
    assert row["ci"][0] < 0 < row["ci"][1] and row["within_noise"]
    assert "within noise" in compare.paired_table([row])
