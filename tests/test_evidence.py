"""keras_neuromod.evidence: paired comparisons, their statistics, tuned baselines, the record."""

import hashlib
import json
import math
import os

import keras
import numpy as np
import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from scipy import stats

from keras_neuromod import datasets
from keras_neuromod import evidence
from keras_neuromod import tasks
from keras_neuromod.evidence import Run


def _blobs(seed):
    """Two Gaussian blobs in 4-D, drawn from `seed`: a tiny, quick classification."""
    rng = np.random.default_rng([seed, 99])
    y = rng.integers(0, 2, 160).astype("int32")
    x = (rng.standard_normal((160, 4)) + 1.5 * y[:, None]).astype("float32")
    return datasets.Dataset((x[:120], y[:120]), (x[120:], y[120:]), 2)


TINY = tasks.Task(
    "tiny_blobs",
    "tabular",
    _blobs,
    ("linear", "mlp"),
    "sparse_categorical_crossentropy",
    epochs=2,
    batch_size=32,
    description="Two blobs, for tests.",
)


def _run(seed, metric, loss=None, diverged=False):
    return Run(
        seed=seed,
        metric=math.nan if diverged else metric,
        loss=math.nan if diverged else (loss if loss is not None else 1.0 - metric),
        diverged=diverged,
        steps=10,
        examples=40,
    )


# -- statistics ----------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=30),
    st.sampled_from([0.8, 0.9, 0.95, 0.99]),
)
@example([0.0, 1e-9], 0.8)  # a tiny spread is a spread: scipy's interval, not the mean
def test_interval_matches_scipy(values, confidence):
    mean, low, high = evidence.interval(values, confidence)
    values = np.asarray(values)
    assert mean == pytest.approx(values.mean())
    if np.ptp(values) == 0:  # no spread: the interval is the mean (scipy's would be NaN)
        assert low == pytest.approx(mean, abs=1e-12) and high == pytest.approx(mean, abs=1e-12)
        return
    reference = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    assert low == pytest.approx(reference.low, rel=1e-9, abs=1e-9)
    assert high == pytest.approx(reference.high, rel=1e-9, abs=1e-9)


def test_interval_of_one_value_is_infinite():
    assert evidence.interval([0.3]) == (0.3, -math.inf, math.inf)
    with pytest.raises(ValueError, match="non-empty"):
        evidence.interval([])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 1), st.booleans(), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    st.booleans(),
)
def test_a_divergence_never_helps_the_method_that_diverged(rows, higher_is_better):
    """Paired differences, whichever side diverged, against a plain numpy computation."""
    mine = [_run(i, a, diverged=da) for i, (a, _, da, _) in enumerate(rows)]
    theirs = [_run(i, b, diverged=db) for i, (_, b, _, db) in enumerate(rows)]
    zero = [_run(i, 0.25) for i in range(len(rows))]
    got = evidence.paired_differences(mine, theirs, zero, higher_is_better)
    sign = 1.0 if higher_is_better else -1.0
    for d, (a, b, da, db) in zip(got, rows):
        if da and db:
            assert d == 0
        elif da:
            assert d <= 0 and d == pytest.approx(min(sign * b, sign * 0.25) - sign * b)
        elif db:
            assert d >= 0 and d == pytest.approx(sign * a - min(sign * a, sign * 0.25))
        else:
            assert d == pytest.approx(sign * (a - b))
    # swapping the two sides turns every difference round
    swapped = evidence.paired_differences(theirs, mine, zero, higher_is_better)
    np.testing.assert_allclose(swapped, -got, atol=1e-12)


def test_loss_and_error_ratios():
    mine = [_run(0, 0.9, loss=0.2), _run(1, 1.0, loss=0.1)]
    theirs = [_run(0, 0.8, loss=0.4), _run(1, 0.95, loss=0.3)]
    zero = [_run(0, 0.5, loss=2.0), _run(1, 0.5, loss=2.0)]
    loss = evidence.paired_differences(mine, theirs, zero, True, "loss")
    np.testing.assert_allclose(loss, [math.log(0.4 / 0.2), math.log(0.3 / 0.1)])
    error = evidence.paired_differences(mine, theirs, zero, True, "error")
    # a perfect run's error is half an example's share (40 examples), not 0
    np.testing.assert_allclose(error, [math.log(0.2 / 0.1), math.log(0.05 / (0.5 / 40))])
    with pytest.raises(ValueError, match="one run per seed"):
        evidence.paired_differences(mine, theirs[:1], zero, True)


