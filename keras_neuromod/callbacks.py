"""Callbacks that show what the neuromodulation did.

`ModulationTracer` records, for every modulated tensor, the AGRN inputs and
the hyperparameters its AGRN chose, every `update_freq` training steps, and
draws the paper's figures 4 and 5 (inputs and hyperparameters per layer over
iterations).
"""

import csv
import os
import weakref

import keras
import numpy as np

from keras_neuromod import _fields
from keras_neuromod.io import atomic_open
from keras_neuromod.optimizers.base import NeuromodulatedOptimizer

__all__ = ["ModulationTracer", "TrainingHorizon"]


def _neuromodulated(model, who):
    """The model's neuromodulated optimizer (unwrapping a LossScaleOptimizer)."""
    optimizer = model.optimizer
    # Keras wraps the optimizer under mixed precision (LossScaleOptimizer)
    while not isinstance(optimizer, NeuromodulatedOptimizer) and hasattr(
        optimizer, "inner_optimizer"
    ):
        optimizer = optimizer.inner_optimizer
    if not isinstance(optimizer, NeuromodulatedOptimizer):
        raise ValueError(
            f"{who} needs a model compiled with a neuromodulated "
            f"optimizer (NmSGD or NmAdam); this one uses {type(optimizer).__name__}."
        )
    return optimizer


@keras.saving.register_keras_serializable(package="keras_neuromod")
class TrainingHorizon(keras.callbacks.Callback):
    """Tell the agent how long `fit` will train, so that it can read its progress.

    As `fit`'s first epoch begins, the optimizer's horizon is set to the
    updates the training will have made at its end (those made so far, and
    `(epochs - initial_epoch) * steps` of `fit`'s parameters); at the end of
    `fit` it is the optimizer's own `horizon` again (None: unknown). Agents of
    the ``"sensing"`` input set read `t / horizon` and a flag that the horizon
    is known; without this callback (or the optimizer's `horizon=`, or a
    horizon set by hand with `set_horizon`) both read 0. Agents of other input
    sets ignore it.

    >>> model.fit(x, y, epochs=10, callbacks=[TrainingHorizon()])
    """

    def on_train_begin(self, logs=None):
        _neuromodulated(self.model, "TrainingHorizon")  # refused before any step
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        # the first epoch's index is fit's initial_epoch, which on_train_begin cannot read
        if not getattr(self, "_first_epoch", False):
            return
        self._first_epoch = False
        optimizer = _neuromodulated(self.model, "TrainingHorizon")
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        if not epochs or not steps:
            optimizer.set_horizon(None)  # an unknown length (a generator without steps)
            return
        every = optimizer.gradient_accumulation_steps or 1  # batches per update
        remaining = max(0, int(epochs) - int(epoch))
        optimizer.set_horizon(optimizer.updates + remaining * int(steps) // every)

    def on_train_end(self, logs=None):
        optimizer = _neuromodulated(self.model, "TrainingHorizon")
        optimizer.set_horizon(optimizer.horizon)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="keras_neuromod")
