"""Switch a tiny network between two logic gates with one fixed weight transform.

The gate experiment of "Neuromodulator-inspired task switching using a fixed
weight-space transformation" (preprint, 2024 or later): a two-layer network f is trained on gate
A while its transformed twin f' (``W' = M W``, ``b' = b + v``, M and v random
and fixed) is trained on gate B, in turn, every `--period` epochs (Algorithm 1).
A seed succeeds when, at the end, f computes gate A and f' gate B on all four
inputs (100% on both gates through the transform).

How it is trained, and why:

* One epoch is one full-batch gradient step on the four input pairs. A phase of
  `--period` epochs is one Keras `fit` call over the four pairs repeated
  `--period` times (batch 4, no shuffling): Keras's per-epoch overhead, not the
  arithmetic, dominates a 4-example epoch, so this is the same computation at a
  fraction of the cost.
* All `--seeds` networks train as one batched computation: one Keras model with
  one independent branch per seed (its own initial weights and its own M, v),
  whose loss is the mean of the branches' losses. Adam's update of a weight
  depends only on that weight's gradient, so each branch trains as if alone
  (with SGD the learning rate is multiplied by the number of seeds to undo
  the mean). One `fit_alternating` call then trains every seed.
* The default network is the one measured to switch reliably here: 2-8-1,
  tanh hidden units, sigmoid output, per-layer ``M = I + G / sqrt(n)``, Adam.
  `--activation relu --optimizer sgd --form flat --mode in_place` is the
  paper's own setting (ReLU, SGD, one flat M over all weights, weights rewritten
  at each switch).

Prints per-seed results, a table, saves a PNG of the training curves and ends
with one JSON line: pair, seeds, success_rate, cycles_to_success (median over
the seeds that succeeded).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from keras_neuromod.io import atomic_write_json  # noqa: E402
from keras_neuromod.switching import MODES  # noqa: E402
from keras_neuromod.switching import MODULATIONS  # noqa: E402
from keras_neuromod.switching import FlatSwitchableMLP  # noqa: E402
from keras_neuromod.switching import SwitchableDense  # noqa: E402
from keras_neuromod.switching import fit_alternating  # noqa: E402
from keras_neuromod.switching import set_task  # noqa: E402

GATES = {
    "and": [0, 0, 0, 1],
    "or": [0, 1, 1, 1],
    "xor": [0, 1, 1, 0],
    "nand": [1, 1, 1, 0],
    "nor": [1, 0, 0, 0],
    "xnor": [1, 0, 0, 1],
}
INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32")


def _add_schedule_arguments(parser):
    """The gates, the seeds and the switching schedule."""
    parser.add_argument(
        "--pair",
        default="and,or",
        help=f"two gates, comma separated, from {sorted(GATES)} (default and,or)",
    )
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    parser.add_argument(
        "--cycles",
        type=int,
        default=500,
        help="maximum switching cycles (default 500; --quick: 150)",
    )
    parser.add_argument(
        "--period", type=int, default=10, help="epochs per task before switching (default 10)"
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=20,
        help="stop once every seed has held 100%% this many cycles (default 20)",
    )


def _add_model_arguments(parser):
    """The network, its optimizer and its modulation."""
    parser.add_argument("--hidden", type=int, default=8, help="hidden units (default 8)")
    parser.add_argument("--activation", default="tanh", choices=["tanh", "relu"])
    parser.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    _common.add_learning_rate(parser, help="default 0.05 for Adam, 0.5 for SGD")
    parser.add_argument(
        "--form",
        default="per_layer",
        choices=["per_layer", "flat"],
        help="one M per layer, or one flat M over all weights (the paper's)",
    )
    parser.add_argument("--mode", default="reparametrize", choices=list(MODES))
    parser.add_argument("--modulation", default="identity_gaussian", choices=list(MODULATIONS))


def parse_args(argv=None):
    parser = _common.parser(
        __doc__,
        "runs/switch_gates",
        quick="at most 150 cycles (AND/OR settles long before)",
        seed_help="base seed (default 0)",
    )
    _add_schedule_arguments(parser)
    _add_model_arguments(parser)
    args = parser.parse_args(argv)
    gates = [g.strip().lower() for g in args.pair.split(",")]
    if len(gates) != 2 or not all(g in GATES for g in gates):
        parser.error(f"--pair must name two gates from {sorted(GATES)}, got {args.pair!r}")
    for name in ("seeds", "cycles", "period", "hidden", "patience"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.quick:
        args.cycles = min(args.cycles, 150)
    if args.learning_rate is None:
        args.learning_rate = 0.05 if args.optimizer == "adam" else 0.5
    args.gates = gates
    return args


def build(args):
    """One model, one independent 2-hidden-1 branch per seed."""
    inputs = keras.Input((2,))
    outputs = []
    for index in range(args.seeds):
        seed = 1000 * args.seed + index
        common = dict(modulation=args.modulation, mode=args.mode)
        if args.form == "flat":
            branch = FlatSwitchableMLP(
                [args.hidden, 1],
                activation=args.activation,
                output_activation="sigmoid",
                kernel_initializer=keras.initializers.GlorotUniform(seed),
                modulation_seed=seed,
                **common,
            )
            outputs.append(branch(inputs))
        else:
            hidden = SwitchableDense(
                args.hidden,
                args.activation,
                modulation_seed=2 * seed,
                kernel_initializer=keras.initializers.GlorotUniform(2 * seed),
                **common,
            )
            out = SwitchableDense(
                1,
                "sigmoid",
                modulation_seed=2 * seed + 1,
                kernel_initializer=keras.initializers.GlorotUniform(2 * seed + 1),
                **common,
            )
            outputs.append(out(hidden(inputs)))
    merged = outputs[0] if len(outputs) == 1 else keras.layers.Concatenate()(outputs)
    model = keras.Model(inputs, merged)
    if args.optimizer == "adam":
        optimizer = keras.optimizers.Adam(args.learning_rate)
    else:
        optimizer = keras.optimizers.SGD(args.learning_rate * args.seeds)
    model.compile(optimizer, "binary_crossentropy")
    return model


def per_seed_scores(model, gate, task):
    """Accuracy and binary cross-entropy of every seed's network on one gate."""
    set_task(model, task)
    p = np.clip(np.asarray(model.predict_on_batch(INPUTS), "float64"), 1e-7, 1 - 1e-7)
    target = np.array(GATES[gate], float)[:, None]
    loss = -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean(axis=0)
    return ((p > 0.5) == target).mean(axis=0), loss


