"""Evolve an ENU synapse to mimic spike-timing-dependent plasticity (STDP).

The second experiment of Bertens and Lee, "Network of evolvable neural units can learn
synaptic learning rules and spiking dynamics" (2020, Fig. 3b-c): one ENU
plays a synapse. It sees the presynaptic spike, the postsynaptic (back-propagating)
spike and, in the gated variant, a dopamine signal; its first output channel must
report the synaptic weight. The weight starts at 0.5 and jumps by

    dw = 0.5 * sign(dt) * exp(-|dt| / 10),   dt = t_post - t_pre,

the classic asymmetric STDP window (pre before post potentiates, post before pre
depresses). Without a gate the jump happens when the second spike of the pair
arrives. With the dopamine gate, half of the environments deliver a dopamine pulse
1-5 steps after the pair and the jump happens at the pulse; the other half deliver
none and the weight must stay at 0.5, so the synapse has to keep an eligibility
trace of the pair's timing until the reward comes.

Choices where the paper is silent: one spike pair per episode, every
`dt` in [-20, 20] steps met once per generation (in random order, at random
start times, with dopamine in about half of the episodes), 48 steps per
episode, inputs in the order `[pre spike, post spike, dopamine]` (the paper's
graded input potential is left out: the target is the weight itself rather than
the weighted potential), fitness = minus the mean squared error between the
first output channel and the weight over all steps (0 is perfect).

The ES takes Adam steps by default (`--update adam`). Measured on the gated
variant in quick mode: the paper's momentum step, 4000 generations at memory 4,
learned the window to an RMSE of 0.070 (0.020 change without dopamine); Adam,
3000 generations at memory 6, to 0.033 (0.006). With timings drawn at random
rather than stratified, 1500 generations of momentum reached 0.11.

    python examples/enu_stdp.py --quick    # both variants at reduced size, minutes
    python examples/enu_stdp.py            # the paper's 512 offspring, 41 envs

A run writes one checkpoint per variant to `--out` after every generation;
`--resume` continues them (an existing checkpoint is never overwritten). The last
line of stdout is a JSON object with the headline figures.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import _common  # noqa: E402
from keras_neuromod.evolution.enu_fitness import ENUFitness  # noqa: E402
from keras_neuromod.evolution.enu_fitness import enu_outputs  # noqa: E402
from keras_neuromod.evolution.strategies import EvolutionStrategy  # noqa: E402
from keras_neuromod.io import atomic_write_json  # noqa: E402
from keras_neuromod.layers.enu import ENUCell  # noqa: E402

STEPS = 48
MAX_DT = 20
W0 = 0.5
INPUTS = 3  # pre spike, post spike, dopamine


def stdp_window(dt):
    return 0.5 * np.sign(dt) * np.exp(-np.abs(dt) / 10.0)


def episodes(dts, gated, dopamine):
    """Inputs `(STEPS, n, 3)` and target weights `(STEPS, n)` for given timings.

    Args:
        dts: `(n,)` integer spike-timing differences `t_post - t_pre`.
        gated: whether the weight change waits for dopamine.
        dopamine: `(n,)` dopamine delay after the pair in steps, 0 for none.
    """
    n = len(dts)
    first = np.full(n, 3)
    t_pre = np.where(dts >= 0, first, first - dts)
    t_post = t_pre + dts
    inputs = np.zeros((STEPS, n, INPUTS), np.float32)
    inputs[t_pre, np.arange(n), 0] = 1.0
    inputs[t_post, np.arange(n), 1] = 1.0
    last = np.maximum(t_pre, t_post)
    if gated:
        t_change = np.where(dopamine > 0, last + dopamine, STEPS)
        has = dopamine > 0
        inputs[(last + dopamine)[has], np.arange(n)[has], 2] = 1.0
    else:
        t_change = last
    weight = W0 + stdp_window(dts)
    steps = np.arange(STEPS)[:, None]
    target = np.where(steps >= t_change[None, :], weight[None, :], W0)
    return inputs, target.astype(np.float32)


def random_episodes(rng, envs, gated):
    """A generation's environments: timings stratified, starts and dopamine random.

    The timings `dt` run through every value of `[-MAX_DT, MAX_DT]` in a random
    order (repeated when `envs` is larger), so that every generation scores the
    whole window: with timings drawn independently, some generations miss parts of
    the window and the noise drowns its shape.
    """
    dts = np.resize(rng.permutation(np.arange(-MAX_DT, MAX_DT + 1)), envs)
    # Random start, so that the synapse cannot use the clock.
    dopamine = (
        np.where(rng.random(envs) < 0.5, rng.integers(1, 6, size=envs), 0)
        if gated
        else np.zeros(envs, int)
    )
    inputs, target = episodes(dts, gated, dopamine)
    shift = rng.integers(0, STEPS - MAX_DT - 8, size=envs)  # last event <= 28 + shift
    rows = (np.arange(STEPS)[:, None] - shift[None, :]) % STEPS
    cols = np.arange(envs)[None, :]
    inputs, target = inputs[rows, cols], target[rows, cols]
    # Before the shifted start the weight is W0 (rolled-in tail is W0 or the final
    # weight: reset it).
    before = np.arange(STEPS)[:, None] < shift[None, :]
    target = np.where(before, W0, target)
    return inputs, target.astype(np.float32)


def make_fitness(memory, channels, envs, gated):
    """The batched fitness for `EvolutionStrategy`: minus the weight's mean squared error."""

    def score(genomes, inputs, targets):
        outputs = enu_outputs(genomes, inputs, memory, channels)  # (T, P, E, C)
        return -ops.mean(ops.square(outputs[..., 0] - targets[:, None, :]), axis=(0, 2))

    return ENUFitness(score, lambda rng: random_episodes(rng, envs, gated))