# -- compare, on real trainings -----------------------------------------------------


@pytest.mark.slow
def test_a_diverging_method_loses_whichever_side_it_is_on(tmp_path):
    report = evidence.compare(
        TINY,
        {
            "Adam": lambda: keras.optimizers.Adam(0.05),
            "diverging": lambda: keras.optimizers.SGD(1e12),
        },
        models="mlp",
        seeds=3,
    )
    runs = report.runs("mlp", "diverging")
    assert all(r.diverged for r in runs)
    assert all(r.steps < 8 for r in runs)  # stopped at the first non-finite loss
    assert not any(r.diverged for r in report.runs("mlp", "Adam"))
    assert report.verdict("diverging", "Adam") == "worse"
    assert report.verdict("Adam", "diverging") == "better"
    assert report.verdict("Adam", "diverging", on="loss") == "better"
    row = next(r for r in report.rows() if r["method"] == "diverging")
    assert row["diverged"] == 3
    # a diverged run is scored as the untrained model in the table
    untrained = np.mean([r.metric for r in report.untrained("mlp")])
    assert row["metric_mean"] == pytest.approx(untrained)
    assert "worse" in report.table(baseline="Adam")
    # the per-seed differences against an independent computation from the runs
    adam, zero = report.runs("mlp", "Adam"), report.untrained("mlp")
    expected = [min(z.metric, a.metric) - a.metric for a, z in zip(adam, zero)]
    assert report.paired("diverging", "Adam")["differences"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="No method 'SGD'"):
        report.verdict("SGD", "Adam")


@pytest.mark.slow
def test_same_seed_same_start_and_batches():
    """Two methods with identical settings produce identical runs: the pairing holds."""
    report = evidence.compare(
        TINY,
        {"a": lambda: keras.optimizers.SGD(0.1), "b": lambda: keras.optimizers.SGD(0.1)},
        seeds=2,
    )
    for model in TINY.models:
        assert report.runs(model, "a") == report.runs(model, "b")
    assert report.verdict("a", "b") == "within noise"
    p = report.paired("a", "b")
    assert p["mean"] == 0 and p["ci"] == [0.0, 0.0] and p["differences"] == [0.0, 0.0]


@pytest.mark.slow
def test_interrupted_record_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    methods = {
        "SGD": lambda: keras.optimizers.SGD(0.05),
        "Adam": lambda: keras.optimizers.Adam(0.01),
    }
    whole = evidence.compare(TINY, methods, models="mlp", seeds=3, record=tmp_path / "whole.json")

    # a crash after 4 trainings (simulated: the 5th raises)
    real_run, calls = evidence.Trainer.run, []

    def crashing(self, *args, **kwargs):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(1)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(evidence.Trainer, "run", crashing)
    path = tmp_path / "resumed.json"
    with pytest.raises(KeyboardInterrupt):
        evidence.compare(TINY, methods, models="mlp", seeds=3, record=path)
    saved = json.loads(path.read_text())
    assert sum(len(m["runs"]) for m in saved["models"]["mlp"]["methods"].values()) == 4

    monkeypatch.setattr(evidence.Trainer, "run", real_run)
    resumed_calls = []
    monkeypatch.setattr(
        evidence.Trainer,
        "run",
        lambda self, *a, **k: resumed_calls.append(1) or real_run(self, *a, **k),
    )
    resumed = evidence.compare(TINY, methods, models="mlp", seeds=3, record=path)
    assert len(resumed_calls) == 2  # only the unfinished runs
    for method in methods:
        assert resumed.runs("mlp", method) == whole.runs("mlp", method)
    assert json.loads(path.read_text()) == json.loads((tmp_path / "whole.json").read_text())


def test_changed_settings_are_trained_again(tmp_path):
    path = tmp_path / "record.json"
    first = evidence.compare(
        TINY, {"SGD": lambda: keras.optimizers.SGD(0.05)}, models="linear", seeds=2, record=path
    )
    again = evidence.compare(
        TINY, {"SGD": lambda: keras.optimizers.SGD(0.5)}, models="linear", seeds=2, record=path
    )
    assert first.runs("linear", "SGD") != again.runs("linear", "SGD")