def run(args):
    keras.utils.set_random_seed(args.seed)
    model = build(args)
    gate_a, gate_b = args.gates
    reps = args.period
    x = np.tile(INPUTS, (reps, 1))
    targets = [
        np.tile(np.array(GATES[g], "float32")[:, None], (reps, args.seeds))
        for g in (gate_a, gate_b)
    ]
    curves = {"acc_a": [], "acc_b": [], "loss_a": [], "loss_b": []}
    held = np.zeros(args.seeds, int)  # consecutive successful cycles per seed
    start = time.time()

    def on_cycle_end(cycle, row):
        acc_a, loss_a = per_seed_scores(model, gate_a, 0)
        acc_b, loss_b = per_seed_scores(model, gate_b, 1)
        curves["acc_a"].append(acc_a)
        curves["acc_b"].append(acc_b)
        curves["loss_a"].append(loss_a)
        curves["loss_b"].append(loss_b)
        ok = (acc_a == 1.0) & (acc_b == 1.0)
        held[:] = np.where(ok, held + 1, 0)
        if (cycle + 1) % 10 == 0:
            print(
                f"cycle {cycle + 1:4d}  seeds at 100% on both gates: {int(ok.sum())}/"
                f"{args.seeds}  median loss {gate_a} {np.median(loss_a):.4f} {gate_b} "
                f"{np.median(loss_b):.4f}  ({time.time() - start:.0f} s)",
                flush=True,
            )
        return bool((held >= args.patience).all())

    fit_alternating(
        model,
        [{"x": x, "y": targets[0], "name": "A"}, {"x": x, "y": targets[1], "name": "B"}],
        period=1,
        cycles=args.cycles,
        batch_size=4,
        shuffle=False,
        on_cycle_end=on_cycle_end,
    )
    cycles_run = len(curves["acc_a"])
    success = held > 0
    # A seed's cycles to success: the first cycle from which it stayed at 100%.
    to_success = [int(cycles_run - h + 1) if h > 0 else None for h in held]
    return curves, success, to_success, cycles_run, time.time() - start