def learned_window(theta, memory, channels, gated, dopamine_delay):
    """Final weight change for every dt in [-MAX_DT, MAX_DT]."""
    dts = np.arange(-MAX_DT, MAX_DT + 1)
    inputs, _ = episodes(dts, gated, np.full(dts.size, dopamine_delay))
    out = ops.convert_to_numpy(
        enu_outputs(theta.astype(np.float32), ops.convert_to_tensor(inputs), memory, channels)
    )
    return dts, out[-1, :, 0] - W0


def evolve(name, gated, args, sizes):
    memory, channels, population, envs, generations = sizes
    keras.utils.set_random_seed(args.seed)
    cell = ENUCell(memory=memory, channels=channels)
    cell.build((None, INPUTS))
    es = EvolutionStrategy(
        make_fitness(memory, channels, envs, gated),
        cell.get_flat_weights(),
        population=population,
        sigma=args.sigma,
        learning_rate=args.learning_rate,
        momentum=args.momentum,
        seed=args.seed,
        update=args.update,
    )
    print(
        f"[{name}] {es.num_params} evolved parameters, {population} offspring x "
        f"{envs} environments x {STEPS} steps, {generations} generations",
        flush=True,
    )
    try:
        theta = es.run(
            generations,
            checkpoint_path=os.path.join(args.out, f"{name}.json"),
            progress=not args.no_progress,
            resume=args.resume,
        )
    except FileExistsError as error:
        sys.exit(f"{error}\n(use --resume, or another --out)")
    return theta, es.logbook


def _parse_args(argv):
    """The command line: which variants, their sizes and the ES step."""
    parser = _common.parser(
        __doc__,
        "runs/enu_stdp",
        quick="reduced sizes, minutes",
        resume="continue from the checkpoints in --out",
        progress=True,
    )
    parser.add_argument("--variant", choices=["both", "plain", "dopamine"], default="both")
    parser.add_argument("--generations", type=int, help="default 3000")
    parser.add_argument("--population", type=int, help="offspring (default 128 quick, 512)")
    parser.add_argument("--envs", type=int, help="environments (default 41: every timing once)")
    parser.add_argument("--memory", type=int, help="memory channels (default 6 quick, 32)")
    parser.add_argument("--channels", type=int, help="output channels (default 2 quick, 16)")
    parser.add_argument(
        "--sigma", type=float, help="noise std (default 0.02 quick, the paper's 0.01 full)"
    )
    parser.add_argument(
        "--update",
        choices=["adam", "momentum"],
        default="adam",
        help="the ES step: Adam, or the paper's momentum",
    )
    _common.add_learning_rate(parser, help="default 0.01 with Adam, 0.003 with momentum")
    parser.add_argument("--momentum", type=float, default=0.9)
    return parser.parse_args(argv)


def _resolve_defaults(args):
    """Fill `args.sigma` and `args.learning_rate`; return `(memory, channels, population,
    envs, generations)`."""
    quick = args.quick
    sizes = (
        args.memory or (6 if quick else 32),
        args.channels or (2 if quick else 16),
        args.population or (128 if quick else 512),
        args.envs or 2 * MAX_DT + 1,
        args.generations or 3000,
    )
    args.sigma = args.sigma or (0.02 if quick else 0.01)
    args.learning_rate = args.learning_rate or (0.01 if args.update == "adam" else 0.003)
    return sizes


def _chosen_variants(variant):
    """The variants to run, name -> gated: both, or the one `--variant` names."""
    variants = {"plain": False, "dopamine": True}
    if variant != "both":
        variants = {variant: variants[variant]}
    return variants


