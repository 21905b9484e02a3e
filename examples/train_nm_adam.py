"""Train a model with Nm-Adam, trace what the agent did, compare with Adam.

The story: an AGRN agent sets the learning rate, betas and epsilon of every
tensor at every step. This script trains one of the paper's models with
`NmAdam(agent=...)` and, side by side from the same initial weights and data
order, with Keras's default Adam; it prints the accuracy per epoch, saves the
learning curves and the tracer's figure (inputs and hyperparameters per layer,
the paper's figures 4 and 5), and ends with one JSON line of the headline
figures.

    python examples/train_nm_adam.py --quick            # digits, a couple of minutes
    python examples/train_nm_adam.py --agent my.json    # your own evolved agent
    python examples/train_nm_adam.py --dataset cifar10 --model A --epochs 50

Without `--agent`, the zoo's `nm_adam_digits` agent drives the optimizer; with
`--agent random`, a random genome drawn from `--seed` does (it shows the
mechanism, not a good agent).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from keras_neuromod import Genome  # noqa: E402
from keras_neuromod import NmAdam  # noqa: E402
from keras_neuromod import bases  # noqa: E402
from keras_neuromod import datasets  # noqa: E402
from keras_neuromod import models  # noqa: E402
from keras_neuromod.callbacks import ModulationTracer  # noqa: E402
from keras_neuromod.callbacks import TrainingHorizon  # noqa: E402

DEFAULT_AGENT = "nm_adam_digits"


def parse_args(argv=None):
    parser = _common.parser(
        __doc__, "runs/train_nm_adam", quick="digits, model A at half width, 5 epochs"
    )
    parser.add_argument("--dataset", default="digits", choices=datasets.NAMES)
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets folder for CIFAR")
    parser.add_argument("--model", default="A", choices=models.ARCHITECTURES)
    parser.add_argument(
        "--width",
        type=float,
        default=None,
        help="width factor of the model (default 0.5 on digits, 1 otherwise)",
    )
    parser.add_argument(
        "--agent",
        default=DEFAULT_AGENT,
        help=f"genome or agent JSON file, zoo name, or 'random' (default {DEFAULT_AGENT})",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--trace-every", type=int, default=5, help="record the modulation every N steps"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.epochs = "digits", min(args.epochs, 5)
    if args.width is None:
        args.width = 0.5 if args.dataset == "digits" else 1.0
    return args


class EpochPrinter(keras.callbacks.Callback):
    def __init__(self, label):
        super().__init__()
        self.label = label

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(
            f"  {self.label:8s} epoch {epoch + 1:3d}  loss {logs.get('loss', float('nan')):.4f}  "
            f"train acc {logs.get('accuracy', float('nan')):.4f}  "
            f"test acc {logs.get('val_accuracy', float('nan')):.4f}",
            flush=True,
        )


def train(label, optimizer, data, args, callbacks=()):
    (x_train, y_train), (x_test, y_test), num_classes = data
    model = models.build(
        args.model, data.input_shape, num_classes, width=args.width, seed=args.seed
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_test, y_test),
        epochs=args.epochs,
        batch_size=args.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[EpochPrinter(label), *callbacks],
    )
    return history.history, time.perf_counter() - start


def plot_curves(histories, path):
    figure, axes = _common.pyplot().subplots(1, 2, figsize=(10, 4))
    for label, history in histories.items():
        epochs = np.arange(1, len(history["loss"]) + 1)
        axes[0].plot(epochs, history["accuracy"], "-o", label=f"{label} train")
        axes[0].plot(epochs, history["val_accuracy"], "--o", label=f"{label} test")
        axes[1].plot(epochs, history["loss"], "-o", label=label)
    axes[0].set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    axes[1].set(xlabel="epoch", ylabel="training loss", title="Loss", yscale="log")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return _common.save_figure(figure, path)


def _load_data(args):
    """The dataset `--dataset` names (CIFAR from `--data-dir`); exit if it is unavailable."""
    try:
        return datasets.load(
            args.dataset, **({"data_dir": args.data_dir} if args.dataset != "digits" else {})
        )
    except datasets.DatasetUnavailableError as error:
        sys.exit(str(error))


def _resolve_agent(args):
    """The agent to give `NmAdam` and its name: a random genome, or `--agent` as given."""
    if args.agent == "random":
        return (
            Genome.random(
                bases.N_INPUTS, bases.get("adam").n_outputs, n_regulatory=4, rng=args.seed
            ),
            f"random genome (seed {args.seed})",
        )
    return args.agent, args.agent  # NmAdam resolves files and zoo names


def _print_results_tables(histories, seconds, tracer):
    """The optimizers' final accuracies and losses, then the hyperparameters Nm-Adam chose
    for each tensor at the last traced step."""
    _common.print_table(
        [
            (
                label,
                f"{history['accuracy'][-1]:.4f}",
                f"{history['val_accuracy'][-1]:.4f}",
                f"{history['loss'][-1]:.4f}",
                f"{seconds[label]:.1f}",
            )
            for label, history in histories.items()
        ],
        headers=("optimizer", "train acc", "test acc", "final loss", "seconds"),
        align="lrrrr",
    )
    _common.print_table(
        [
            (path, *(f"{v:.4g}" for v in row))
            for path, row in zip(tracer.tensor_paths, tracer.hyperparameters[-1])
        ],
        headers=("tensor", *tracer.hyperparameter_names),
        align="l" + "r" * len(tracer.hyperparameter_names),
        title="Hyperparameters chosen at the last traced step:",
    )


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    data = _load_data(args)
    agent, agent_name = _resolve_agent(args)
    print(
        f"Training model {args.model} (width {args.width}) on {args.dataset} "
        f"for {args.epochs} epochs, "
        f"agent: {agent_name}"
    )

    tracer = ModulationTracer(
        update_freq=args.trace_every, csv_path=os.path.join(args.out, "trace.csv")
    )
    histories, seconds = {}, {}
    keras.utils.set_random_seed(args.seed)
    # TrainingHorizon tells an agent that reads its progress (the "sensing" inputs) how
    # long `fit` runs; agents of other input sets ignore it
    histories["Nm-Adam"], seconds["Nm-Adam"] = train(
        "Nm-Adam", NmAdam(agent=agent), data, args, [tracer, TrainingHorizon()]
    )
    keras.utils.set_random_seed(args.seed)
    histories["Adam"], seconds["Adam"] = train("Adam", keras.optimizers.Adam(), data, args)

    curves = os.path.join(args.out, "curves.png")
    plot_curves(histories, curves)
    trace_png = tracer.plot(
        os.path.join(args.out, "modulation.png"),
        title=f"Nm-Adam on {args.dataset}, model {args.model}",
    )
    _print_results_tables(histories, seconds, tracer)
    print(f"\nFigures: {curves}, {trace_png}; trace: {tracer.csv_path}")
    headline = {
        "dataset": args.dataset,
        "model": args.model,
        "epochs": args.epochs,
        "agent": agent_name,
        "nm_adam_train_accuracy": round(histories["Nm-Adam"]["accuracy"][-1], 4),
        "nm_adam_test_accuracy": round(histories["Nm-Adam"]["val_accuracy"][-1], 4),
        "adam_train_accuracy": round(histories["Adam"]["accuracy"][-1], 4),
        "adam_test_accuracy": round(histories["Adam"]["val_accuracy"][-1], 4),
        "figures": [curves, trace_png],
    }
    return _common.print_json_line(headline)


if __name__ == "__main__":
    main()