def plot(curves, args, path):
    acc = np.minimum(np.array(curves["acc_a"]), np.array(curves["acc_b"]))
    cycles = np.arange(1, len(acc) + 1)
    fig, (left, right) = _common.pyplot().subplots(1, 2, figsize=(11, 4))
    for key, gate, state in (
        ("loss_a", args.gates[0], "state 0, f"),
        ("loss_b", args.gates[1], "state 1, f'"),
    ):
        losses = np.array(curves[key])
        low, mid, high = np.percentile(losses, [25, 50, 75], axis=1)
        (line,) = left.plot(cycles, mid, label=f"{gate.upper()} ({state})")
        left.fill_between(cycles, low, high, color=line.get_color(), alpha=0.2)
    left.set_yscale("log")
    left.set_xlabel("switching cycle")
    left.set_ylabel(f"loss at cycle end: median, quartiles of {args.seeds} seeds")
    left.set_title("Cross-entropy of each gate in its own state")
    left.legend()
    for seed in range(acc.shape[1]):
        right.plot(cycles, acc[:, seed] + 0.01 * seed, lw=1, alpha=0.8)
    right.plot(cycles, (acc == 1.0).mean(axis=1), "k", lw=2.5, label="share of seeds at 100%")
    right.set_xlabel("switching cycle")
    right.set_ylabel("worse of the two gate accuracies")
    right.set_ylim(-0.02, 1.12)
    right.set_title("Per seed (thin lines, offset for visibility)")
    right.legend(loc="lower right")
    pair = "/".join(g.upper() for g in args.gates)
    fig.suptitle(
        f"{pair} switching: {args.form} M, {args.activation}, period {args.period}, "
        f"{args.optimizer}"
    )
    fig.tight_layout()
    _common.save_figure(fig, path, dpi=120)


def _print_seed_table(args, curves, success, to_success):
    """One row per seed: its final accuracy on both gates, and when it succeeded."""
    _common.print_table(
        [
            (
                1000 * args.seed + index,
                f"{curves['acc_a'][-1][index]:.2f}",
                f"{curves['acc_b'][-1][index]:.2f}",
                bool(success[index]),
                "-" if to_success[index] is None else to_success[index],
            )
            for index in range(args.seeds)
        ],
        headers=(
            "seed",
            "acc " + args.gates[0],
            "acc " + args.gates[1],
            "success",
            "cycles to success",
        ),
        align="rrrrr",
    )


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    pair = ",".join(args.gates)
    print(
        f"Switching {pair.upper()}: {args.seeds} seeds trained as one batched model, "
        f"2-{args.hidden}-1 {args.activation}, {args.form} M ({args.modulation}, "
        f"{args.mode}), period {args.period} epochs, at most {args.cycles} cycles."
    )
    curves, success, to_success, cycles_run, seconds = run(args)
    _print_seed_table(args, curves, success, to_success)
    done = [c for c in to_success if c is not None]
    median = float(np.median(done)) if done else None
    rate = float(np.mean(success))
    print(
        f"\nsuccess rate {rate:.0%} over {args.seeds} seeds; median cycles to success "
        f"{median}; {cycles_run} cycles in {seconds:.0f} s"
    )
    figure = os.path.join(args.out, f"switch_gates_{'_'.join(args.gates)}.png")
    plot(curves, args, figure)
    result = {
        "pair": pair,
        "seeds": args.seeds,
        "success_rate": rate,
        "cycles_to_success": median,
        "cycles_run": cycles_run,
        "period": args.period,
        "form": args.form,
        "activation": args.activation,
        "optimizer": args.optimizer,
        "seconds": round(seconds, 1),
    }
    atomic_write_json(
        os.path.join(args.out, f"result_{'_'.join(args.gates)}.json"),
        dict(result, per_seed_cycles_to_success=to_success, figure=figure),
    )
    print(f"figure: {figure}")
    _common.print_json_line(result)


if __name__ == "__main__":
    main()
