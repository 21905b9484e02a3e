"""ModulationTracer: what it records, the files it writes, its figure."""

import csv
import os

import numpy as np
import pytest
import keras
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


def fit(data, optimizer, tracer, epochs=1):
    model = models.build("mlp", (8, 8, 1), 10, hidden=(16,), seed=0)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(*data, epochs=epochs, batch_size=10, shuffle=False, verbose=0, callbacks=[tracer])
    return model


def test_records_every_n_steps_and_writes_files(data, tmp_path):
    csv_path = tmp_path / "trace.csv"
    log_dir = tmp_path / "tb"
    tracer = ModulationTracer(every=3, csv_path=str(csv_path), log_dir=str(log_dir))
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
        tracer.hyperparameters[-1], ops.convert_to_numpy(optimizer._grn_hparams)
    )
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

    figure = tracer.plot(str(tmp_path / "trace.png"))
    with open(figure, "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"


def test_no_duplicate_records_with_gradient_accumulation(data):
    tracer = ModulationTracer(every=1)
    optimizer = NmSGD(agent=Genome.random(13, 4, 1, rng=0), gradient_accumulation_steps=4)
    fit(data, optimizer, tracer)
    np.testing.assert_array_equal(tracer.steps, np.arange(1, 9))
    assert tracer.hyperparameters.shape == (8, 4, 2)


def test_refuses_other_optimizers_and_bad_arguments(data):
    with pytest.raises(ValueError, match="every"):
        ModulationTracer(every=0)
    with pytest.raises(ValueError, match="neuromodulated optimizer"):
        fit(data, keras.optimizers.Adam(), ModulationTracer())
    with pytest.raises(ValueError, match="Nothing was recorded"):
        ModulationTracer().plot("unused.png")


def test_config_round_trip():
    tracer = ModulationTracer(every=5, csv_path="a.csv", log_dir="logs")
    again = ModulationTracer(**tracer.get_config())
    assert again.get_config() == tracer.get_config()
