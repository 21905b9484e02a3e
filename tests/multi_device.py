"""Train on two devices and on one, and print how far apart they end.

Run as a script in a fresh process (the device count must be set before the
backend starts): `python tests/multi_device.py tensorflow` or `... jax`, each
time for Nm-Adam and Nm-SGD.
TensorFlow splits the CPU into two logical devices under
`tf.distribute.MirroredStrategy`; JAX gets two host devices
(`--xla_force_host_platform_device_count=2`) under
`keras.distribution.DataParallel`. The same model, initial weights, batches
and a random agent with wide ranges are trained both ways at one global batch
size. The last line printed is JSON, for each optimizer ("adam", "sgd"):

* `weights`: the largest absolute difference of any weight,
* `optimizer`: the same for the optimizer's variables (AGRN state included),
* `replicas`: the largest difference between replicas of any optimizer or
  model variable (TensorFlow; 0 for JAX, whose variables are one array),
* `replica_count`: the number of devices the distributed run used.
"""

import json
import os
import sys

BACKEND = sys.argv[1] if len(sys.argv) > 1 else "tensorflow"
os.environ["KERAS_BACKEND"] = BACKEND
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"

import numpy as np  # noqa: E402

if BACKEND == "tensorflow":
    import tensorflow as tf  # noqa: E402

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from keras_neuromod import Genome  # noqa: E402
from keras_neuromod import NmAdam  # noqa: E402
from keras_neuromod import NmSGD  # noqa: E402

STEPS, BATCH = 8, 16


def build_model():
    keras.utils.set_random_seed(3)
    tokens = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(20, 6)(tokens)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="tanh")(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(tokens, outputs)


def optimizer(name):
    if name == "sgd":
        agent = Genome.random(13, 4, n_regulatory=4, rng=11)
        return NmSGD(agent=agent, ranges={"learning_rate": (1e-3, 0.5), "momentum": (0.0, 0.9)})
    agent = Genome.random(13, 8, n_regulatory=4, rng=7)
    return NmAdam(agent=agent, ranges={"learning_rate": (1e-4, 0.1)}, weight_decay=0.01)


def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, size=(STEPS * BATCH, 4)).astype("int32")
    y = rng.integers(0, 3, size=(STEPS * BATCH,)).astype("int32")
    return x, y


def train(name, weights):
    model = build_model()
    model.set_weights(weights)
    model.compile(
        optimizer=optimizer(name),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = data()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return model


def values(variables):
    return [keras.ops.convert_to_numpy(v.value) for v in variables]


def largest_difference(first, second):
    return max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(first, second))


def measure(name, initial):
    """How far the two-device training of optimizer `name` ends from the one-device one."""
    single = train(name, initial)
    replicas = 0.0
    if BACKEND == "tensorflow":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            distributed = train(name, initial)
        count = strategy.num_replicas_in_sync
        for variable in distributed.optimizer.variables + distributed.weights:
            local = [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]
            replicas = max(replicas, largest_difference(local[:1] * len(local), local))
    else:
        import jax

        devices = jax.devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            distributed = train(name, initial)
        finally:
            keras.distribution.set_distribution(None)
        count = len({d for v in distributed.weights for d in v.value.sharding.device_set})
    return {
        "weights": largest_difference(values(single.weights), values(distributed.weights)),
        "optimizer": largest_difference(
            values(single.optimizer.variables), values(distributed.optimizer.variables)
        ),
        "replicas": replicas,
        "replica_count": count,
    }


def main():
    initial = build_model().get_weights()
    print(json.dumps({name: measure(name, initial) for name in ("adam", "sgd")}))


if __name__ == "__main__":
    main()
