"""Does every task of the suite train, and what does one training cost?

For every registered task (CIFAR-10 where it is prepared) and every model it
trains, this fits the model for the task's budget with Keras's Adam (default
settings) and with plain SGD (learning rate 0.01), from the same seeded initial
weights, with the validation split as `validation_data`, and prints the test
metric of each next to the baseline (the majority class's share of the test
set, or the test MSE of predicting the training targets' mean) and the wall
seconds of Adam's `model.fit`: the first (a new model, so tracing included)
and a second one of the same compiled model from the same initial weights.

    python benchmarks/task_suite.py                 # every task and model
    python benchmarks/task_suite.py --first-model   # each task's default model only
    python benchmarks/task_suite.py --json out.json
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_neuromod import datasets  # noqa: E402
from keras_neuromod import tasks  # noqa: E402


def baseline(task, splits):
    (_, y_train), (_, y_test) = splits.train, splits.test
    if task.higher_is_better:
        return float(np.bincount(y_test).max() / len(y_test))
    return float(np.mean((y_test - y_train.mean(0)) ** 2))


def train(task, model_name, optimizer, seed):
    """Test metric, seconds of the first fit (tracing included) and of a second one."""
    splits = task.splits(seed)
    keras.utils.set_random_seed(seed)
    model = task.build_model(model_name, seed=seed)
    task.compile(model, optimizer)
    initial = model.get_weights()

    def fit():
        start = time.perf_counter()
        model.fit(
            *splits.train,
            validation_data=splits.val,
            epochs=task.epochs,
            batch_size=task.batch_size,
            verbose=0,
        )
        return time.perf_counter() - start

    seconds = fit()
    result = model.evaluate(*splits.test, batch_size=256, verbose=0, return_dict=True)
    model.set_weights(initial)
    return float(result[task.metric]), seconds, fit()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first-model", action="store_true", help="only each task's default model")
    parser.add_argument("--tasks", nargs="*", help="task names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    rows = []
    header = (
        f"{'task':24s} {'family':10s} {'model':10s} held  train ep  metric  "
        f"baseline    adam     sgd  s/fit  warm"
    )
    print(f"backend {keras.backend.backend()}\n{header}")
    for name in args.tasks or tasks.names():
        task = tasks.get(name)
        try:
            splits = task.splits(args.seed)
        except datasets.DatasetUnavailableError as error:
            print(f"{name:24s} skipped: {str(error).splitlines()[0]}")
            continue
        for model_name in task.models[:1] if args.first_model else task.models:
            adam, seconds, warm = train(task, model_name, keras.optimizers.Adam(), args.seed)
            sgd, _, _ = train(task, model_name, keras.optimizers.SGD(0.01), args.seed)
            row = dict(
                task=name,
                family=task.family,
                model=model_name,
                held_out=task.held_out,
                train=len(splits.train[1]),
                epochs=task.epochs,
                metric=task.metric,
                baseline=baseline(task, splits),
                adam=adam,
                sgd=sgd,
                seconds=seconds,
                warm_seconds=warm,
            )
            rows.append(row)
            print(
                f"{name:24s} {task.family:10s} {model_name:10s} "
                f"{'yes' if task.held_out else 'no':4s} "
                f"{row['train']:6d} {task.epochs:2d} {task.metric:8s} {row['baseline']:7.3f} "
                f"{adam:7.3f} {sgd:7.3f} {seconds:6.2f} {warm:5.2f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
