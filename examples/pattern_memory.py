"""One-shot memorisation and completion of binary patterns (supervised).

Each sequence shows `--patterns` random +-1 patterns of `--bits` bits, each for
a few steps with blank steps in between, then a degraded copy of one of them
(half of its bits set to 0) for a few steps. The network must output the full
pattern at the last step. The patterns are new in every sequence, so nothing
can be learned about them in the weights: the network has to store them within
the sequence and recall one from a partial cue. Score: the fraction of the
hidden (zeroed) bits whose sign the network recovers (chance 50 %).

This is the task of Miconi et al.'s "differentiable plasticity" (2018) that
Backpropamine builds on: a Hebbian trace between consecutive hidden states is
an auto-associative (Hopfield-like) memory written in one shot, exactly what
the task needs. We compare plastic recurrent layers (`PlasticRNNCell`,
`hebbian` and neuromodulated `simple`) with a plain LSTM of (about) equal
parameter count, all trained with `model.fit` on the same data. Runs on any
Keras backend.

    python examples/pattern_memory.py --quick
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from keras_neuromod.io import atomic_write_json  # noqa: E402
from keras_neuromod.layers.plastic import PlasticRNNCell  # noqa: E402


def make_data(rng, n, bits, patterns, show=3, gap=2, test=3):
    """Sequences (n, steps, bits), targets (n, bits) and masks of hidden bits."""
    steps = patterns * (show + gap) + test
    x = np.zeros((n, steps, bits), np.float32)
    pats = rng.integers(0, 2, size=(n, patterns, bits)).astype(np.float32) * 2 - 1
    for k in range(patterns):
        start = k * (show + gap)
        x[:, start : start + show] = pats[:, k : k + 1]
    which = rng.integers(patterns, size=n)
    target = pats[np.arange(n), which]
    hidden = np.zeros((n, bits), bool)
    for i in range(n):
        hidden[i, rng.permutation(bits)[: bits // 2]] = True
    probe = np.where(hidden, 0.0, target)
    x[:, -test:] = probe[:, None, :]
    return x, target, hidden


def build(kind, units, bits, steps):
    inputs = keras.Input((steps, bits))
    if kind == "lstm":
        h = keras.layers.LSTM(units)(inputs)
    else:
        cell = PlasticRNNCell(units, plasticity=kind)
        h = keras.layers.RNN(cell)(inputs)
    outputs = keras.layers.Dense(bits, activation="tanh")(h)
    return keras.Model(inputs, outputs, name=kind)


def lstm_units_for(n_params, bits):
    """LSTM width whose parameter count (with the readout) is closest to n_params."""

    def count(u):
        return 4 * (bits * u + u * u + u) + u * bits + bits

    return min(range(1, 1024), key=lambda u: abs(count(u) - n_params))


def hidden_bit_accuracy(model, x, target, hidden):
    pred = np.sign(np.asarray(model.predict(x, batch_size=256, verbose=0)))
    return float((pred == target)[hidden].mean())


def _parse_args(argv):
    """The parsed flags, the sizes left unset filled from --quick, and the models to train."""
    p = _common.parser(__doc__, "runs/pattern_memory", quick="reduced run (minutes)")
    p.add_argument("--bits", type=int, default=None)
    p.add_argument("--patterns", type=int, default=None)
    p.add_argument("--units", type=int, default=None, help="plastic RNN width")
    p.add_argument("--train", type=int, default=None, help="training sequences")
    p.add_argument("--epochs", type=int, default=None)
    _common.add_learning_rate(p, 3e-3, "Adam learning rate (default 0.003)")
    p.add_argument("--models", default="lstm,hebbian,simple")
    args = p.parse_args(argv)
    defaults = (
        dict(bits=16, patterns=3, units=32, train=4000, epochs=15)
        if args.quick
        else dict(bits=32, patterns=4, units=64, train=20000, epochs=30)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    for k in kinds:
        if k not in ("lstm", "none", "hebbian", "simple", "retroactive"):
            p.error(f"unknown model {k!r}")
    return args, kinds


def _train_model(kind, units, args, train, validation, test):
    """Train one model, printing its validation accuracy after every epoch; return its
    figures (units, parameters, test accuracy, seconds) and its validation curve."""
    (x, y), (xv, yv, hv), (xt, yt, ht) = train, validation, test
    steps = x.shape[1]
    model = build(kind, units, args.bits, steps)
    model.compile(keras.optimizers.Adam(args.learning_rate, clipnorm=5.0), loss="mse")
    start = time.time()
    curve = []

    class Track(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None, curve=curve, kind=kind, start=start):
            acc = hidden_bit_accuracy(self.model, xv, yv, hv)
            curve.append(acc)
            print(
                f"  {kind:8s} epoch {epoch + 1:3d}  loss {logs['loss']:.4f}  "
                f"val hidden-bit accuracy {acc:.3f}  ({time.time() - start:.0f} s)",
                flush=True,
            )

    model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0, callbacks=[Track()])
    result = dict(
        units=units,
        params=model.count_params(),
        accuracy=hidden_bit_accuracy(model, xt, yt, ht),
        seconds=time.time() - start,
    )
    return result, curve


def _save_figure(curves, results, args, path):
    """Every model's validation accuracy on the hidden bits, epoch by epoch."""
    plt = _common.pyplot()
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for kind, curve in curves.items():
        ax.plot(
            np.arange(1, len(curve) + 1),
            curve,
            marker="o",
            ms=3,
            label=f"{kind} ({results[kind]['params']} params)",
        )
    ax.axhline(0.5, color="k", ls=":", lw=0.8)
    ax.set_ylim(0.4, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy on the hidden bits")
    ax.set_title(f"Pattern completion: {args.patterns} patterns x {args.bits} bits")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(loc="upper left")
    fig.tight_layout()
    return _common.save_figure(fig, path, dpi=120)


def _print_results_table(results, n_test):
    """One row per model: its size and its test accuracy on the hidden bits."""
    _common.print_table(
        [
            (kind, r["units"], r["params"], f"{r['accuracy']:.3f}", f"{r['seconds']:.0f} s")
            for kind, r in results.items()
        ],
        headers=("model", "units", "params", "accuracy", "time"),
        align="lrrrr",
        title=f"Test accuracy on the hidden bits (chance 0.5), {n_test} new sequences",
    )


def main(argv=None):
    args, kinds = _parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    rng = np.random.default_rng(args.seed)
    x, y, _ = make_data(rng, args.train, args.bits, args.patterns)
    validation = make_data(rng, 1000, args.bits, args.patterns)
    test = make_data(rng, 2000, args.bits, args.patterns)
    steps = x.shape[1]
    print(
        f"backend {keras.backend.backend()}; {args.patterns} patterns of {args.bits} bits, "
        f"{steps} steps, {args.train} training sequences, {args.epochs} epochs",
        flush=True,
    )

    # The LSTM gets as many parameters as the Hebbian RNN.
    keras.utils.set_random_seed(args.seed)
    ref = build("hebbian", args.units, args.bits, steps).count_params()
    results, curves = {}, {}
    for kind in kinds:
        keras.utils.set_random_seed(args.seed)
        units = lstm_units_for(ref, args.bits) if kind == "lstm" else args.units
        results[kind], curves[kind] = _train_model(kind, units, args, (x, y), validation, test)
        keras.backend.clear_session()

    figure = _save_figure(curves, results, args, os.path.join(args.out, "accuracy.png"))
    atomic_write_json(
        os.path.join(args.out, "results.json"),
        {"args": vars(args), "results": results, "curves": curves},
    )
    _print_results_table(results, len(test[0]))
    print(f"figure: {figure}")
    _common.print_json_line({k: round(r["accuracy"], 4) for k, r in results.items()})


if __name__ == "__main__":
    main()