class ModulationTracer(keras.callbacks.Callback):
    """Record the AGRN inputs and the chosen hyperparameters of every tensor.

    The tracer reads the optimizer's `modulation()` (this step's inputs and
    hyperparameters of all tensors, whatever the model's size) every
    `update_freq` steps, and keeps them in memory. Recording every step of a
    long run is cheap in memory (inputs and hyperparameters: at most 26 floats per
    tensor per step) but costs
    a device sync per step: raise `update_freq` for long runs.

    Args:
        update_freq: `"batch"` or an integer N to record every N training
            batches (1 records all), or `"epoch"` to record at the end of
            each epoch.
        log_dir: if given, write TensorBoard scalars
            (`<tensor path>/<hyperparameter>`) at the end of each epoch, and
            close the writer at the end of training. Needs TensorFlow and
            TensorBoard installed (`pip install tensorboard`); the check comes
            at the start of training.
        csv_path: if given, stream the record to this CSV file, as `CSVLogger`
            does: opened at the start of training (a folder, or a path that
            cannot be written, stops `fit` before any step), one row per
            tensor appended and flushed as each step is recorded (step,
            tensor, the input set's inputs, the hyperparameters), closed at
            the end of training.

    One record per model: `fit` again on the same model (and optimizer)
    appends to the record, and to `csv_path`, with the optimizer's steps going
    on, while `fit` on another model, or on the same model compiled with
    another optimizer, starts a fresh record (`csv_path` is then rewritten
    with the new record only, as `CSVLogger` rewrites its file). `reset()`
    forgets the record by hand.

    A model whose optimizer Keras wrapped (a `LossScaleOptimizer` under the
    `"mixed_float16"` policy, or any wrapper with an `inner_optimizer`) is
    traced through the wrapped optimizer.

    Attributes:
        steps: numpy array [S] of the optimizer steps recorded.
        inputs: numpy array [S, tensors, inputs]: the optimizer's input set
            (13 inputs for `"paper"`).
        hyperparameters: numpy array [S, tensors, n_hyperparameters].
        trace: dict mapping each tensor path to a dict with `"steps"`,
            `"inputs"` [S, inputs] and one array [S] per hyperparameter name.

    Example:

    ```python
    tracer = ModulationTracer(update_freq=10, csv_path="trace.csv")
    model.compile(optimizer=NmAdam(agent=agent), loss=...)
    model.fit(x, y, callbacks=[tracer])
    tracer.plot("modulation.png")
    ```
    """

    def __init__(self, update_freq=1, log_dir=None, csv_path=None):
        super().__init__()
        if isinstance(update_freq, str) and update_freq == "batch":
            update_freq = 1
        if not (isinstance(update_freq, str) and update_freq == "epoch"):
            if not _fields.is_integer(update_freq) or update_freq < 1:
                raise ValueError(
                    "update_freq must be 'batch', 'epoch' or a positive integer, "
                    f"got {update_freq!r:.80}."
                )
            update_freq = int(update_freq)
        self.update_freq = update_freq
        self.log_dir = log_dir
        self.csv_path = csv_path
        self._writer = None
        self._csv_file = None
        self.reset()

    def reset(self):
        """Forget everything recorded so far (and empty `csv_path` if it is open)."""
        self._steps, self._inputs, self._hparams = [], [], []
        self._batches = 0
        self._written_to_tensorboard = 0
        self._close_tensorboard()
        if self._csv_file is not None:
            self._csv_file.seek(0)
            self._csv_file.truncate()
        self._csv_written = None  # records in the open CSV file; None: not even the header
        self._csv_closed = None  # (path, records) of the CSV file the last fit closed
        self._traced = None  # weak references to the traced model and optimizer
        self.tensor_paths = []
        self.hyperparameter_names = []
        self.input_names = []

    def get_config(self):
        return {"update_freq": self.update_freq, "log_dir": self.log_dir, "csv_path": self.csv_path}

    def _optimizer(self):
        return _neuromodulated(self.model, "ModulationTracer")

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
        if self.log_dir:
            try:
                import tensorboard  # noqa: F401  (tf.summary needs it)
            except ImportError:
                raise ImportError(
                    "ModulationTracer(log_dir=...) writes TensorBoard scalars and "
                    "needs TensorBoard: `pip install tensorboard`."
                ) from None
        if self.csv_path:
            self._open_csv()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            return
        self._batches += 1
        if (self._batches - 1) % self.update_freq == 0:
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._record()
        if self.log_dir:
            self._write_tensorboard()

    def on_train_end(self, logs=None):
        self._close_csv()
        self._close_tensorboard()

    def _record(self):
        # Reading through self.model syncs JAX's state back to the variables.
        optimizer = self._optimizer()
        modulation = optimizer.modulation()
        if modulation is None:
            return
        updates = modulation["updates"]
        if updates == 0 or (self._steps and self._steps[-1] == updates):
            return  # no AGRN update since the last record (gradient accumulation)
        if not self.tensor_paths:
            self.tensor_paths = list(optimizer.tensor_paths)
            self.hyperparameter_names = list(optimizer.HYPERPARAMETERS)
            self.input_names = list(optimizer.input_names)
        self._steps.append(updates)
        self._inputs.append(modulation["inputs"])
        self._hparams.append(modulation["hyperparameters"])
        self._stream_csv()

    # -- the CSV file --------------------------------------------------------

    def _open_csv(self):
        """Open `csv_path` for this fit: appending to a continued record, else rewriting it."""
        path = _refuse_folder(self.csv_path)
        self._close_csv()  # (left open by a fit that ended without on_train_end)
        # the last fit wrote the whole record to this file: go on where it ended
        append = self._csv_closed == (os.path.abspath(path), len(self._steps)) and os.path.isfile(
            path
        )
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._csv_file = open(path, "a" if append else "w", newline="")
        except OSError as error:
            raise OSError(
                f"ModulationTracer cannot write its csv_path {path!r}: {error}"
            ) from error
        self._csv_writer = csv.writer(self._csv_file)
        self._csv_written = len(self._steps) if append else None
        self._stream_csv()  # the record so far, when the file was rewritten

    def _close_csv(self):
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_closed = (os.path.abspath(self._csv_file.name), self._csv_written)
            self._csv_file = None

    def _stream_csv(self):
        if self._csv_file is None or not self._steps:
            return
        if self._csv_written is None:
            self._csv_writer.writerow(self._csv_header())
            self._csv_written = 0
        self._csv_writer.writerows(self._csv_rows(self._csv_written))
        self._csv_written = len(self._steps)
        self._csv_file.flush()

    def _csv_header(self):
        columns = [f"input_{name}" for name in self.input_names]
        return ["step", "tensor"] + columns + list(self.hyperparameter_names)

    def _csv_rows(self, start=0):
        """One row per tensor of each record from `start` on."""
        for step, inputs, hparams in zip(
            self._steps[start:], self._inputs[start:], self._hparams[start:]
        ):
            for t, tensor in enumerate(self.tensor_paths):
                yield (
                    [int(step), tensor]
                    + [f"{v:.7g}" for v in inputs[t]]
                    + [f"{v:.7g}" for v in hparams[t]]
                )

    def to_csv(self, path):
        """Write the whole record as CSV, atomically: one row per recorded step and tensor.

        The file is written through `io.atomic_open`: a failed write leaves
        neither a partial file nor a temporary one.
        """
        path = _refuse_folder(path)
        with atomic_open(path, newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(self._csv_header())
            writer.writerows(self._csv_rows())
        return path

    # -- TensorBoard -----------------------------------------------------------

    def _write_tensorboard(self):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        start = self._written_to_tensorboard
        with self._writer.as_default():
            for step, inputs, hparams in zip(
                self._steps[start:], self._inputs[start:], self._hparams[start:]
            ):
                for t, tensor in enumerate(self.tensor_paths):
                    for h, name in enumerate(self.hyperparameter_names):
                        tf.summary.scalar(f"{tensor}/{name}", float(hparams[t, h]), step=int(step))
                    for i, name in enumerate(self.input_names):
                        tf.summary.scalar(
                            f"{tensor}/input_{name}", float(inputs[t, i]), step=int(step)
                        )
        self._writer.flush()
        self._written_to_tensorboard = len(self._steps)

    def _close_tensorboard(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- the recorded data -------------------------------------------------

    @property
    def steps(self):
        return np.asarray(self._steps, np.int64)

    @property
    def inputs(self):
        if not self._inputs:
            return np.zeros((0, len(self.tensor_paths), len(self.input_names)), np.float32)
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

    # -- the figure --------------------------------------------------------

    def plot(self, path, title=None):
        """Draw the inputs and the hyperparameters of every tensor over steps.

        One panel per input that varies (for the core paper's set, the six of
        the tensor itself; the next six repeat the following layer's) and one
        per hyperparameter, one line per tensor,
        as the paper's figures 4 and 5. Learning rate and epsilon use a log
        axis. Saved as a PNG at `path`; returns the path. The figure is drawn
        with matplotlib's object API (`matplotlib.figure.Figure`): pyplot's
        state and its backend (a notebook's) are left alone.
        """
        from matplotlib.figure import Figure

        if not self._steps:
            raise ValueError("Nothing was recorded: train with this callback first.")
        # every input that varies (the core paper's set repeats the next layer's six)
        shown = [
            i
            for i, n in enumerate(self.input_names)
            if n != "constant" and not n.startswith("next_")
        ]
        names = [f"input: {self.input_names[i].replace('_', ' ')}" for i in shown]
        names += list(self.hyperparameter_names)
        columns = 3
        rows = -(-len(names) // columns)
        figure = Figure(figsize=(5 * columns, 3.2 * rows))
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        for k, name in enumerate(names):
            column = shown[k] if k < len(shown) else None
            self._draw_panel(axes[k], name, column, k - len(shown))
        for axis in axes[len(names) :]:
            axis.axis("off")
        _legend(figure, axes, len(names), title or "Neuromodulation per tensor")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, dpi=110)
        return path

    def _draw_panel(self, axis, name, column, hyperparameter):
        """One panel: input `column` (or, when None, `hyperparameter`) of every tensor."""
        from matplotlib import colormaps

        colours = colormaps["viridis"](np.linspace(0, 0.9, max(len(self.tensor_paths), 1)))
        for t, tensor in enumerate(self.tensor_paths):
            if column is not None:
                values = self.inputs[:, t, column]
            else:
                values = self.hyperparameters[:, t, hyperparameter]
            style = "-" if "kernel" in tensor.rsplit("/", 1)[-1] else "--"
            axis.plot(self.steps, values, style, color=colours[t], lw=1.2, label=tensor)
        if name in ("learning_rate", "epsilon"):
            axis.set_yscale("log")
        axis.set_title(name.replace("_", " "))
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)


def _legend(figure, axes, panels, title):
    """The tensors' legend, in the first empty panel or below the panels, and the title."""
    handles, labels = axes[0].get_legend_handles_labels()
    legend = dict(fontsize=8, title="tensor (solid: kernel, dashed: bias)")
    figure.suptitle(title)
    if panels < len(axes):  # an empty panel holds the legend
        axes[panels].legend(handles, labels, loc="center", ncol=2, **legend)
        figure.tight_layout(rect=(0, 0, 1, 0.97))
    else:
        figure.legend(handles, labels, loc="lower center", ncol=4, **legend)
        legend_rows = -(-len(labels) // 4)
        figure.tight_layout(rect=(0, 0.03 + 0.025 * legend_rows, 1, 0.97))


def _refuse_folder(path):
    """`path` as a string; a folder is refused with an error that says so."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"ModulationTracer's csv_path {path!r} is a folder: give a file path, "
            f"such as {os.path.join(path, 'trace.csv')!r}."
        )
    return path