def test_identity_leaves_out_a_setting_added_at_its_neutral_value():
    """An optimizer's identity hashes its serialized config without the name and
    without a later setting (the output set) at the value that trains as before."""
    from keras_neuromod import NmAdam

    def digest(optimizer, drop):
        data = keras.saving.serialize_keras_object(optimizer)
        data["config"] = {k: v for k, v in data["config"].items() if k not in drop}
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    paper = NmAdam(agent="nm_adam_general", outputs="paper")
    centred = NmAdam(agent="nm_adam_general", outputs="centred")
    assert evidence.identity(paper) == digest(paper, {"name", "outputs", "horizon"})
    assert evidence.identity(centred) == digest(centred, {"name", "horizon"})
    assert evidence.identity(paper) != evidence.identity(centred)
    # a horizon given when the optimizer is made changes its training: it is no neutral value
    told = NmAdam(agent="nm_adam_general", outputs="centred", horizon=100)
    assert evidence.identity(told) == digest(told, {"name"}) != evidence.identity(centred)
    sgd = keras.optimizers.SGD(0.1)
    assert evidence.identity(sgd) == digest(sgd, {"name"})


def test_the_records_identities_hold_for_the_optimizers_of_today():
    """The held-out record's runs are reused only while an agent's identity holds: a
    setting added to the optimizers' config must not change it at its neutral value."""
    from keras_neuromod import zoo

    root = os.path.join(os.path.dirname(__file__), os.pardir, "zoo")
    with open(os.path.join(root, "evidence", "general", "records", "wine.json")) as stream:
        saved = json.load(stream)["models"]["mlp"]["methods"]
    runs = os.path.join(root, "runs")
    agents = {
        "nm_adam_general": "nm_adam_general",
        "nm_sgd_general": "nm_sgd_general",
        "nm_adam_sensing / not told": os.path.join(runs, "nm_adam_sensing", "best_agent.json"),
        "static search (adam, sensing)": os.path.join(
            runs, "static_adam_sensing", "best_agent.json"
        ),
    }
    for name, agent in agents.items():
        assert saved[name]["identity"] == evidence.identity(zoo.load(agent).optimizer()), name


def _sensing_agent():
    from keras_neuromod import NmAdam
    from keras_neuromod.agrn import Genome
    from keras_neuromod.inputs import SENSING

    return NmAdam(agent=Genome.random(SENSING.size, 8, 3, rng=0), inputs="sensing")


def test_with_horizon_tells_each_training_its_updates_and_clears_them(tmp_path):
    from keras_neuromod.callbacks import ModulationTracer
    from keras_neuromod.inputs import SENSING

    trainer = evidence.Trainer(TINY, "linear", _sensing_agent())
    examples = len(TINY.splits(3).train[0])
    updates = TINY.epochs * math.ceil(examples / TINY.batch_size)
    tracer = ModulationTracer(update_freq=1)
    trainer.run(3, callbacks=[tracer], horizon=True)
    progress = tracer.inputs[:, 0, SENSING.names.index("progress")]
    known = tracer.inputs[:, 0, SENSING.names.index("horizon_known")]
    np.testing.assert_allclose(progress, np.arange(1, updates + 1) / updates, atol=1e-6)
    assert np.all(known == 1)
    assert float(trainer.optimizer.horizon_variable.numpy()) == 0.0
    tracer = ModulationTracer(update_freq=1)
    trainer.run(3, callbacks=[tracer])  # not told: the inputs read 0
    assert not tracer.inputs[:, 0, SENSING.names.index("horizon_known")].any()
    with pytest.raises(ValueError, match="Only a neuromodulated optimizer"):
        evidence.Trainer(TINY, "linear", keras.optimizers.Adam()).run(0, horizon=True)


