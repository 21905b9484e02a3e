"""The artificial gene regulatory network (AGRN).

An AGRN is a set of proteins, each with three tags in [0, 1] (identifier,
enhancer, inhibitor). Proteins regulate one another by how well their enhancer
and inhibitor tags match the identifiers of the others. Input proteins are
written from outside; output proteins are read out; regulatory proteins carry
the internal dynamics.

This module holds:

* `Genome`: the plain-data description of one AGRN (numpy arrays, JSON on disk),
  validated on construction and on load, with at most `MAX_PROTEINS` proteins.
* The dynamics written with `keras.ops` (`grn_matrices`, `grn_reset`,
  `grn_step`, `grn_run_steps`), batched over copies that share one genome and padded
  to a fixed protein count, so that one compiled graph serves genomes of any
  size. The optimizers run exactly these functions inside their train step.
* `run`: drive an AGRN with a sequence of inputs and read its outputs, through
  the same batched code.

The dynamics, for every output and regulatory protein k at once, from the old
state (synchronous):

    c'_k = max(0, c_k + (delta / N) sum_j c_j (exp(-beta |enh_j - id_k|)
                                             - exp(-beta |inh_j - id_k|)))

over the input and regulatory proteins j, followed by dividing the output and
regulatory concentrations by their sum. This is the AGRN of Wilson,
Cussat-Blanc, Luga and Harrington, "Neuromodulated Learning in Deep Neural
Networks" (2018), as the public pyGRN library computes it, less pyGRN's
in-place (Gauss-Seidel) update; the repository's `docs/design.md` gives the
constants and their sources.
"""

import json

import numpy as np
from keras import ops

from keras_neuromod import _fields
from keras_neuromod.io import MAX_AGENT_BYTES
from keras_neuromod.io import parse_json

__all__ = [
    "Genome",
    "PackedGenome",
    "pack",
    "grn_matrices",
    "grn_reset",
    "grn_step",
    "grn_run_steps",
    "run",
    "BETA_RANGE",
    "DELTA_RANGE",
    "MAX_PROTEINS",
]

BETA_RANGE = (0.05, 2.0)
DELTA_RANGE = (0.05, 2.0)

# The most proteins an AGRN may have (inputs + outputs + regulatory), in a genome
# and in the padded capacity of the optimizers (`max_regulatory`). The dynamics
# build [P, P] matrices, so P is bounded before anything is allocated: at 1024 they
# take 4 MiB each. GRNEAT's default `max_regulatory` is 32 (53 proteins with an
# Nm-Adam agent's 13 inputs and 8 outputs) and the shipped agents have 18 and 9
# regulatory proteins, so the cap is about 20 times what evolution uses.
MAX_PROTEINS = 1024

_COUNT_FIELDS = ("n_inputs", "n_outputs", "n_regulatory")
_TAG_FIELDS = ("identifiers", "enhancers", "inhibitors")
_SCALAR_FIELDS = ("beta", "delta")
_FIELDS = _COUNT_FIELDS + _TAG_FIELDS + _SCALAR_FIELDS


def _where(name):
    return f"Genome field '{name}'"


def _check_count(name, value, minimum):
    """A protein count: an int (not a float such as `13.0`, not a bool) >= `minimum`."""
    return _fields.integer(value, _where(name), minimum=minimum)


def _check_size(n_inputs, n_outputs, n_regulatory):
    size = n_inputs + n_outputs + n_regulatory
    if size > MAX_PROTEINS:
        raise ValueError(
            f"The genome would have {size} proteins (n_inputs {n_inputs} + n_outputs "
            f"{n_outputs} + n_regulatory {n_regulatory}), more than the "
            f"{MAX_PROTEINS} an AGRN may have (keras_neuromod.agrn.MAX_PROTEINS)."
        )
    return size


def _check_tags(name, value, length):
    """A list of `length` finite numbers in [0, 1], as a read-only float64 array."""
    if isinstance(value, (list, tuple)) and len(value) != length:
        # (before converting: a huge list is refused without copying it)
        raise ValueError(
            f"{_where(name)} has {len(value)} values but the protein "
            f"counts (n_inputs + n_outputs + n_regulatory) add up to {length}."
        )
    array = _fields.unit_array(value, _where(name))
    if array.shape[0] != length:
        raise ValueError(
            f"{_where(name)} has {array.shape[0]} values but the protein "
            f"counts (n_inputs + n_outputs + n_regulatory) add up to {length}."
        )
    array.setflags(write=False)
    return array


def _check_scalar(name, value, bounds):
    """A finite number within `bounds` (inclusive), as a float."""
    return _fields.number(value, _where(name), *bounds)


