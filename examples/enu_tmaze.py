"""Evolve a network of ENUs that learns, within its lifetime, where the food is in a T-maze.

The third experiment of Bertens and Lee, "Network of evolvable neural units can learn
synaptic learning rules and spiking dynamics" (2020, Fig. 4-5): an agent
walks a T-maze over and over. One arm holds food (reward +1), the other poison
(-1); at a random trial in the middle of the agent's lifetime the two swap. No
weight changes during the lifetime: the agent can only do well if the state of its
ENU synapses and neurons, whose shared weights are evolved, implements a learning
rule that associates the last turn with the last outcome.

Each trial has three phases of sensory input (one sensory node each, value in the
node's first channel, other channels zero): the corridor (1 step), the junction (2
steps; the turn is read at the last one: right when output neuron "right" has a
higher first channel than output neuron "left"), and the arm (2 steps), where the
agent senses which arm it is in and whether it found food or poison. Sensory
nodes, in order: corridor, junction, left arm, right arm, food, poison. The
network: a fixed random graph in which each sensory node and each neuron projects
to each neuron (self-loops included) with probability `--density`, one ENU per
synapse. Fitness: mean reward per trial over the lifetime,
averaged over randomised environments (initial food side and swap trial).

The paper's sizes (32 memory and 16 channels per ENU, 512 offspring) are out of
reach of a 2-core machine; `--quick` and the default run a reduced network. On
bigger hardware run e.g.

    python examples/enu_tmaze.py --full            # 512 offspring, 32 envs, 32/16 ENUs

(`--full` sets the paper's ES sizes; every size also has its own flag). All
offspring of a generation live their lifetimes in one compiled batched call
(`keras_neuromod.evolution.enu_fitness.ENUFitness`). A run writes its checkpoint to
`--out` after every generation; `--resume` continues it (an existing checkpoint is
never overwritten). The last line of stdout is a JSON object with the headline
figures.
"""

import os
import sys
import time
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import _common  # noqa: E402
from keras_neuromod.evolution.enu_fitness import ENUFitness  # noqa: E402
from keras_neuromod.evolution.strategies import EvolutionStrategy  # noqa: E402
from keras_neuromod.io import atomic_write_json  # noqa: E402
from keras_neuromod.layers.enu import ENUNetwork  # noqa: E402
from keras_neuromod.layers.enu import network_step  # noqa: E402

SENSES = ("corridor", "junction", "left arm", "right arm", "food", "poison")
PHASES = (0, 1, 1, 2, 2)  # corridor, junction x2, arm x2
DECISION = 2  # index within the trial where the turn is read


def build_network(hidden, memory, channels, density, graph_seed=0):
    """A random ENU network: each (node -> neuron) synapse exists with `density`.

    Full connectivity would make all neurons, the two output neurons included,
    identical for ever (same inputs, same shared weights, same zero start), so the
    turn could never depend on anything: a fixed random graph breaks the symmetry.
    Every neuron gets at least one synapse from a sensory node.
    """
    num_inputs, num_neurons = len(SENSES), hidden + 2
    rng = np.random.default_rng(graph_seed)
    mask = rng.random((num_inputs + num_neurons, num_neurons)) < density
    for neuron in range(num_neurons):
        if not mask[:num_inputs, neuron].any():
            mask[rng.integers(num_inputs), neuron] = True
    pre, post = np.nonzero(mask)
    return ENUNetwork(
        num_inputs,
        num_neurons,
        pre=pre,
        post=post,
        output_neurons=[hidden, hidden + 1],
        memory=memory,
        channels=channels,
    )


def schedule(trials):
    """Per-step phase one-hots `(T, 3)` and decision flags `(T,)`."""
    phase = np.tile(np.eye(3, dtype=np.float32)[list(PHASES)], (trials, 1))
    decision = np.tile(np.eye(len(PHASES), dtype=np.float32)[DECISION], trials)
    return phase, decision


