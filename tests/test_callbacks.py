"""ModulationTracer: what it records, the files it writes, its figure."""

import csv
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_neuromod import Genome
from keras_neuromod import NmAdam
from keras_neuromod import NmSGD
from keras_neuromod import datasets
from keras_neuromod import models
from keras_neuromod.callbacks import ModulationTracer


@pytest.fixture(scope="module")
def data():
    (x, y), _, _ = datasets.digits()
    return x[:320], y[:320]


def fit(data, optimizer, tracer, epochs=1, hidden=(16,), model=None):
    if model is None:
        model = models.build("mlp", (8, 8, 1), 10, hidden=hidden, seed=0)
    if optimizer is not None:
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(*data, epochs=epochs, batch_size=10, shuffle=False, verbose=0, callbacks=[tracer])
    return model


def agent():
    return Genome.random(13, 8, 2, rng=0)


@pytest.mark.slow
def test_records_every_n_steps_and_writes_files(data, tmp_path, monkeypatch):
    csv_path = tmp_path / "trace.csv"
    log_dir = tmp_path / "tb"
    tracer = ModulationTracer(update_freq=3, csv_path=str(csv_path), log_dir=str(log_dir))
    optimizer = NmAdam(agent=Genome.random(13, 8, 2, rng=0))
    fit(data, optimizer, tracer, epochs=2)
    steps = tracer.steps
    np.testing.assert_array_equal(steps, np.arange(1, 65, 3))
    assert tracer.inputs.shape == (len(steps), 4, 13)
    assert tracer.hyperparameters.shape == (len(steps), 4, 4)
    assert np.all(tracer.inputs[..., 12] == 1.0)
    assert tracer.inputs.min() >= 0 and tracer.inputs.max() <= 1
    # the last record (step 64) is the optimizer's final state
    np.testing.assert_array_equal(
        tracer.hyperparameters[-1], optimizer.modulation()["hyperparameters"]
    )
    np.testing.assert_array_equal(tracer.inputs[-1], optimizer.modulation()["inputs"])
    trace = tracer.trace
    assert list(trace) == optimizer.tensor_paths
    kernel = trace[optimizer.tensor_paths[0]]
    assert set(kernel) == {"steps", "inputs", "learning_rate", "beta_1", "beta_2", "epsilon"}
    np.testing.assert_array_equal(kernel["learning_rate"], tracer.hyperparameters[:, 0, 0])

    with open(csv_path) as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == len(steps) * 4
    assert rows[0]["tensor"] == optimizer.tensor_paths[0] and rows[0]["step"] == "1"
    np.testing.assert_allclose(
        float(rows[-1]["epsilon"]), tracer.hyperparameters[-1, -1, 3], rtol=1e-6
    )
    events = [name for name in os.listdir(log_dir) if "tfevents" in name]
    assert events and os.path.getsize(log_dir / events[0]) > 1000

    import matplotlib

    def no_switch(*args, **kwargs):
        raise AssertionError("the library must leave pyplot's backend alone")

    monkeypatch.setattr(matplotlib, "use", no_switch)
    figure = tracer.plot(str(tmp_path / "trace.png"))
    with open(figure, "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"


def test_no_duplicate_records_with_gradient_accumulation(data):
    tracer = ModulationTracer(update_freq=1)
    optimizer = NmSGD(agent=Genome.random(13, 4, 1, rng=0), gradient_accumulation_steps=4)
    fit(data, optimizer, tracer)
    np.testing.assert_array_equal(tracer.steps, np.arange(1, 9))
    assert tracer.hyperparameters.shape == (8, 4, 2)


def test_refuses_other_optimizers_and_bad_arguments(data):
    for update_freq in (0, 2.0, True, "step"):
        with pytest.raises(
            ValueError, match="update_freq must be 'batch', 'epoch' or a positive integer"
        ):
            ModulationTracer(update_freq=update_freq)
    with pytest.raises(ValueError, match="neuromodulated optimizer"):
        fit(data, keras.optimizers.Adam(), ModulationTracer())
    with pytest.raises(ValueError, match="Nothing was recorded"):
        ModulationTracer().plot("unused.png")


def test_config_round_trip():
    tracer = ModulationTracer(update_freq=5, csv_path="a.csv", log_dir="logs")
    again = ModulationTracer(**tracer.get_config())
    assert again.get_config() == tracer.get_config()


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_traces_through_the_loss_scale_optimizer_of_mixed_precision(data, mixed_float16):
    tracer = ModulationTracer(update_freq=1)
    optimizer = NmAdam(agent=agent())
    model = fit(data, optimizer, tracer)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.optimizer.inner_optimizer is optimizer
    updates = optimizer.modulation()["updates"]
    assert updates <= int(ops.convert_to_numpy(optimizer.iterations))
    assert updates > 0  # steps whose scaled gradients overflowed are skipped
    np.testing.assert_array_equal(tracer.steps, np.arange(1, updates + 1))
    assert tracer.tensor_paths == optimizer.tensor_paths
    assert np.all(np.isfinite(tracer.hyperparameters))
    np.testing.assert_array_equal(
        tracer.hyperparameters[-1], optimizer.modulation()["hyperparameters"]
    )


@pytest.mark.slow
def test_a_second_fit_appends_and_another_model_starts_a_fresh_record(data, tmp_path):
    csv_path = tmp_path / "trace.csv"
    tracer = ModulationTracer(update_freq=1, csv_path=str(csv_path))
    first = fit(data, NmAdam(agent=agent()), tracer)
    fit(data, None, tracer, model=first)  # the same model goes on training
    np.testing.assert_array_equal(tracer.steps, np.arange(1, 65))
    assert tracer.inputs.shape == (64, 4, 13)
    with open(csv_path) as stream:  # appended to the first fit's rows
        assert [int(row["step"]) for row in csv.DictReader(stream)] == list(
            np.repeat(np.arange(1, 65), 4)
        )

    # another model of the same layout: a fresh record, not a mix of both
    optimizer = NmAdam(agent=agent())
    second = fit(data, optimizer, tracer)
    np.testing.assert_array_equal(tracer.steps, np.arange(1, 33))
    np.testing.assert_array_equal(
        tracer.hyperparameters[-1], optimizer.modulation()["hyperparameters"]
    )

    # the same model compiled with another optimizer, of another base: fresh
    sgd = NmSGD(agent=Genome.random(13, 4, 1, rng=1))
    fit(data, sgd, tracer, model=second)
    assert tracer.hyperparameter_names == ["learning_rate", "momentum"]
    assert tracer.hyperparameters.shape == (32, 4, 2)

    # another layout (three layers): its own tensors only
    optimizer = NmAdam(agent=agent())
    fit(data, optimizer, tracer, hidden=(8, 8))
    assert tracer.tensor_paths == optimizer.tensor_paths and len(optimizer.tensor_paths) == 6
    assert tracer.inputs.shape == (32, 6, 13) and tracer.hyperparameters.shape == (32, 6, 4)
    assert list(tracer.trace) == optimizer.tensor_paths
    with open(csv_path) as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 32 * 6 and {row["tensor"] for row in rows} == set(optimizer.tensor_paths)


def test_an_unwritable_csv_path_stops_fit_before_training(data, tmp_path):
    model = models.build("mlp", (8, 8, 1), 10, hidden=(16,), seed=0)
    model.compile(optimizer=NmAdam(agent=agent()), loss="sparse_categorical_crossentropy")
    folder = tmp_path / "traces"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        fit(data, None, ModulationTracer(csv_path=str(folder)), model=model)
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("a file, not a folder")
    with pytest.raises(OSError, match="cannot write its csv_path"):
        fit(data, None, ModulationTracer(csv_path=str(not_a_folder / "trace.csv")), model=model)
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 0
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "traces"]
    assert os.listdir(folder) == []