def test_with_horizon_is_a_method_of_its_own_in_a_record(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    methods = {
        "told": evidence.WithHorizon(_sensing_agent),
        "not told": _sensing_agent,
        "told, frozen": evidence.WithHorizon(evidence.Ablated(_sensing_agent, "frozen")),
    }
    report = evidence.compare(TINY, methods, models="linear", seeds=2, record=path)
    saved = json.loads(path.read_text())["models"]["linear"]["methods"]
    assert len({saved[name]["identity"] for name in methods}) == 3
    assert report.runs("linear", "told") != report.runs("linear", "not told")
    monkeypatch.setattr(evidence.Trainer, "run", None)  # resumed: nothing trains again
    again = evidence.compare(TINY, methods, models="linear", seeds=2, record=path)
    for name in methods:
        assert again.runs("linear", name) == report.runs("linear", name)
    for bad in (evidence.Tuned("Adam"), "Adam", evidence.WithHorizon(_sensing_agent)):
        with pytest.raises(ValueError, match="WithHorizon takes"):
            evidence.WithHorizon(bad)


def test_an_agent_that_reads_its_progress_is_told_it_in_a_comparison_and_no_other():
    from keras_neuromod import zoo
    from keras_neuromod.agrn import Genome
    from keras_neuromod.inputs import SENSING

    sensing = zoo.Agent(
        name="nm_adam_sensing_test",
        base="adam",
        genome=Genome.random(SENSING.size, 8, 2, rng=0),
        settings={"inputs": "sensing"},
    )
    paper = zoo.Agent(name="nm_adam_test", base="adam", genome=Genome.random(13, 8, 2, rng=0))
    told = evidence.agent_method(sensing)
    assert isinstance(told, evidence.WithHorizon) and told.method == sensing.optimizer
    assert evidence.agent_method(paper) == paper.optimizer
    ablated = evidence.Ablated(sensing.optimizer, "frozen")
    assert evidence.agent_method(sensing, ablated).method is ablated
    assert evidence.agent_method(paper, ablated) is ablated
    # told, each training is told its horizon; as it is, not
    plans = {}
    for name, method in (("told", told), ("as it is", paper.optimizer)):
        plans[name] = evidence._as_method(name, method).plan(None).horizon
    assert plans == {"told": True, "as it is": False}


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", "not an evidence record"),
        (
            '{"format": "keras_neuromod.evidence-record/1", "task": "other", "models": {}}',
            "holds the task",
        ),
        (
            '{"format": "keras_neuromod.evidence-record/1", "task": "tiny_blobs"}',
            "'models' must be",
        ),
        (
            '{"format": "keras_neuromod.evidence-record/1", "task": "tiny_blobs", '
            '"models": {"linear": '
            '{"methods": {"SGD": {"runs": {}}}}}}',
            "identity",
        ),
        (
            '{"format": "keras_neuromod.evidence-record/1", "task": "tiny_blobs", '
            '"models": {"linear": '
            '{"untrained": {"0": {"seed": 0, "metric": 0.5}}}}}',
            "lacks the field",
        ),
        (
            '{"format": "keras_neuromod.evidence-record/1", "task": "tiny_blobs", '
            '"models": {"linear": '
            '{"untrained": {"0": {"seed": "x", "metric": 0.5, "loss": 1, "diverged": false, '
            '"steps": 1, '
            '"examples": 1}}}}}',
            "wrong type",
        ),
    ],
)
def test_malformed_records_are_refused(tmp_path, content, message):
    path = tmp_path / "record.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        evidence.compare(TINY, {"SGD": keras.optimizers.SGD}, models="linear", seeds=2, record=path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown task"):
        evidence.compare("no_such_task", {"SGD": keras.optimizers.SGD})
    with pytest.raises(ValueError, match="not 'resnet'"):
        evidence.compare(TINY, {"SGD": keras.optimizers.SGD}, models="resnet")
    with pytest.raises(ValueError, match="non-empty dict"):
        evidence.compare(TINY, {})
    with pytest.raises(ValueError, match="zero-argument factory"):
        evidence.compare(TINY, {"SGD": "sgd"})
    with pytest.raises(ValueError, match="not a Keras optimizer"):
        evidence.compare(TINY, {"x": lambda: 3}, models="linear", seeds=1)


# -- aggregate -------------------------------------------------------------------


