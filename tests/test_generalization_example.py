"""examples/generalization.py: the held-out evidence, its statistics, its record and resume."""

import json
import os

import numpy as np
import pytest
from examples_loader import load_example

from keras_neuromod import Genome
from keras_neuromod import tasks
from keras_neuromod import zoo
from keras_neuromod.io import read_json


@pytest.fixture(scope="module")
def example():
    return load_example("generalization")


def _runs(scores, losses, diverged=()):
    return {"runs": [{"score": s, "metric": s, "loss": l, "diverged": i in diverged}
                     for i, (s, l) in enumerate(zip(scores, losses))], "settings": None}


def test_paired_differences_and_the_summary_against_a_hand_computation(example):
    record = {
        # accuracy: higher is better
        "wine:mlp": {"methods": {"agent": _runs([0.9, 0.81, 0.72], [0.2, 0.3, 0.4]),
                                 "Adam": _runs([0.8, 0.7, 0.6], [0.4, 0.6, 0.8])}},
        # MSE: lower is better, so the sign turns; the agent's third run diverged
        "diabetes:linear": {"methods": {"agent": _runs([0.5, 0.5, 9.0], [0.5, 0.5, float("nan")], {2}),
                                        "Adam": _runs([0.6, 0.7, 0.8], [0.6, 0.7, 0.8])}},
    }
    paired, summary = example.compare(record, [("wine", "mlp"), ("diabetes", "linear")], ["agent"],
                                      ["Adam"])
    wine, diabetes = paired
    half = 4.302653 * 0.01 / np.sqrt(3)  # t(2 df, 97.5%) x sd 0.01 / sqrt(3)
    assert wine["mean_difference"] == pytest.approx(0.11, abs=1e-4)
    assert wine["ci_half_width"] == pytest.approx(half, abs=1e-4) and not wine["within_noise"]
    differences = -(np.array([0.5, 0.5, 9.0]) - [0.6, 0.7, 0.8])
    assert diabetes["mean_difference"] == pytest.approx(differences.mean(), abs=1e-4)
    assert diabetes["seeds_ahead"] == 2 and diabetes["within_noise"]
    (row,) = summary
    assert row["better_pairs"] == 1 and row["share_better"] == 0.5 and row["diverged_runs"] == 1
    ratios = [np.log(2.0), np.mean([np.log(0.6 / 0.5), np.log(0.7 / 0.5), -3.0])]
    assert row["log_loss_ratio"] == pytest.approx(np.mean(ratios), abs=1e-4)