@pytest.mark.slow
def test_a_failed_csv_write_leaves_no_temporary(data, tmp_path, monkeypatch):
    tracer = ModulationTracer(update_freq=8)
    fit(data, NmAdam(agent=agent()), tracer)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        tracer.to_csv(str(tmp_path))
    assert os.listdir(tmp_path) == []

    def failing_replace(source, target):
        raise OSError("the disk went away")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk went away"):
        tracer.to_csv(str(tmp_path / "trace.csv"))
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    assert tracer.to_csv(str(tmp_path / "trace.csv")) == str(tmp_path / "trace.csv")
    assert os.listdir(tmp_path) == ["trace.csv"]


class _ReadsTheCsvFile(keras.callbacks.Callback):
    """Reads the tracer's CSV file while training goes on, and stops early."""

    def __init__(self, path, stop_at_batch):
        super().__init__()
        self.path, self.stop_at_batch, self.rows_after_epoch = path, stop_at_batch, []

    def on_epoch_end(self, epoch, logs=None):
        with open(self.path) as stream:
            self.rows_after_epoch.append(len(list(csv.DictReader(stream))))

    def on_train_batch_end(self, batch, logs=None):
        if self.rows_after_epoch and batch == self.stop_at_batch:
            self.model.stop_training = True


class _SpyWriter:
    def __init__(self, writer):
        self.writer, self.closed = writer, False

    def as_default(self):
        return self.writer.as_default()

    def flush(self):
        self.writer.flush()

    def close(self):
        self.closed = True
        self.writer.close()