class Genome:
    """The genome of an artificial gene regulatory network.

    Proteins are ordered inputs, then outputs, then regulatory proteins. All
    values are validated on construction: a bad genome raises `ValueError`
    naming the field; nothing is clipped silently. A genome has at most
    `MAX_PROTEINS` proteins; the counts are checked before the tags are read.
    A `Genome` is immutable (its arrays are read-only); the evolution operators build new ones.

    Args:
        n_inputs: number of input proteins.
        n_outputs: number of output proteins (at least 1).
        n_regulatory: number of regulatory proteins (may be 0).
        identifiers: identifier tag of every protein, in [0, 1].
        enhancers: enhancer tag of every protein, in [0, 1].
        inhibitors: inhibitor tag of every protein, in [0, 1].
        beta: match steepness, in [0.05, 2].
        delta: step size of the dynamics, in [0.05, 2].

    Example:

    >>> import numpy as np
    >>> g = Genome.random(13, 8, n_regulatory=4, rng=np.random.default_rng(0))
    >>> Genome.from_json(g.to_json()) == g
    True
    """

    __slots__ = _FIELDS

    def __init__(
        self,
        n_inputs,
        n_outputs,
        n_regulatory,
        identifiers,
        enhancers,
        inhibitors,
        beta,
        delta,
    ):
        set_ = object.__setattr__
        set_(self, "n_inputs", _check_count("n_inputs", n_inputs, 0))
        set_(self, "n_outputs", _check_count("n_outputs", n_outputs, 1))
        set_(self, "n_regulatory", _check_count("n_regulatory", n_regulatory, 0))
        size = _check_size(self.n_inputs, self.n_outputs, self.n_regulatory)
        set_(self, "identifiers", _check_tags("identifiers", identifiers, size))
        set_(self, "enhancers", _check_tags("enhancers", enhancers, size))
        set_(self, "inhibitors", _check_tags("inhibitors", inhibitors, size))
        set_(self, "beta", _check_scalar("beta", beta, BETA_RANGE))
        set_(self, "delta", _check_scalar("delta", delta, DELTA_RANGE))

    def __setattr__(self, name, value):
        raise AttributeError("Genome is immutable; build a new one instead.")

    @property
    def size(self):
        """Total protein count N."""
        return self.n_inputs + self.n_outputs + self.n_regulatory

    @property
    def tags(self):
        """The tags as one array shaped [3, N] (identifiers, enhancers, inhibitors)."""
        return np.stack([self.identifiers, self.enhancers, self.inhibitors])

    @classmethod
    def random(cls, n_inputs, n_outputs, n_regulatory=1, rng=None):
        """Draw a genome with uniform tags, beta and delta.

        Args:
            n_inputs: number of input proteins.
            n_outputs: number of output proteins.
            n_regulatory: number of regulatory proteins.
            rng: a `numpy.random.Generator`, or an int seed. `None` draws
                fresh entropy (not reproducible).
        """
        size = _check_size(
            _check_count("n_inputs", n_inputs, 0),
            _check_count("n_outputs", n_outputs, 1),
            _check_count("n_regulatory", n_regulatory, 0),
        )
        rng = np.random.default_rng(rng)
        tags = rng.random((3, size))
        beta = rng.uniform(*BETA_RANGE)
        delta = rng.uniform(*DELTA_RANGE)
        return cls(n_inputs, n_outputs, n_regulatory, *tags, beta, delta)

    def replace(self, **changes):
        """Return a copy with some fields changed (validated again)."""
        fields = {name: getattr(self, name) for name in _FIELDS}
        unknown = set(changes) - set(fields)
        if unknown:
            raise ValueError(f"Unknown genome field(s): {sorted(unknown)}.")
        fields.update(changes)
        return Genome(**fields)

    def to_dict(self):
        """The genome as a JSON-ready dict of plain Python values."""
        out = {name: getattr(self, name) for name in _COUNT_FIELDS}
        out.update({name: getattr(self, name).tolist() for name in _TAG_FIELDS})
        out.update({name: getattr(self, name) for name in _SCALAR_FIELDS})
        return out

    @classmethod
    def from_dict(cls, data):
        """Build a genome from `to_dict()` output, validating every field."""
        if not isinstance(data, dict):
            raise ValueError(f"A genome must be a JSON object (dict), got {type(data).__name__}.")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(
                f"Unknown genome field(s) {unknown}; expected exactly {list(_FIELDS)}."
            )
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise ValueError(f"Genome is missing field(s) {missing}.")
        return cls(**{name: data[name] for name in _FIELDS})

    def to_json(self, indent=None):
        """The genome as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text):
        """Parse and validate a genome from a JSON string.

        A text longer than `keras_neuromod.io.MAX_AGENT_BYTES`, or holding
        `NaN`, `Infinity` or numbers that overflow a float, is refused.
        """
        return cls.from_dict(parse_json(text, what="genome JSON", max_bytes=MAX_AGENT_BYTES))

    def __eq__(self, other):
        if not isinstance(other, Genome):
            return NotImplemented
        return all(np.array_equal(getattr(self, name), getattr(other, name)) for name in _FIELDS)

    def __hash__(self):
        return hash(self.to_json())

    def __repr__(self):
        return (
            f"Genome(n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, "
            f"n_regulatory={self.n_regulatory}, beta={self.beta:.4g}, "
            f"delta={self.delta:.4g})"
        )

    def __reduce__(self):
        return (_genome_from_dict, (self.to_dict(),))


def _genome_from_dict(data):
    return Genome.from_dict(data)


class PackedGenome:
    """A genome laid out in fixed-size arrays for the batched dynamics.

    The proteins are padded to `capacity` with inactive proteins. Their
    concentration is 0 at reset and stays 0, they regulate nothing, and they are
    excluded from N and from the normalisation: padding changes nothing.

    Attributes:
        tags: float32 array [3, capacity] (identifiers, enhancers, inhibitors).
        active: float32 array [capacity], 1 for real proteins, 0 for padding.
        beta, delta: float32 scalars.
        n_inputs, n_outputs, capacity: ints.
    """

    __slots__ = ("tags", "active", "beta", "delta", "n_inputs", "n_outputs", "capacity")

    def __init__(self, tags, active, beta, delta, n_inputs, n_outputs):
        self.tags = tags
        self.active = active
        self.beta = beta
        self.delta = delta
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self.capacity = active.shape[0]


def pack(genome, capacity=None):
    """Pad a genome to `capacity` proteins (default: its own size).

    The input and output proteins keep their positions; regulatory proteins
    follow; the rest is padding. The capacity may not exceed `MAX_PROTEINS`
    (the optimizers ask for `13 + n_outputs + max_regulatory`).
    """
    if capacity is None:
        capacity = genome.size
    elif not _fields.is_integer(capacity):
        raise ValueError(f"The AGRN capacity must be an integer, got {capacity!r:.80}.")
    capacity = int(capacity)
    if capacity > MAX_PROTEINS:
        raise ValueError(
            f"An AGRN capacity of {capacity} proteins ({genome.n_inputs} inputs + "
            f"{genome.n_outputs} outputs + max_regulatory "
            f"{capacity - genome.n_inputs - genome.n_outputs}) exceeds "
            f"keras_neuromod.agrn.MAX_PROTEINS = {MAX_PROTEINS}: max_regulatory may be "
            f"at most {MAX_PROTEINS - genome.n_inputs - genome.n_outputs}."
        )
    if capacity < genome.size:
        raise ValueError(
            f"The genome has {genome.size} proteins ({genome.n_regulatory} "
            f"regulatory), more than the capacity of {capacity}. Raise the "
            "capacity (max_regulatory) or use a smaller genome."
        )
    tags = np.zeros((3, capacity), np.float32)
    tags[:, : genome.size] = genome.tags
    active = np.zeros((capacity,), np.float32)
    active[: genome.size] = 1.0
    return PackedGenome(
        tags,
        active,
        np.float32(genome.beta),
        np.float32(genome.delta),
        genome.n_inputs,
        genome.n_outputs,
    )


def grn_matrices(tags, active, beta, delta, n_inputs, n_outputs):
    """The regulation matrix and the mask of updated proteins.

    With `S[j, k] = exp(-beta |enh_j - id_k|) - exp(-beta |inh_j - id_k|)`, the
    returned `W[j, k] = (delta / N) S[j, k]` where j is an active input or
    regulatory protein and k an active output or regulatory protein, and 0
    elsewhere. One synchronous step is then `C + C @ W`.

    Args:
        tags: tensor [3, P] of identifiers, enhancers, inhibitors.
        active: tensor [P], 1 for real proteins and 0 for padding.
        beta, delta: scalar tensors.
        n_inputs, n_outputs: Python ints (fixed layout of the first proteins).

    Returns:
        `(W, updatable)`: W is [P, P]; `updatable` is [P], 1 for the active
        output and regulatory proteins.
    """
    tags = ops.convert_to_tensor(tags, "float32")
    active = ops.convert_to_tensor(active, "float32")
    identifiers, enhancers, inhibitors = tags[0], tags[1], tags[2]
    enhance = ops.exp(-beta * ops.abs(enhancers[:, None] - identifiers[None, :]))
    inhibit = ops.exp(-beta * ops.abs(inhibitors[:, None] - identifiers[None, :]))
    capacity = active.shape[0]
    index = np.arange(capacity)
    is_input = ops.convert_to_tensor((index < n_inputs).astype("float32"))
    is_output = ops.convert_to_tensor(
        ((index >= n_inputs) & (index < n_inputs + n_outputs)).astype("float32")
    )
    regulator = active * (1.0 - is_output)
    updatable = active * (1.0 - is_input)
    count = ops.maximum(ops.sum(active), 1.0)
    scale = delta / count
    weights = scale * (enhance - inhibit) * regulator[:, None] * updatable[None, :]
    return weights, updatable


def grn_reset(active, n_inputs, copies):
    """The reset state of `copies` copies: every active protein at 1/N, inputs 0.

    Returns a tensor [copies, P]. Inputs are at 0, as the warm-up wants them;
    `grn_set_inputs` writes real inputs later.
    """
    active = ops.convert_to_tensor(active, "float32")
    count = ops.maximum(ops.sum(active), 1.0)
    capacity = active.shape[0]
    not_input = ops.convert_to_tensor((np.arange(capacity) >= n_inputs).astype("float32"))
    row = active * not_input / count
    return ops.broadcast_to(row[None, :], (copies, capacity))


def grn_set_inputs(state, inputs):
    """Write `inputs` [copies, n_inputs] into the first columns of `state`."""
    n_inputs = inputs.shape[-1]
    return ops.concatenate([ops.cast(inputs, state.dtype), state[:, n_inputs:]], axis=-1)


def grn_step(state, weights, updatable):
    """One synchronous AGRN step for every copy (row) of `state`.

    `C' = relu(C + C @ W)`; the output and regulatory proteins of each row are
    then divided by their sum, unless that sum is 0 (the row is then left as
    computed). Input columns are untouched because W is 0 on them.
    """
    new = ops.relu(state + ops.matmul(state, weights))
    total = ops.sum(new * updatable, axis=-1, keepdims=True)
    positive = total > 0.0
    safe_total = ops.where(positive, total, ops.ones_like(total))
    scale = ops.where(positive, 1.0 / safe_total, ops.ones_like(total))
    factor = updatable * scale + (1.0 - updatable)
    return new * factor


def grn_run_steps(state, weights, updatable, steps):
    """Run `steps` AGRN steps (a Python int) on `state` and return the new state.

    Used both for the warm-up after a reset and for the steps run after each
    input is written.

    The loop is unrolled: the step counts used here are small (a few dozen at
    most), and an unrolled loop neither retraces nor recompiles when called
    eagerly under JAX, where a `fori_loop` with a fresh body would.
    """
    for _ in range(int(steps)):
        state = grn_step(state, weights, updatable)
    return state


def run(genome, inputs, warmup_steps=25, steps_per_input=1, capacity=None):
    """Drive copies of one AGRN with a sequence of inputs.

    The AGRN is reset (every protein at 1/N), warmed up with its inputs at 0,
    then for each time step the inputs are written and `steps_per_input`
    synchronous steps are run. This goes through the same batched `keras.ops`
    code that the neuromodulated optimizers run in their train step.

    Args:
        genome: a `Genome`.
        inputs: array [T, copies, n_inputs] with values in [0, 1].
        warmup_steps: steps run with inputs at 0 before the first input.
        steps_per_input: steps run after each input is written.
        capacity: pad the genome to this many proteins (default: no padding).

    Returns:
        numpy array [T, copies, n_outputs]: the output concentrations after
        each input.
    """
    if not isinstance(genome, Genome):
        raise TypeError(f"run() expects a Genome, got {type(genome).__name__}.")
    inputs = np.asarray(inputs, dtype=np.float64)
    if inputs.ndim != 3 or inputs.shape[-1] != genome.n_inputs:
        raise ValueError(
            f"inputs must be shaped [T, copies, {genome.n_inputs}], got {inputs.shape}."
        )
    if not np.all(np.isfinite(inputs)) or inputs.min(initial=0) < 0 or inputs.max(initial=0) > 1:
        raise ValueError("AGRN inputs must be finite and lie in [0, 1].")
    _fields.integer(warmup_steps, "warmup_steps")
    _fields.integer(steps_per_input, "steps_per_input")
    packed = pack(genome, capacity)
    weights, updatable = grn_matrices(
        packed.tags,
        packed.active,
        packed.beta,
        packed.delta,
        packed.n_inputs,
        packed.n_outputs,
    )
    steps, copies = inputs.shape[0], inputs.shape[1]
    state = grn_reset(packed.active, packed.n_inputs, copies)
    state = grn_run_steps(state, weights, updatable, warmup_steps)
    start, stop = genome.n_inputs, genome.n_inputs + genome.n_outputs
    outputs = []
    for t in range(steps):
        state = grn_set_inputs(state, ops.convert_to_tensor(inputs[t], "float32"))
        state = grn_run_steps(state, weights, updatable, steps_per_input)
        outputs.append(state[:, start:stop])
    if not outputs:
        return np.zeros((0, copies, genome.n_outputs), np.float32)
    return ops.convert_to_numpy(ops.stack(outputs))
