"""Cue-reward association with neuromodulated plasticity (Backpropamine, Sec. 4.1).

Each episode draws `--cues` random +-1 binary cues of `--cue-bits` bits, one of
which is the rewarded cue, and runs `--steps` time steps of back-to-back trials.
A trial shows half of the cues (in random order, with blank steps in between),
then a "go" signal: the agent must respond (action 1) if the rewarded cue was
among those shown and stay silent (action 0) otherwise. A correct response earns
+1, a wrong one -1, felt as an input at the next step. The cues are new in every
episode, so the association has to be learned within the episode: the network
gets its cue, its previous action and previous reward as inputs and nothing else.
Responding at random (or always the same way) earns 0 per trial on average.

The learner is the official code's advantage actor-critic: a plastic recurrent
core (`PlasticRNNCell`) with a policy head (2 actions) and a value head, trained
by backprop through the whole episode on `-log pi(a) (R - V) + c_v (R - V)^2 -
c_e H(pi)` with discounted returns R. The environment is written in `keras.ops`
inside a wrapping recurrent cell (actions are drawn from pre-sampled uniform
noise), so one episode is one `keras.layers.RNN` call.

Departures from the official settings, chosen because the reduced runs stalled
without them (all switchable): the trace uses the soft bound (`--clip-mode`; a
saturated hard clip passes no gradient), the policy term only counts the
actions taken at "go" steps (`--all-steps` restores the official loss), the
discount is 0 (`--gamma`; official 0.9) and Adam's rate is 3e-3 (official 1e-4
with one episode per update). `--quick` also shrinks the task to 2 cues of 8
bits (one cue shown per trial), 50 units, 16 episodes of 60 steps per update;
without `--quick`: the paper's 4 cues of 20 bits, 100 units, 30 x 100 steps.

The four variants of the paper are compared: `rnn` (plasticity="none"),
`plastic` (plain Hebbian), `simple` and `retroactive` (neuromodulated). Reported
figure: mean reward per trial over the last 10 % of updates (chance = 0, perfect
= 1). Paper's result: the two modulated variants learn, the others stay near 0.

Needs the TensorFlow or JAX backend (the gradient step uses tf.GradientTape or
jax.value_and_grad; the cells themselves are backend-agnostic).

    python examples/cue_reward.py --quick
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import _common  # noqa: E402
from keras_neuromod.io import atomic_write_json  # noqa: E402
from keras_neuromod.layers.plastic import PlasticRNNCell  # noqa: E402

VARIANTS = {"rnn": "none", "plastic": "hebbian", "simple": "simple", "retroactive": "retroactive"}


# ----------------------------------------------------------------------------
# Task: episodes generated in numpy, one batch of independent episodes at once
# ----------------------------------------------------------------------------


def make_episodes(rng, batch, steps, n_cues, cue_bits):
    """Schedule of a batch of episodes, following the official task.

    Returns a float32 array (batch, steps, cue_bits + 5) whose last axis holds
    [cue bits, go, bias, time, target_shown, uniform noise]: the first
    `cue_bits + 3` are what the agent sees; `target_shown` (1 when the rewarded
    cue was shown in the current trial) and the noise used to draw actions are
    read by the environment only.
    """
    x = np.zeros((batch, steps, cue_bits + 5), np.float32)
    x[:, :, cue_bits + 1] = 1.0
    x[:, :, cue_bits + 2] = np.arange(steps) / steps
    x[:, :, cue_bits + 4] = rng.random((batch, steps))
    for b in range(batch):
        while True:  # distinct cues (matters only for tiny cue sizes)
            cues = rng.integers(0, 2, size=(n_cues, cue_bits)) * 2 - 1
            if len({c.tobytes() for c in cues}) == n_cues:
                break
        target = rng.integers(n_cues)
        t = 0
        while t < steps:
            # Trial: blank, half the cues and some blanks shuffled, go, blank.
            length = n_cues // 2 + 3 + rng.integers(n_cues)
            shown = list(rng.permutation(n_cues)[: n_cues // 2])
            middle = shown + [-1] * (length - 3 - len(shown))
            middle = [middle[i] for i in rng.permutation(len(middle))]
            trial = [-1] + middle + [n_cues, -1]
            has_target = float(target in shown)
            for c in trial:
                if t >= steps:
                    break
                if 0 <= c < n_cues:
                    x[b, t, :cue_bits] = cues[c]
                elif c == n_cues:
                    x[b, t, cue_bits] = 1.0
                    x[b, t, cue_bits + 3] = has_target
                t += 1
    return x


# ----------------------------------------------------------------------------
# Agent: plastic core + policy and value heads + environment, as one RNN cell
# ----------------------------------------------------------------------------


class AgentCell(keras.layers.Layer):
    """One environment step: observe, act, get the reward of a response.

    State: [previous reward (1), previous action one-hot (2)] + the core's
    state. Output per step: [log pi(action), value, reward, entropy, go].
    """

    def __init__(self, core, cue_bits, **kwargs):
        super().__init__(**kwargs)
        self.core = core
        self.cue_bits = cue_bits
        self.policy = keras.layers.Dense(2, name="policy")
        self.value = keras.layers.Dense(1, name="value")
        sizes = core.state_size
        self.state_size = [1, 2] + (list(sizes) if isinstance(sizes, list) else [sizes])
        self.output_size = 5

    def build(self, input_shape):
        n_obs = self.cue_bits + 3 + 3
        self.core.build((None, n_obs))
        self.policy.build((None, self.core.units))
        self.value.build((None, self.core.units))

    def call(self, inputs, states, training=False):
        k = self.cue_bits
        prev_reward, prev_action, core_states = states[0], states[1], states[2:]
        obs = ops.concatenate([inputs[:, : k + 3], prev_reward, prev_action], axis=-1)
        h, core_states = self.core(obs, list(core_states))
        logp_all = ops.log_softmax(self.policy(h), axis=-1)
        value = self.value(h)
        go, target, noise = inputs[:, k : k + 1], inputs[:, k + 3 : k + 4], inputs[:, k + 4 :]
        p_respond = ops.exp(logp_all[:, 1:2])
        action = ops.stop_gradient(ops.cast(noise < p_respond, "float32"))
        logp = action * logp_all[:, 1:2] + (1.0 - action) * logp_all[:, 0:1]
        correct = action * target + (1.0 - action) * (1.0 - target)
        reward = go * (2.0 * correct - 1.0)
        entropy = -ops.sum(ops.exp(logp_all) * logp_all, axis=-1, keepdims=True)
        one_hot = ops.concatenate([1.0 - action, action], axis=-1)
        out = ops.concatenate([logp, value, reward, entropy, go], axis=-1)
        return out, [reward, one_hot] + list(core_states)


def build_agent(variant, units, cue_bits, steps, seed, clip_mode="soft"):
    keras.utils.set_random_seed(seed)
    core = PlasticRNNCell(units, plasticity=VARIANTS[variant], clip_mode=clip_mode, name="core")
    inputs = keras.Input((steps, cue_bits + 5))
    outputs = keras.layers.RNN(AgentCell(core, cue_bits), return_sequences=True)(inputs)
    return keras.Model(inputs, outputs)


def a2c_loss(out, gamma, value_coef, entropy_coef, all_steps=False):
    """The official code's A2C loss, averaged over batch and time.

    Only the action at a "go" step earns or loses reward; by default the policy
    and entropy terms are restricted to those steps (the official code trains
    on the actions of all steps, which only adds noise to the gradient).
    """
    logp, value, reward, entropy, go = (out[:, :, i] for i in range(5))
    steps = out.shape[1]
    ret, returns = ops.zeros_like(reward[:, 0]), []
    for t in reversed(range(steps)):
        ret = gamma * ret + reward[:, t]
        returns.append(ret)
    returns = ops.stack(returns[::-1], axis=1)
    adv = returns - value
    policy = -logp * ops.stop_gradient(adv) - entropy_coef * entropy
    if not all_steps:
        policy = policy * go
    return ops.mean(policy + value_coef * adv**2)


def _tensorflow_train_step(model, optimizer, loss_of):
    """A `tf.function` training step: one Adam step on a batch, returning its rewards."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(x):
        with tf.GradientTape() as tape:
            out = model(x)
            loss = loss_of(out)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return out[:, :, 2]

    return lambda x: np.asarray(step(x))