def _evolve_and_measure(name, gated, args, sizes):
    """Evolve one variant; return its headline figures, its learned windows and logbook."""
    memory, channels = sizes[0], sizes[1]
    t0 = time.perf_counter()
    theta, logbook = evolve(name, gated, args, sizes)
    seconds = logbook.select("seconds")[1:] or logbook.select("seconds")
    dts, with_da = learned_window(theta, memory, channels, gated, 3)
    target = stdp_window(dts)
    entry = {
        "fitness_first": logbook[0]["mean"],
        "fitness_last": logbook[-1]["mean"],
        "window_error": float(np.sqrt(np.mean((with_da - target) ** 2))),
        "window_corr": float(np.corrcoef(with_da, target)[0, 1]) if np.std(with_da) > 0 else 0.0,
        "seconds_per_generation": float(np.median(seconds)),
        "wall_s": time.perf_counter() - t0,
    }
    window = {"dt": dts, "with": with_da, "target": target}
    if gated:
        _, without = learned_window(theta, memory, channels, gated, 0)
        window["without"] = without
        entry["no_dopamine_change"] = float(np.sqrt(np.mean(without**2)))
        # Both halves of the gated rule: the window with dopamine, no change without.
        entry["gated_error"] = float(
            np.sqrt((entry["window_error"] ** 2 + entry["no_dopamine_change"] ** 2) / 2)
        )
    return entry, window, logbook


def _plot_window(ax, name, window):
    """One variant's learned weight change against the target STDP window."""
    w = window
    ax.plot(w["dt"], w["target"], "k--", label="target STDP window")
    label = "evolved ENU, dopamine" if name == "dopamine" else "evolved ENU"
    ax.plot(w["dt"], w["with"], "o-", color="tab:red", ms=3, label=label)
    if "without" in w:
        ax.plot(
            w["dt"],
            w["without"],
            "s-",
            color="tab:blue",
            ms=3,
            label="evolved ENU, no dopamine (target 0)",
        )
    ax.axhline(0, color="0.7", lw=0.8)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.set_xlabel("dt = t_post - t_pre (steps)")
    ax.set_ylabel("weight change")
    ax.set_title("STDP" if name == "plain" else "Dopamine-gated STDP")
    ax.set_ylim(-0.6, 0.6)
    ax.legend(fontsize=8, loc="upper left")


def _save_figure(logbooks, windows, path):
    """The evolution curves, then each variant's learned window, side by side."""
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, len(logbooks) + 1, figsize=(5 * (len(logbooks) + 1), 4.2))
    for name, logbook in logbooks.items():
        axes[0].plot(logbook.select("gen"), logbook.select("mean"), label=name)
    axes[0].set_xlabel("generation")
    axes[0].set_ylabel("mean fitness (-MSE)")
    axes[0].set_title("Evolution")
    axes[0].legend()
    for ax, name in zip(axes[1:], logbooks):
        _plot_window(ax, name, windows[name])
    fig.tight_layout()
    _common.save_figure(fig, path)


def _print_results_table(results):
    """One row per variant: fitness, window error and correlation, gating, speed."""
    _common.print_table(
        [
            (
                name,
                f"{r['fitness_first']:.4f}",
                f"{r['fitness_last']:.4f}",
                f"{r['window_error']:.4f}",
                f"{r['window_corr']:.3f}",
                f"{r['no_dopamine_change']:.4f}" if "no_dopamine_change" in r else "-",
                f"{r['gated_error']:.4f}" if "gated_error" in r else "-",
                f"{r['seconds_per_generation']:.3f}",
            )
            for name, r in results.items()
        ],
        headers=(
            "variant",
            "fit first",
            "fit last",
            "window RMSE",
            "corr",
            "no-DA RMS",
            "both RMSE",
            "s/gen",
        ),
        align="lrrrrrrr",
    )


def _summary(sizes, wall, results):
    """The JSON headline: the sizes, then every variant's figures prefixed by its name."""
    summary = {
        "memory": sizes[0],
        "channels": sizes[1],
        "population": sizes[2],
        "envs": sizes[3],
        "generations": sizes[4],
        "wall_s": round(wall, 1),
    }
    for name, r in results.items():
        for key, value in r.items():
            summary[f"{name}_{key}"] = round(value, 5)
    return summary


def main(argv=None):
    args = _parse_args(argv)
    sizes = _resolve_defaults(args)
    os.makedirs(args.out, exist_ok=True)

    results, windows, logbooks = {}, {}, {}
    start = time.perf_counter()
    for name, gated in _chosen_variants(args.variant).items():
        results[name], windows[name], logbooks[name] = _evolve_and_measure(name, gated, args, sizes)
    wall = time.perf_counter() - start

    _save_figure(logbooks, windows, os.path.join(args.out, "enu_stdp.png"))
    _print_results_table(results)
    summary = _summary(sizes, wall, results)
    atomic_write_json(os.path.join(args.out, "result.json"), summary)
    _common.print_json_line(summary)


if __name__ == "__main__":
    main()