@pytest.mark.slow
def test_aggregate_takes_its_interval_over_tasks():
    other = tasks.Task(
        "tiny_blobs_2",
        "tabular",
        lambda s: _blobs(s + 50),
        ("linear",),
        "sparse_categorical_crossentropy",
        epochs=2,
    )
    methods = {
        "good": lambda: keras.optimizers.Adam(0.05),
        "slow": lambda: keras.optimizers.SGD(1e-4),
    }
    reports = [evidence.compare(t, methods, seeds=3) for t in (TINY, other)]
    summary = evidence.aggregate(reports, "good", "slow")
    assert summary["pairs"] == 3 and summary["tasks"] == 2
    assert summary["better"] + summary["within_noise"] + summary["worse"] == 3
    per_task = [r.differences("good", "slow", what="error").mean() for r in reports]
    reference = stats.ttest_1samp(per_task, 0.0).confidence_interval(0.95)
    assert summary["log_error_ratio"]["mean"] == pytest.approx(np.mean(per_task))
    assert summary["log_error_ratio"]["ci"] == pytest.approx([reference.low, reference.high])
    # an Adam that trains beats an SGD that barely moves the initial weights
    assert summary["worse"] == 0 and summary["log_error_ratio"]["mean"] > 0


# -- tuned baselines -----------------------------------------------------------------


def test_a_line_search_extends_its_grid_past_an_edge():
    axis = evidence.Axis((1e-3, 1e-2, 1e-1), "log", (1e-9, 10.0))
    tried = []

    def score(point):  # best at 1e-6, far below the grid
        tried.append(point["learning_rate"])
        return (math.log10(point["learning_rate"]) + 6) ** 2

    best = evidence.Tuned._line(
        {"learning_rate": 1e-2}, "learning_rate", axis, list(axis.values), score
    )
    assert best == pytest.approx(1e-6)
    assert min(tried) < 1e-6  # it went one step past the best, to see it is not an edge
    inside = evidence.Tuned._line(
        {"learning_rate": 1e-2},
        "learning_rate",
        axis,
        list(axis.values),
        lambda p: (math.log10(p["learning_rate"]) + 2) ** 2,
    )
    assert inside == pytest.approx(1e-2)


def test_a_line_search_stops_at_the_axis_limit():
    axis = evidence.Axis((0.9, 0.99, 0.999), "complement_log", (0.5, 0.9999))
    best = evidence.Tuned._line(
        {"beta": 0.9}, "beta", axis, list(axis.values), lambda p: -p["beta"]
    )
    assert best == pytest.approx(0.9999)
    best = evidence.Tuned._line({"beta": 0.9}, "beta", axis, list(axis.values), lambda p: p["beta"])
    assert best == pytest.approx(0.5)


@pytest.mark.slow
def test_tuned_searches_on_validation_seeds_and_reports_its_budget(tmp_path):
    axes = {
        "learning_rate": evidence.Axis((0.01, 0.1, 1.0), "log", (1e-4, 10.0)),
        "momentum": evidence.Axis((0.0, 0.9), "complement_log", (0.0, 0.99)),
    }
    path = tmp_path / "record.json"
    tuned = evidence.Tuned("SGD", schedule="cosine", axes=axes, seeds=2)
    report = evidence.compare(TINY, {"SGD*": tuned}, models="linear", seeds=2, record=path)
    chosen = report.settings[("linear", "SGD*")]
    search = report.searches[("linear", "SGD*")]
    candidates = json.loads(path.read_text())["models"]["linear"]["searches"]["SGD*"]["candidates"]
    assert search == {"candidates": len(candidates), "seeds": 2, "trainings": 2 * len(candidates)}
    losses = {k: np.mean([float(v) for v in vals]) for k, vals in candidates.items()}
    assert json.dumps(chosen, sort_keys=True) == min(losses, key=losses.get)
    # the chosen optimizer has a warm-up and cosine decay over the task's steps
    optimizer = tuned.make(chosen, total_steps=10)
    schedule = (
        optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    )
    assert float(schedule(0)) == 0.0
    assert float(schedule(1)) == pytest.approx(chosen["learning_rate"])
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-7)
    # resumed, the search is read back, not run again
    before = path.read_text()
    again = evidence.compare(TINY, {"SGD*": tuned}, models="linear", seeds=2, record=path)
    assert again.settings == report.settings
    assert path.read_text() == before