def test_a_small_comparison_records_resumes_and_stores_its_summary(example, tmp_path, capsys):
    control = str(tmp_path / "control.json")
    zoo.save(zoo.Agent(name="random_adam", base="adam", genome=Genome.random(13, 8, 3, rng=4)), control)
    agent = str(tmp_path / "agent.json")
    zoo.save(zoo.load("nm_adam_digits"), agent)
    out = str(tmp_path / "out")
    argv = ["--quick", "--tasks", "diabetes:linear", "--seeds", "2", "--agent", agent,
            "--control", control, "--ablations", "--out", out, "--record"]
    example.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    headline = json.loads(lines[-1])
    assert headline["pairs"] == 1 and headline["seeds"] == 2
    assert set(headline) >= {"nm_adam_digits vs Adam", "nm_adam_digits vs Adam*",
                             "random search (adam) vs Adam"}
    result = read_json(os.path.join(out, "generalization.json"))
    methods = [r["method"] for r in result["rows"]]
    assert methods == ["SGD", "Adam", "AdamW", "ScheduleFreeAdamW", "Lamb", "SGD*", "Adam*",
                       "nm_adam_digits", "nm_adam_digits / frozen", "nm_adam_digits / network mean",
                       "random search (adam)"]
    tuned = {r["method"]: r["settings"] for r in result["rows"]}
    assert tuned["Adam*"]["learning_rate"] in (1e-3, 1e-2) and tuned["Adam"] is None
    assert result["grid_trainings_per_pair"] == {"SGD*": 2, "Adam*": 2}
    # the agent is also compared with its ablations and its control
    assert {(s["agent"], s["baseline"]) for s in result["summary"]} >= {
        ("nm_adam_digits", "nm_adam_digits / frozen"), ("nm_adam_digits", "random search (adam)")}
    assert os.path.exists(result["figure"])
    assert os.path.exists(os.path.join(out, "trace_nm_adam_digits_diabetes_linear.png"))
    card = zoo.load(agent).benchmark["held_out"]
    assert card["pairs"] == ["diabetes:linear"] and card["command"].startswith(
        "python examples/generalization.py")
    assert all(s["agent"].startswith("nm_adam_digits") for s in card["summary"])

    # resume: nothing is trained again, the same figures come out
    runs = os.path.join(out, "generalization.runs.json")
    before = os.stat(runs).st_mtime_ns
    example.main(argv[:-1] + ["--resume"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == headline
    assert os.stat(runs).st_mtime_ns == before
    # another agent joins the record: only its runs are trained, the others are kept as they
    # were; ablations only of the agent named
    other = str(tmp_path / "other.json")
    zoo.save(zoo.Agent(name="other", base="adam", genome=Genome.random(13, 8, 2, rng=9)), other)
    kept = read_json(runs)["pairs"]["diabetes:linear"]["methods"]
    example.main(argv[:-1] + ["--resume", "--agent", agent, other, "--ablations", "nm_adam_digits"])
    capsys.readouterr()
    saved = read_json(runs)["pairs"]["diabetes:linear"]["methods"]
    assert {m: saved[m] for m in kept} == kept
    assert set(saved) - set(kept) == {"other"}
    compared = {s["agent"] for s in read_json(os.path.join(out, "generalization.json"))["summary"]}
    assert "other / frozen" not in compared and "nm_adam_digits / frozen" in compared
    # a diverged run, as the record holds it (NaN as text), counts as the worst metric
    data = read_json(runs)
    data["pairs"]["diabetes:linear"]["methods"]["Lamb"]["runs"][0].update(
        loss="nan", metric="nan", diverged=True)
    with open(runs, "w") as stream:
        json.dump(data, stream)
    example.main(argv[:-1] + ["--resume"])
    capsys.readouterr()
    rows = {r["method"]: r for r in read_json(os.path.join(out, "generalization.json"))["rows"]}
    worst = float(np.mean(tasks.get("diabetes").splits(0).test[1] ** 2))
    assert rows["Lamb"]["diverged"] == 1 and rows["Adam"]["diverged"] == 0
    second = float(data["pairs"]["diabetes:linear"]["methods"]["Lamb"]["runs"][1]["metric"])
    assert rows["Lamb"]["mean"] == pytest.approx((worst + second) / 2, abs=1e-4)
    with pytest.raises(SystemExit, match="another protocol"):
        example.main(argv[:-1] + ["--resume", "--seeds", "3"])
    for bad in (["--seeds", "1"], ["--tasks", "wine:lstm"], ["--agent", "no_such_agent"],
                ["--agent", "nm_adam_digits", "--ablations", "nm_sgd_digits"]):
        with pytest.raises(SystemExit) as exit_info:
            example.parse_args(bad)
        assert exit_info.value.code == 2


@pytest.mark.parametrize("optimizer", ["Adam", "nm_adam_digits", "frozen"])
def test_a_reused_trainer_trains_each_seed_as_a_fresh_model(example, optimizer):
    import keras

    from keras_neuromod import NmAdam
    from keras_neuromod import tasks
    from keras_neuromod.optimizers.ablation import ablate

    def make():
        if optimizer == "Adam":
            return keras.optimizers.Adam()
        if optimizer == "frozen":
            return ablate(NmAdam(agent="nm_adam_digits"), "frozen",
                          hyperparameters=np.tile([[3e-3, 0.8, 0.99, 1e-6]], (2, 1)))
        return NmAdam(agent=optimizer)

    task = tasks.get("diabetes")
    trainer = example.Trainer(task, "linear", make())
    first = trainer.run(1)
    again = trainer.run(0)  # after another seed's training
    fresh = example.Trainer(task, "linear", make()).run(0)
    assert again["loss"] == pytest.approx(fresh["loss"], rel=1e-6)
    assert again["metric"] == pytest.approx(fresh["metric"], rel=1e-6)
    assert first["loss"] != pytest.approx(fresh["loss"], rel=1e-3)