def _open_files():
    folder = "/proc/self/fd"
    names = set()
    for fd in os.listdir(folder):
        try:
            names.add(os.readlink(os.path.join(folder, fd)))
        except OSError:
            pass
    return names


@pytest.mark.slow
def test_csv_rows_stream_as_recorded_and_the_files_close_at_train_end(data, tmp_path, monkeypatch):
    import tensorflow as tf

    writers = []
    create = tf.summary.create_file_writer
    monkeypatch.setattr(
        tf.summary,
        "create_file_writer",
        lambda *a, **k: writers.append(_SpyWriter(create(*a, **k))) or writers[-1],
    )
    csv_path = tmp_path / "trace.csv"
    tracer = ModulationTracer(update_freq=2, csv_path=str(csv_path), log_dir=str(tmp_path / "tb"))
    reader = _ReadsTheCsvFile(str(csv_path), stop_at_batch=4)
    model = models.build("mlp", (8, 8, 1), 10, hidden=(16,), seed=0)
    model.compile(optimizer=NmAdam(agent=agent()), loss="sparse_categorical_crossentropy")
    x, y = data
    model.fit(
        x[:100],
        y[:100],
        epochs=3,
        batch_size=10,
        shuffle=False,
        verbose=0,
        callbacks=[tracer, reader],
    )
    # 10 steps in the first epoch, recorded every other step: 5 records of 4
    # tensors, in the file while training goes on; then the second epoch,
    # stopped after its batch 4 (steps 11 to 15): 3 more records
    assert reader.rows_after_epoch == [5 * 4, 8 * 4]
    np.testing.assert_array_equal(tracer.steps, np.arange(1, 16, 2))
    with open(csv_path) as stream:
        assert len(list(csv.DictReader(stream))) == 8 * 4
    # the TensorBoard writer was closed at the end of training
    assert len(writers) == 1 and writers[0].closed
    if os.path.isdir("/proc/self/fd"):
        assert str(csv_path) not in _open_files()
    # no temporary file is left next to the CSV file
    assert sorted(os.listdir(tmp_path)) == ["tb", "trace.csv"]


def test_update_freq_takes_keras_s_values(data):
    with pytest.raises(TypeError, match="every"):
        ModulationTracer(every=4)  # the former name is gone
    four = ModulationTracer(update_freq=4)
    assert four.update_freq == 4 and four.get_config()["update_freq"] == 4
    assert ModulationTracer(update_freq="batch").update_freq == 1
    tracer = ModulationTracer(update_freq="epoch")
    fit(
        (data[0][:100], data[1][:100]),
        NmSGD(agent=Genome.random(13, 4, 1, rng=0)),
        tracer,
        epochs=2,
    )
    np.testing.assert_array_equal(tracer.steps, [10, 20])
    assert ModulationTracer(**tracer.get_config()).update_freq == "epoch"


def test_a_fit_after_the_csv_file_was_removed_writes_the_whole_record(data, tmp_path):
    csv_path = tmp_path / "trace.csv"
    tracer = ModulationTracer(update_freq=2, csv_path=str(csv_path))
    small = (data[0][:100], data[1][:100])
    model = fit(small, NmAdam(agent=agent()), tracer)
    csv_path.unlink()
    fit(small, None, tracer, model=model)
    with open(csv_path) as stream:
        steps = [int(row["step"]) for row in csv.DictReader(stream)]
    assert steps == list(np.repeat(tracer.steps, 4)) and len(tracer.steps) == 10