def test_tuned_arguments():
    with pytest.raises(ValueError, match="schedule"):
        evidence.Tuned("Adam", schedule="linear")
    with pytest.raises(ValueError, match="Give the axes"):
        evidence.Tuned("RMSprop")
    with pytest.raises(ValueError, match="Unknown Keras optimizer"):
        evidence.Tuned("Nope", axes={"learning_rate": evidence.Axis((0.1, 1.0))})
    assert set(evidence.Tuned("Adam").axes) == {"learning_rate", "beta_1", "beta_2", "epsilon"}
    assert set(evidence.Tuned("SGD").axes) == {"learning_rate", "momentum", "nesterov"}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["Adam", "nm_adam_digits", "frozen"])
def test_a_reused_trainer_trains_each_seed_as_a_fresh_model(optimizer):
    from keras_neuromod import NmAdam
    from keras_neuromod.optimizers.ablation import ablate

    def make():
        if optimizer == "Adam":
            return keras.optimizers.Adam()
        if optimizer == "frozen":
            return ablate(
                NmAdam(agent="nm_adam_digits"),
                "frozen",
                hyperparameters=np.tile([[3e-3, 0.8, 0.99, 1e-6]], (2, 1)),
            )
        return NmAdam(agent=optimizer)

    trainer = evidence.Trainer(TINY, "linear", make())
    first = trainer.run(1)
    again = trainer.run(0)  # after another seed's training
    fresh = evidence.Trainer(TINY, "linear", make()).run(0)
    assert again.loss == pytest.approx(fresh.loss, rel=1e-6)
    assert again.metric == pytest.approx(fresh.metric, rel=1e-6)
    assert first.loss != pytest.approx(fresh.loss, rel=1e-3)


def test_dropout_draws_are_the_seeds():
    """A model with dropout: a seed's training is the same from a fresh trainer or a reused one."""

    def dropout_mlp(input_shape, output_dim, seed=None):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Dense(
            16, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed)
        )(inputs)
        x = keras.layers.Dropout(0.5)(x)
        outputs = keras.layers.Dense(
            output_dim, kernel_initializer=keras.initializers.GlorotUniform(seed)
        )(x)
        return keras.Model(inputs, outputs)

    tasks.register_model("test_dropout_mlp", dropout_mlp, overwrite=True)
    task = tasks.Task(
        "tiny_dropout",
        "tabular",
        _blobs,
        ("test_dropout_mlp",),
        "sparse_categorical_crossentropy",
        epochs=2,
    )
    trainer = evidence.Trainer(task, "test_dropout_mlp", keras.optimizers.SGD(0.1))
    first = trainer.run(3)
    trainer.run(4)
    assert trainer.run(3) == first
    assert evidence.Trainer(task, "test_dropout_mlp", keras.optimizers.SGD(0.1)).run(3) == first


@pytest.mark.slow
def test_a_search_can_start_from_another_searchs_choice():
    axes = {
        "learning_rate": evidence.Axis((0.01, 0.1), "log", (1e-3, 1.0)),
        "momentum": evidence.Axis((0.0, 0.5, 0.9), "complement_log", (0.0, 0.99)),
    }
    methods = {
        "SGD*": evidence.Tuned("SGD", axes=axes, seeds=1),
        "SGD* cosine": evidence.Tuned(
            "SGD",
            "cosine",
            axes={"learning_rate": axes["learning_rate"]},
            seeds=1,
            start_from="SGD*",
        ),
    }
    report = evidence.compare(TINY, methods, models="linear", seeds=2)
    constant = report.settings[("linear", "SGD*")]
    cosine = report.settings[("linear", "SGD* cosine")]
    assert cosine["momentum"] == constant["momentum"] and set(cosine) == set(constant)
    with pytest.raises(ValueError, match="listed before it"):
        evidence.compare(TINY, {"late": methods["SGD* cosine"]}, models="linear", seeds=2)


def test_table_cells_show_a_methods_row_and_a_paired_difference():
    row = {"metric_mean": 0.91234, "metric_std": 0.01231, "loss_median": 0.345678, "diverged": 2}
    assert evidence.result_cells(row) == ("0.9123 +- 0.0123", "0.3457", "2")
    paired = {
        "mean": -0.01,
        "ci": (-0.02, 0.005),
        "seeds_ahead": 3,
        "seeds": 10,
        "verdict": "within noise",
    }
    assert evidence.paired_cells(paired) == (
        "-0.0100",
        "[-0.0200, +0.0050]",
        "3/10",
        "within noise",
    )