def _jax_train_step(model, optimizer, loss_of):
    """A jitted stateless training step that keeps the variables in a dict; its `sync()`
    writes the trained values back into the model."""
    import jax

    def loss_fn(tv, ntv, x):
        out, ntv = model.stateless_call(tv, ntv, x)
        return loss_of(out), out[:, :, 2]

    @jax.jit
    def step(tv, ntv, ov, x):
        (_, rewards), grads = jax.value_and_grad(loss_fn, has_aux=True)(tv, ntv, x)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        return tv, ov, rewards

    state = {
        "tv": [v.value for v in model.trainable_variables],
        "ntv": [v.value for v in model.non_trainable_variables],
        "ov": [v.value for v in optimizer.variables],
    }

    def run(x):
        state["tv"], state["ov"], rewards = step(state["tv"], state["ntv"], state["ov"], x)
        return np.asarray(rewards)

    def sync():
        for v, value in zip(model.trainable_variables, state["tv"]):
            v.assign(value)

    run.sync = sync
    return run


def make_train_step(model, optimizer, args):
    """A compiled training step for the TensorFlow or JAX backend."""
    backend = keras.backend.backend()

    def loss_of(out):
        return a2c_loss(out, args.gamma, args.value_coef, args.entropy_coef, args.all_steps)

    optimizer.build(model.trainable_variables)
    if backend == "tensorflow":
        return _tensorflow_train_step(model, optimizer, loss_of)
    if backend == "jax":
        return _jax_train_step(model, optimizer, loss_of)
    raise SystemExit(f"cue_reward.py needs the tensorflow or jax backend, not {backend}.")


