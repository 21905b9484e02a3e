"""Small trainings the tests share (importable from the tests and their subprocess scripts)."""

import keras
import numpy as np


def train_weights(optimizer, steps=12):
    """A small regression model's weights after `steps` batches of `fit` with `optimizer`.

    The data, the model and its starting weights are the same at every call, so
    that two optimizers that should agree give the same weights.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * 8, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 2)) + 0.1 * rng.normal(size=(steps * 8, 2))).astype("float32")
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)]
    )
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()
