"""Callbacks that show what the neuromodulation did.

`ModulationTracer` records, for every modulated tensor, the 13 AGRN inputs and
the hyperparameters its AGRN chose, every `every` training steps, and draws the
paper's figures 4 and 5 (inputs and hyperparameters per layer over iterations).
"""

import csv
import os
import weakref

import numpy as np
import keras
from keras import ops

from keras_neuromod.optimizers.base import INPUT_NAMES
from keras_neuromod.optimizers.base import NeuromodulatedOptimizer

__all__ = ["ModulationTracer"]


@keras.saving.register_keras_serializable(package="keras_neuromod")
class ModulationTracer(keras.callbacks.Callback):
    """Record the AGRN inputs and the chosen hyperparameters of every tensor.

    The optimizer keeps this step's inputs and hyperparameters of all tensors
    in two small variables; the tracer reads both in one go every `every`
    steps (two device reads per recorded step, whatever the model's size), and
    keeps them in memory. Recording every step of a long run is cheap in
    memory (13 + 4 floats per tensor per step) but costs a device sync per
    step: raise `every` for long runs.

    Args:
        every: record every `every` training batches (1 records all).
        log_dir: if given, write TensorBoard scalars
            (`<tensor path>/<hyperparameter>`) at the end of each epoch.
            Needs TensorFlow and TensorBoard installed (`pip install
            tensorboard`); the check comes at the start of training.
        csv_path: if given, write one CSV row per recorded step and tensor
            (step, tensor, the 13 inputs, the hyperparameters), rewritten at
            the end of each epoch. Checked at the start of training: a folder,
            or a path that cannot be written, stops `fit` before any step.

    One record per model: `fit` again on the same model (and optimizer)
    appends to the record, with the optimizer's steps going on, while `fit` on
    another model, or on the same model compiled with another optimizer,
    starts a fresh record (`csv_path` is then rewritten with the new record
    only, as `CSVLogger` rewrites its file). `reset()` forgets the record by
    hand.

    A model whose optimizer Keras wrapped (a `LossScaleOptimizer` under the
    `"mixed_float16"` policy, or any wrapper with an `inner_optimizer`) is
    traced through the wrapped optimizer.

    Attributes:
        steps: numpy array [S] of the optimizer steps recorded.
        inputs: numpy array [S, tensors, 13].
        hyperparameters: numpy array [S, tensors, n_hyperparameters].
        trace: dict mapping each tensor path to a dict with `"steps"`,
            `"inputs"` [S, 13] and one array [S] per hyperparameter name.

    Example:

    ```python
    tracer = ModulationTracer(every=10, csv_path="trace.csv")
    model.compile(optimizer=NmAdam(agent=agent), loss=...)
    model.fit(x, y, callbacks=[tracer])
    tracer.plot("modulation.png")
    ```
    """

    def __init__(self, every=1, log_dir=None, csv_path=None):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}.")
        self.every = every
        self.log_dir = log_dir
        self.csv_path = csv_path
        self.reset()

    def reset(self):
        """Forget everything recorded so far."""
        self._steps, self._inputs, self._hparams = [], [], []
        self._batches = 0
        self._written_to_tensorboard = 0
        if getattr(self, "_writer", None) is not None:
            self._writer.close()
        self._writer = None
        self._traced = None  # weak references to the traced model and optimizer
        self.tensor_paths = []
        self.hyperparameter_names = []

    def get_config(self):
        return {"every": self.every, "log_dir": self.log_dir, "csv_path": self.csv_path}

    def _optimizer(self):
        optimizer = self.model.optimizer
        # Keras wraps the optimizer under mixed precision (LossScaleOptimizer)
        while not isinstance(optimizer, NeuromodulatedOptimizer) and hasattr(
            optimizer, "inner_optimizer"
        ):
            optimizer = optimizer.inner_optimizer
        if not isinstance(optimizer, NeuromodulatedOptimizer):
            raise ValueError(
                "ModulationTracer needs a model compiled with a neuromodulated "
                f"optimizer (NmSGD or NmAdam); this one uses {type(optimizer).__name__}."
            )
        return optimizer

    def _is_traced(self, model, optimizer):
        if self._traced is None:
            return False
        traced_model, traced_optimizer = (reference() for reference in self._traced)
        return traced_model is model and traced_optimizer is optimizer

    def on_train_begin(self, logs=None):
        optimizer = self._optimizer()
        if not self._is_traced(self.model, optimizer):
            self.reset()
            self._traced = (weakref.ref(self.model), weakref.ref(optimizer))
        if self.csv_path:
            _check_writable(self.csv_path)
        if self.log_dir:
            try:
                import tensorboard  # noqa: F401  (tf.summary needs it)
            except ImportError:
                raise ImportError(
                    "ModulationTracer(log_dir=...) writes TensorBoard scalars and "
                    "needs TensorBoard: `pip install tensorboard`."
                ) from None

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if (self._batches - 1) % self.every:
            return
        # Reading through self.model syncs JAX's state back to the variables.
        optimizer = self._optimizer()
        if not optimizer.built:
            return
        if not self.tensor_paths:
            self.tensor_paths = list(optimizer.tensor_paths)
            self.hyperparameter_names = list(optimizer.HYPERPARAMETERS)
        updates = int(ops.convert_to_numpy(optimizer._grn_updates))
        if updates == 0 or (self._steps and self._steps[-1] == updates):
            return  # no AGRN update since the last record (gradient accumulation)
        self._steps.append(updates)
        self._inputs.append(ops.convert_to_numpy(optimizer._grn_inputs))
        self._hparams.append(ops.convert_to_numpy(optimizer._grn_hparams))

    def on_epoch_end(self, epoch, logs=None):
        if self.csv_path:
            self.to_csv(self.csv_path)
        if self.log_dir:
            self._write_tensorboard()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    # -- the recorded data -------------------------------------------------

    @property
    def steps(self):
        return np.asarray(self._steps, np.int64)

    @property
    def inputs(self):
        if not self._inputs:
            return np.zeros((0, len(self.tensor_paths), 2 * len(INPUT_NAMES) + 1), np.float32)
        return np.stack(self._inputs)

    @property
    def hyperparameters(self):
        if not self._hparams:
            return np.zeros((0, len(self.tensor_paths), len(self.hyperparameter_names)), np.float32)
        return np.stack(self._hparams)

    @property
    def trace(self):
        inputs, hparams, steps = self.inputs, self.hyperparameters, self.steps
        result = {}
        for t, path in enumerate(self.tensor_paths):
            entry = {"steps": steps, "inputs": inputs[:, t]}
            for h, name in enumerate(self.hyperparameter_names):
                entry[name] = hparams[:, t, h]
            result[path] = entry
        return result

    def to_csv(self, path):
        """Write the trace as CSV: one row per recorded step and tensor."""
        input_columns = [f"input_{name}" for name in INPUT_NAMES]
        input_columns += [f"input_next_{name}" for name in INPUT_NAMES] + ["input_constant"]
        temporary = _check_writable(path)
        inputs, hparams = self.inputs, self.hyperparameters
        try:
            with open(temporary, "w", newline="") as stream:
                writer = csv.writer(stream)
                writer.writerow(["step", "tensor"] + input_columns + self.hyperparameter_names)
                for s, step in enumerate(self.steps):
                    for t, tensor in enumerate(self.tensor_paths):
                        writer.writerow(
                            [int(step), tensor]
                            + [f"{v:.7g}" for v in inputs[s, t]]
                            + [f"{v:.7g}" for v in hparams[s, t]]
                        )
            os.replace(temporary, path)
        except BaseException:
            _remove(temporary)
            raise
        return path

    def _write_tensorboard(self):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        start = self._written_to_tensorboard
        steps, hparams = self.steps[start:], self.hyperparameters[start:]
        inputs = self.inputs[start:]
        with self._writer.as_default():
            for s, step in enumerate(steps):
                for t, tensor in enumerate(self.tensor_paths):
                    for h, name in enumerate(self.hyperparameter_names):
                        tf.summary.scalar(f"{tensor}/{name}", float(hparams[s, t, h]), step=int(step))
                    for i, name in enumerate(INPUT_NAMES):
                        tf.summary.scalar(f"{tensor}/input_{name}", float(inputs[s, t, i]), step=int(step))
        self._writer.flush()
        self._written_to_tensorboard = len(self._steps)

    # -- the figure --------------------------------------------------------

    def plot(self, path, title=None):
        """Draw the inputs and the hyperparameters of every tensor over steps.

        One panel per input (the six of the tensor itself; the next six repeat
        the following layer's) and one per hyperparameter, one line per tensor,
        as the paper's figures 4 and 5. Learning rate and epsilon use a log
        axis. Saved as a PNG at `path`; returns the path.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not self._steps:
            raise ValueError("Nothing was recorded: train with this callback first.")
        names = [f"input: {n.replace('_', ' ')}" for n in INPUT_NAMES] + list(self.hyperparameter_names)
        columns = 3
        rows = -(-len(names) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False)
        steps, inputs, hparams = self.steps, self.inputs, self.hyperparameters
        colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(self.tensor_paths), 1)))
        for k, name in enumerate(names):
            axis = axes[k // columns][k % columns]
            for t, tensor in enumerate(self.tensor_paths):
                values = inputs[:, t, k] if k < len(INPUT_NAMES) else hparams[:, t, k - len(INPUT_NAMES)]
                style = "-" if "kernel" in tensor.rsplit("/", 1)[-1] else "--"
                axis.plot(steps, values, style, color=colours[t], lw=1.2, label=tensor)
            if name in ("learning_rate", "epsilon"):
                axis.set_yscale("log")
            axis.set_title(name.replace("_", " "))
            axis.set_xlabel("iteration")
            axis.grid(alpha=0.3)
        for k in range(len(names), rows * columns):
            axes[k // columns][k % columns].axis("off")
        handles, labels = axes[0][0].get_legend_handles_labels()
        legend = dict(fontsize=8, title="tensor (solid: kernel, dashed: bias)")
        if len(names) < rows * columns:  # an empty panel holds the legend
            spare = axes[-1][len(names) % columns]
            spare.legend(handles, labels, loc="center", ncol=2, **legend)
            figure.suptitle(title or "Neuromodulation per tensor")
            figure.tight_layout(rect=(0, 0, 1, 0.97))
        else:
            figure.legend(handles, labels, loc="lower center", ncol=4, **legend)
            figure.suptitle(title or "Neuromodulation per tensor")
            legend_rows = -(-len(labels) // 4)
            figure.tight_layout(rect=(0, 0.03 + 0.025 * legend_rows, 1, 0.97))
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _check_writable(path):
    """Check that the CSV file `path` can be written; return its temporary's path.

    Creates the missing folders, and tries the temporary file the CSV is
    written to before it replaces `path` (removed again).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"ModulationTracer's csv_path {path!r} is a folder: give a file path, "
            f"such as {os.path.join(path, 'trace.csv')!r}."
        )
    temporary = f"{path}.tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(temporary, "w"):
            pass
    except OSError as error:
        raise OSError(
            f"ModulationTracer cannot write its csv_path {path!r}: {error}"
        ) from error
    finally:
        _remove(temporary)
    return temporary