def train_variant(variant, seed, args, log):
    rng = np.random.default_rng(seed)
    model = build_agent(variant, args.units, args.cue_bits, args.steps, seed, args.clip_mode)
    optimizer = keras.optimizers.Adam(args.learning_rate, clipnorm=args.clipnorm)
    step = make_train_step(model, optimizer, args)
    curve = []
    start = time.time()
    for update in range(args.updates):
        x = make_episodes(rng, args.batch, args.steps, args.cues, args.cue_bits)
        rewards = step(x)
        n_trials = np.maximum(x[:, :, args.cue_bits].sum(), 1.0)
        curve.append(float(rewards.sum() / n_trials))
        if (update + 1) % args.print_every == 0:
            recent = np.mean(curve[-args.print_every :])
            log(
                f"  {variant:12s} seed {seed} update {update + 1:5d}  "
                f"reward/trial {recent:+.3f}  ({time.time() - start:.0f} s)"
            )
    return np.array(curve), time.time() - start


def smooth(y, window):
    window = max(1, min(window, len(y)))
    return np.convolve(y, np.ones(window) / window, mode="valid")


def plot(curves, path, window):
    fig, ax = _common.pyplot().subplots(figsize=(7, 4.2))
    colors = {
        "rnn": "tab:gray",
        "plastic": "tab:blue",
        "simple": "tab:orange",
        "retroactive": "tab:red",
    }
    for variant, runs in curves.items():
        sm = np.array([smooth(c, window) for c in runs])
        x = np.arange(sm.shape[1]) + window
        ax.plot(x, sm.mean(0), color=colors[variant], label=variant, lw=2)
        ax.fill_between(x, sm.min(0), sm.max(0), color=colors[variant], alpha=0.15)
    ax.axhline(0.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("update (batch of episodes)")
    ax.set_ylabel(f"reward per trial (moving mean, {window} updates)")
    ax.set_title("Cue-reward association: mean over seeds, band = min..max")
    ax.legend(loc="upper left")
    fig.tight_layout()
    _common.save_figure(fig, path, dpi=120)


def _parser():
    """The command line: seeds and variants, the task's sizes, and the A2C training."""
    p = _common.parser(
        __doc__,
        "runs/cue_reward",
        quick="reduced run (minutes on 2 cores)",
        seed_help="first seed (default 0)",
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds per variant")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--units", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="time steps per episode")
    p.add_argument("--updates", type=int, default=None)
    p.add_argument("--cues", type=int, default=None)
    p.add_argument("--cue-bits", type=int, default=None)
    _common.add_learning_rate(p, 3e-3, "Adam learning rate (default 0.003)")
    p.add_argument(
        "--clip-mode",
        choices=["hard", "soft"],
        default="soft",
        help="trace bound; a saturated hard clip passes no gradient and "
        "stalled every variant in our runs",
    )
    p.add_argument("--clipnorm", type=float, default=10.0)
    p.add_argument(
        "--gamma",
        type=float,
        default=0.0,
        help="reward discount (official 0.9; 0 gives each response "
        "its own reward, a lower-variance signal)",
    )
    p.add_argument("--value-coef", type=float, default=0.1)
    p.add_argument("--entropy-coef", type=float, default=0.03)
    p.add_argument(
        "--all-steps",
        action="store_true",
        help="policy loss on every step's action, as the official code",
    )
    p.add_argument("--print-every", type=int, default=25)
    return p


def _parse_args(argv):
    """The parsed flags, the sizes left unset filled from --quick, and the variants."""
    p = _parser()
    args = p.parse_args(argv)
    # Paper scale: 200 units, 20-bit cues, 200 steps. Defaults here are the
    # reduced task; --quick shrinks it further to fit about 15 minutes.
    defaults = (
        dict(units=50, batch=16, steps=60, updates=800, cues=2, cue_bits=8, seeds=2)
        if args.quick
        else dict(units=100, batch=30, steps=100, updates=3000, cues=4, cue_bits=20, seeds=3)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r}; choose from {list(VARIANTS)}")
    return args, variants


def _train_all(variants, args, tail, log):
    """Train every variant at every seed: the reward curves, the final rewards (mean of
    the last `tail` updates) and the training seconds per variant."""
    curves, finals, times = {}, {}, {}
    for variant in variants:
        curves[variant], finals[variant], times[variant] = [], [], 0.0
        for seed in range(args.seed, args.seed + args.seeds):
            curve, seconds = train_variant(variant, seed, args, log)
            curves[variant].append(curve)
            finals[variant].append(float(curve[-tail:].mean()))
            times[variant] += seconds
            keras.backend.clear_session()
    return curves, finals, times


def _print_results_table(variants, finals, times, tail):
    """One row per variant: its plasticity and its final reward per trial over the seeds."""
    _common.print_table(
        [
            (
                v,
                VARIANTS[v],
                f"{np.mean(finals[v]):+.3f}",
                f"{np.std(finals[v]):.3f}",
                " ".join(f"{r:+.3f}" for r in finals[v]),
                f"{times[v]:.0f} s",
            )
            for v in variants
        ],
        headers=("variant", "plasticity", "mean", "std", "per seed", "time"),
        align="llrrlr",
        title=f"Final reward per trial (mean of the last {tail} updates; chance 0, perfect 1)",
    )


def main(argv=None):
    args, variants = _parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(
        f"backend {keras.backend.backend()}; units {args.units}, batch {args.batch}, "
        f"steps {args.steps}, updates {args.updates}, cues {args.cues}x{args.cue_bits} bits, "
        f"seeds {args.seed}..{args.seed + args.seeds - 1}"
    )

    tail = max(1, args.updates // 10)
    curves, finals, times = _train_all(variants, args, tail, log)

    figure = os.path.join(args.out, "reward_curves.png")
    plot(curves, figure, window=max(5, args.updates // 20))
    summary = {v: round(float(np.mean(finals[v])), 4) for v in variants}
    atomic_write_json(
        os.path.join(args.out, "results.json"),
        {
            "args": vars(args),
            "final_reward_per_trial": finals,
            "summary": summary,
            "curves": {v: [c.tolist() for c in curves[v]] for v in variants},
            "seconds": times,
        },
    )
    _print_results_table(variants, finals, times, tail)
    log(f"figure: {figure}")
    _common.print_json_line(summary)


if __name__ == "__main__":
    main()