def food_sides(rng, envs, trials):
    """Food side per step `(T, envs)` (1 = right): a random start and one swap."""
    start = rng.integers(0, 2, size=envs)
    swap = rng.integers(trials // 3, trials - trials // 3 + 1, size=envs)
    trial = np.arange(trials)[:, None]
    side = np.where(trial < swap[None, :], start[None, :], 1 - start[None, :])
    return np.repeat(side, len(PHASES), axis=0).astype(np.float32)


def _senses(phase, turn, side, zeros):
    """One step's sensory values `(P, E, 6)`, in the order of `SENSES`, from its phase
    one-hot, the last turn and the food side."""
    found = 1.0 - ops.abs(turn - side)
    return ops.stack(
        [
            zeros + phase[0],
            zeros + phase[1],
            phase[2] * (1.0 - turn),
            phase[2] * turn,
            phase[2] * found,
            phase[2] * (1.0 - found),
        ],
        axis=-1,
    )


def make_lifetime(network, trials):
    """`lifetime(genomes, food) -> (mean reward (P,), turns (T_trials, P, E))`."""
    pre, post = network.pre, network.post
    mean_matrix = network.mean_matrix
    n, s = network.num_neurons, network.num_synapses
    m, c = network.memory, network.channels
    left, right = int(network.output_neurons[0]), int(network.output_neurons[1])
    phase_np, decision_np = schedule(trials)
    steps = phase_np.shape[0]

    def lifetime(genomes, food):
        neuron_w, synapse_w = network.unflatten(genomes)
        p = ops.shape(genomes)[0]
        e = ops.shape(food)[1]
        phase = ops.convert_to_tensor(phase_np)
        decision = ops.convert_to_tensor(decision_np)
        zeros = ops.zeros((p, e), dtype=genomes.dtype)
        states = (
            ops.zeros((p, e, n, m)),
            ops.zeros((p, e, n, c)),
            ops.zeros((p, e, s, m)),
            ops.zeros((p, e, s, c)),
        )
        pad = ops.zeros((p, e, len(SENSES), c - 1))

        def body(t, carry):
            states, turn, total, turns = carry
            side = food[t][None, :]
            x = ops.concatenate([_senses(phase[t], turn, side, zeros)[..., None], pad], axis=-1)
            states = network_step(
                neuron_w, synapse_w, x, states, pre, post, mean_matrix, population=True
            )
            out = states[1]
            choice = ops.cast(out[:, :, right, 0] > out[:, :, left, 0], genomes.dtype)
            d = decision[t]
            turn = d * choice + (1.0 - d) * turn
            reward = 2.0 * (1.0 - ops.abs(turn - side)) - 1.0
            total = total + d * reward
            turns = turns + d * ops.one_hot(t // len(PHASES), trials)[:, None, None] * turn
            return states, turn, total, turns

        init = (states, zeros, zeros, ops.zeros((trials, p, e)))
        _, _, total, turns = ops.fori_loop(0, steps, body, init)
        return ops.mean(total, axis=1) / trials, turns

    return lifetime


class _Sizes(NamedTuple):
    """The run's sizes, from the flags or the --quick / default / --full preset."""

    generations: int
    population: int
    envs: int
    hidden: int
    memory: int
    channels: int


def _parse_args(argv):
    """The command line: the sizes, the lifetime, the graph density and the ES step."""
    parser = _common.parser(
        __doc__,
        "runs/enu_tmaze",
        quick="smallest run, minutes",
        resume="continue from the checkpoint in --out",
        progress=True,
    )
    parser.add_argument(
        "--full", action="store_true", help="the paper's sizes (512 offspring, 32 envs, 32/16 ENUs)"
    )
    parser.add_argument("--generations", type=int)
    parser.add_argument("--population", type=int)
    parser.add_argument("--envs", type=int)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--memory", type=int)
    parser.add_argument("--channels", type=int)
    parser.add_argument(
        "--density", type=float, default=0.5, help="probability of each node -> neuron synapse"
    )
    parser.add_argument(
        "--sigma", type=float, help="noise std (default 0.02 reduced, the paper's 0.01 with --full)"
    )
    _common.add_learning_rate(parser, 0.003, "the ES step size (default 0.003)")
    parser.add_argument("--momentum", type=float, default=0.9)
    return parser.parse_args(argv)


def _resolve_sizes(args):
    """The sizes of the chosen preset, each overridden by its flag; fills `args.sigma`."""
    # (quick, default, full) sizes
    preset = 2 if args.full else (0 if args.quick else 1)
    pick = lambda value, options: value if value is not None else options[preset]  # noqa: E731
    sizes = _Sizes(
        generations=pick(args.generations, (60, 300, 2000)),
        population=pick(args.population, (64, 128, 512)),
        envs=pick(args.envs, (8, 16, 32)),
        hidden=pick(args.hidden, (2, 4, 8)),
        memory=pick(args.memory, (6, 8, 32)),
        channels=pick(args.channels, (2, 4, 16)),
    )
    args.sigma = args.sigma or (0.01 if args.full else 0.02)
    if args.trials < 6:
        raise ValueError("`--trials` must be at least 6 (the swap needs room).")
    return sizes


def _build_network_and_fitness(args, sizes):
    """The random ENU network and its fitness: the mean reward of a lifetime."""
    if not 0 < args.density <= 1:
        raise ValueError("`--density` must be in (0, 1].")
    network = build_network(sizes.hidden, sizes.memory, sizes.channels, args.density)
    network.build((None, len(SENSES) * sizes.channels))
    # The lifetime returns (mean reward, turns): the reward is the fitness.
    fitness = ENUFitness(
        make_lifetime(network, args.trials), lambda rng: food_sides(rng, sizes.envs, args.trials)
    )
    return network, fitness


def _evolve(network, fitness, args, sizes):
    """Print the setup and run the ES; return the evolved centre, its logbook and wall time."""
    print(
        f"ENU network: {len(SENSES)} sensory nodes, {network.num_neurons} neurons, "
        f"{network.num_synapses} synapses, ENUs {sizes.memory}/{sizes.channels}, "
        f"{network.num_params} evolved parameters; ES: {sizes.population} offspring x "
        f"{sizes.envs} environments x {args.trials} trials, {sizes.generations} generations",
        flush=True,
    )
    es = EvolutionStrategy(
        fitness,
        network.get_flat_weights(),
        population=sizes.population,
        sigma=args.sigma,
        learning_rate=args.learning_rate,
        momentum=args.momentum,
        seed=args.seed,
    )
    start = time.perf_counter()
    try:
        theta = es.run(
            sizes.generations,
            checkpoint_path=os.path.join(args.out, "checkpoint.json"),
            progress=not args.no_progress,
            resume=args.resume,
        )
    except FileExistsError as error:
        sys.exit(f"{error}\n(use --resume, or another --out)")
    return theta, es.logbook, time.perf_counter() - start


def _test_in_new_mazes(fitness, theta, args, test_envs=64):
    """Live the evolved centre's lifetime in `test_envs` new mazes: its mean reward, its
    turns and the food sides `(trials, envs)`, and the share of correct turns per trial."""
    food = food_sides(np.random.default_rng(10_000 + args.seed), test_envs, args.trials)
    reward, turns = fitness.evaluate(theta[None].astype(np.float32), food)
    reward = float(reward[0])
    turns = turns[:, 0]  # (trials, envs)
    food_trials = food[:: len(PHASES)]  # (trials, envs)
    correct = (turns == food_trials).mean(axis=1)
    return reward, turns, food_trials, correct


def _plot_lifetimes(ax, turns, food_trials, trials, show=6):
    """The food side and the agent's turn at every trial of the first `show` test mazes."""
    for k in range(show):
        y = k * 1.5
        ax.step(
            np.arange(trials),
            food_trials[:, k] + y,
            "k--",
            where="mid",
            lw=1,
            label="food side" if k == 0 else None,
        )
        ax.plot(
            np.arange(trials),
            turns[:, k] + y,
            "o",
            color="tab:red",
            ms=5,
            label="evolved agent's turn" if k == 0 else None,
        )
    ax.set_yticks([k * 1.5 + v for k in range(show) for v in (0, 1)])
    ax.set_yticklabels(["L", "R"] * show)
    ax.set_xlabel("trial")
    ax.set_title(f"Lifetimes in {show} test mazes (food and poison swap once)")
    ax.legend(loc="upper right", fontsize=8)


def _save_figure(logbook, turns, food_trials, trials, path):
    """The evolution curves beside the test lifetimes."""
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    axes[0].plot(logbook.select("gen"), logbook.select("mean"), label="mean of offspring")
    axes[0].plot(logbook.select("gen"), logbook.select("max"), alpha=0.6, label="best offspring")
    axes[0].set_xlabel("generation")
    axes[0].set_ylabel("mean reward per trial")
    axes[0].set_title("Evolution")
    axes[0].legend()
    _plot_lifetimes(axes[1], turns, food_trials, trials)
    fig.tight_layout()
    _common.save_figure(fig, path)


def _print_results_table(network, sizes, logbook, reward, correct, sec_per_gen, wall):
    """The network, the ES, the fitness and the test results, one row each."""
    rows = [
        (
            "network",
            f"{network.num_neurons} neurons, {network.num_synapses} synapses, "
            f"ENU {sizes.memory}/{sizes.channels}",
        ),
        ("evolved parameters", f"{network.num_params}"),
        ("offspring x environments", f"{sizes.population} x {sizes.envs}"),
        ("generations", f"{len(logbook)}"),
        ("mean fitness, first generation", f"{logbook[0]['mean']:.4f}"),
        ("mean fitness, last generation", f"{logbook[-1]['mean']:.4f}"),
        ("test reward per trial (64 mazes)", f"{reward:.4f}"),
        ("test correct turns, first / last trial", f"{correct[0]:.2f} / {correct[-1]:.2f}"),
        ("seconds per generation (median)", f"{sec_per_gen:.3f}"),
        ("wall time (s)", f"{wall:.1f}"),
    ]
    _common.print_table(rows, align="ll")


def _result(network, sizes, logbook, reward, sec_per_gen, wall):
    """The JSON headline: fitness, test reward, speed and sizes."""
    return {
        "fitness_first": round(logbook[0]["mean"], 5),
        "fitness_last": round(logbook[-1]["mean"], 5),
        "test_reward": round(reward, 5),
        "seconds_per_generation": round(sec_per_gen, 4),
        "generations": len(logbook),
        "population": sizes.population,
        "envs": sizes.envs,
        "neurons": network.num_neurons,
        "synapses": network.num_synapses,
        "memory": sizes.memory,
        "channels": sizes.channels,
        "params": network.num_params,
        "wall_s": round(wall, 1),
    }


def main(argv=None):
    args = _parse_args(argv)
    sizes = _resolve_sizes(args)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)

    network, fitness = _build_network_and_fitness(args, sizes)
    theta, logbook, wall = _evolve(network, fitness, args, sizes)
    seconds = logbook.select("seconds")[1:] or logbook.select("seconds")
    sec_per_gen = float(np.median(seconds))
    reward, turns, food_trials, correct = _test_in_new_mazes(fitness, theta, args)

    _save_figure(logbook, turns, food_trials, args.trials, os.path.join(args.out, "enu_tmaze.png"))
    _print_results_table(network, sizes, logbook, reward, correct, sec_per_gen, wall)
    result = _result(network, sizes, logbook, reward, sec_per_gen, wall)
    atomic_write_json(os.path.join(args.out, "result.json"), result)
    _common.print_json_line(result)


if __name__ == "__main__":
    main()
