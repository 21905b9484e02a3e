"""Independent float64 numpy implementations of the project's equations.

Written protein by protein and tensor by tensor from docs/design.md,
sharing no code with the package, so that tests compare two implementations.
"""

import numpy as np


class ReferenceAGRN:
    """One AGRN copy in float64, with explicit loops and synchronous steps."""

    def __init__(self, genome):
        self.genome = genome
        n_in, n_out, size = genome.n_inputs, genome.n_outputs, genome.size
        self.regulators = list(range(n_in)) + list(range(n_in + n_out, size))
        self.updated = list(range(n_in, size))
        self.signature = np.zeros((size, size))
        for j in range(size):
            for k in range(size):
                self.signature[j, k] = np.exp(
                    -genome.beta * abs(genome.enhancers[j] - genome.identifiers[k])
                ) - np.exp(-genome.beta * abs(genome.inhibitors[j] - genome.identifiers[k]))
        self.reset()

    def reset(self):
        size = self.genome.size
        self.c = np.full(size, 1.0 / size)
        self.c[: self.genome.n_inputs] = 0.0

    def step(self):
        c, g = self.c, self.genome
        new = c.copy()
        for k in self.updated:
            total = sum(c[j] * self.signature[j, k] for j in self.regulators)
            new[k] = max(0.0, c[k] + g.delta / g.size * total)
        norm = sum(new[k] for k in self.updated)
        if norm > 0:
            for k in self.updated:
                new[k] /= norm
        self.c = new

    def set_inputs(self, x):
        self.c[: self.genome.n_inputs] = x

    @property
    def outputs(self):
        n_in = self.genome.n_inputs
        return self.c[n_in : n_in + self.genome.n_outputs].copy()


def reference_run(genome, inputs, warmup_steps=25, steps_per_input=1):
    """Outputs [T, copies, n_outputs] of independent copies driven by `inputs`."""
    steps, copies = inputs.shape[:2]
    out = np.zeros((steps, copies, genome.n_outputs))
    for copy in range(copies):
        grn = ReferenceAGRN(genome)
        for _ in range(warmup_steps):
            grn.step()
        for t in range(steps):
            grn.set_inputs(inputs[t, copy])
            for _ in range(steps_per_input):
                grn.step()
            out[t, copy] = grn.outputs
    return out


def hyperparameter(a, b, lo, hi, scale):
    """The value of one hyperparameter from its two output proteins.

    `scale` is "linear", "log" (log x interpolated) or "complement_log"
    (log(1 - x) interpolated).
    """
    d = (a - b) / (a + b) if a + b > 0 else 0.0
    return scaled(lo, hi, scale, (d + 1.0) / 2.0)


def scaled(lo, hi, scale, fraction):
    """The value at `fraction` of [lo, hi] on `scale`, in float64."""
    if lo == hi:
        return lo
    if scale == "log":
        return float(np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * fraction))
    if scale == "complement_log":
        gap = np.exp(np.log(1.0 - lo) + (np.log(1.0 - hi) - np.log(1.0 - lo)) * fraction)
        return float(1.0 - gap)
    assert scale == "linear", scale
    return lo + (hi - lo) * fraction


def clipped_stat(x):
    return 1.0 if not np.isfinite(x) else min(max(x, 0.0), 1.0)


def tensor_inputs(layers):
    """The 13 AGRN inputs of every tensor.

    `layers` is a list, in model order, of dicts {kind: (weight, gradient)} with
    kind 'kernel' or 'bias'. Returns a dict {(layer, kind): inputs[13]}.
    """
    sizes = [sum(w.size for w, _ in layer.values()) for layer in layers]
    count = len(layers)
    own = {}
    for index, layer in enumerate(layers):
        for kind, (w, g) in layer.items():
            aw, ag = np.abs(w.astype(np.float64)), np.abs(g.astype(np.float64))
            own[(index, kind)] = [
                index / (count - 1) if count > 1 else 0.0,
                sizes[index] / max(sizes),
                clipped_stat(aw.mean()),
                clipped_stat(aw.std()),
                clipped_stat(ag.mean()),
                clipped_stat(ag.std()),
            ]
    result = {}
    for (index, kind), values in own.items():
        following = own.get((index + 1, kind), [0.0] * 6)
        result[(index, kind)] = np.array(values + following + [1.0])
    return result
