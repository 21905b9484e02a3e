"""The agent format: an evolved AGRN genome, the optimizer base it drives, its card.

An agent is JSON only (loading one never runs code). It holds the format
version, the agent's name, its base optimizer (a name registered in
`keras_neuromod.bases`: ``"sgd"`` for `NmSGD`, ``"adam"`` for `NmAdam`), the
AGRN genome, the hyperparameter ranges and AGRN settings it was evolved with
(among them its input set, `settings["inputs"]`, and its output set,
`settings["outputs"]`: `keras_neuromod.inputs`, `keras_neuromod.outputs`),
its provenance (task, architectures, population, generations, epochs, seed,
final fitness, library version, the exact command that produced it) and its
benchmark results.

`Agent` validates all of it, the ranges with the base's own check against the
agent's output set (`keras_neuromod.bases.Base.check_ranges`), without
building an optimizer.
Files, names and the shipped agents are the zoo's (`keras_neuromod.zoo`).
"""

import dataclasses

from keras_neuromod import _fields
from keras_neuromod import bases
from keras_neuromod import inputs as input_sets
from keras_neuromod import outputs as output_sets
from keras_neuromod.agrn import Genome

__all__ = ["Agent", "AGENT_FORMAT", "MAX_AGENT_STEPS"]

AGENT_FORMAT = "keras_neuromod.agent/1"
# The most AGRN steps an agent file may ask for (`warmup_steps`,
# `grn_steps_per_update`): the optimizers unroll these loops in their train step.
# The shipped agents use 25 and 1.
MAX_AGENT_STEPS = 1000
_SETTINGS = {"warmup_steps": 0, "grn_steps_per_update": 1}  # name -> smallest value
# "inputs" names the agent's input set (`keras_neuromod.inputs`); without it, "paper".
# "outputs" names its output set (`keras_neuromod.outputs`); without it, "paper" for the
# paper's input set and "centred" for any other.
_SET_SETTINGS = ("inputs", "outputs")
_FIELDS = ("format", "name", "base", "genome", "ranges", "settings", "provenance", "benchmark")


@dataclasses.dataclass(frozen=True)
class Agent:
    """An evolved agent and its card.

    Attributes:
        name: the agent's name.
        base: the name of its optimizer base (``"sgd"`` for `NmSGD`,
            ``"adam"`` for `NmAdam`; see `keras_neuromod.bases`).
        genome: the AGRN `Genome`.
        ranges: hyperparameter ranges it was evolved with (None: the defaults).
        settings: AGRN settings (`warmup_steps`, `grn_steps_per_update`;
            `inputs`, the input set of `keras_neuromod.inputs`, without which
            the agent reads the core paper's 13 inputs; and `outputs`, the
            output set of `keras_neuromod.outputs`, without which the agent
            maps its outputs with ``"paper"`` if its input set is ``"paper"``,
            else with ``"centred"``).
        provenance: how it was made (task, architectures, population,
            generations, epochs, seed, final fitness, library version, command).
        benchmark: its measured results (free-form JSON).
    """

    name: str
    base: str
    genome: Genome
    ranges: dict = None
    settings: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)
    benchmark: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(
                f"Agent 'name' must be a non-empty string without '/', got {self.name!r:.80}."
            )
        base = bases.get(self.base, where="Agent 'base'")
        if not isinstance(self.genome, Genome):
            raise ValueError("Agent 'genome' must be a Genome.")
        if not isinstance(self.settings, dict):
            raise ValueError(
                f"Agent 'settings' must be a dict, got {type(self.settings).__name__}."
            )
        outputs = self._checked_io_sets(base)
        if self.ranges is not None:
            try:
                base.check_ranges(self.ranges, outputs=outputs)
            except ValueError as error:
                raise ValueError(f"Agent 'ranges': {error}") from None
        self._check_step_settings()
        for field in ("provenance", "benchmark"):
            if not isinstance(getattr(self, field), dict):
                raise ValueError(f"Agent '{field}' must be a dict.")

    def _checked_io_sets(self, base):
        """Check the input and output sets against the genome; return the output set's name."""
        try:
            input_set = input_sets.get(self.settings.get("inputs", input_sets.LEGACY))
        except ValueError as error:
            raise ValueError(f"Agent 'settings' entry 'inputs': {error}") from None
        if (self.genome.n_inputs, self.genome.n_outputs) != (input_set.size, base.n_outputs):
            raise ValueError(
                f"Agent 'genome' has {self.genome.n_inputs} inputs and {self.genome.n_outputs} "
                f"outputs; an {base.optimizer.__name__} agent of the {input_set.name!r} input "
                f"set needs {input_set.size} and {base.n_outputs}."
            )
        try:
            if "outputs" in self.settings:
                output_sets.get(self.settings["outputs"])
            return base.resolve_outputs(self.settings.get("outputs"), input_set.name)
        except ValueError as error:
            raise ValueError(f"Agent 'settings' entry 'outputs': {error}") from None

    def _check_step_settings(self):
        """Check that `settings` has only known keys and in-range AGRN step counts."""
        known = list(_SETTINGS) + list(_SET_SETTINGS)
        unknown = sorted(set(self.settings) - set(known), key=str)
        if unknown:
            raise ValueError(f"Agent 'settings' has unknown key(s) {unknown}; known: {known}.")
        for key, value in self.settings.items():
            if key not in _SET_SETTINGS:
                _fields.integer(
                    value, f"Agent 'settings' entry {key!r}", _SETTINGS[key], MAX_AGENT_STEPS
                )

    @property
    def output_set(self):
        """The `keras_neuromod.outputs.OutputSet` the agent maps its outputs with.

        Its `settings["outputs"]`, else ``"paper"`` for an agent of the
        paper's input set and ``"centred"`` for any other (the one set of a
        base that declares one).
        """
        inputs = self.settings.get("inputs", input_sets.LEGACY)
        return output_sets.get(
            bases.get(self.base).resolve_outputs(self.settings.get("outputs"), inputs)
        )

    @property
    def reads_horizon(self):
        """Whether the agent's input set reads the training's progress (the
        ``"sensing"`` set): such an agent should be told the horizon
        (`keras_neuromod.callbacks.TrainingHorizon` in `fit`)."""
        inputs = input_sets.get(self.settings.get("inputs", input_sets.LEGACY))
        return "horizon_known" in inputs.names

    def optimizer_class(self):
        """The optimizer class of the agent's base (`NmSGD`, `NmAdam`, ...)."""
        return bases.get(self.base).optimizer

    def optimizer(self, **kwargs):
        """A fresh optimizer driven by this agent, with its ranges and settings."""
        return self.optimizer_class()(agent=self, **kwargs)

    @property
    def card(self):
        """The agent's card: provenance and benchmark results."""
        return {
            "name": self.name,
            "base": self.base,
            "provenance": self.provenance,
            "benchmark": self.benchmark,
        }

    def to_dict(self):
        return {
            "format": AGENT_FORMAT,
            "name": self.name,
            "base": self.base,
            "genome": self.genome.to_dict(),
            "ranges": None if self.ranges is None else {k: list(v) for k, v in self.ranges.items()},
            "settings": dict(self.settings),
            "provenance": dict(self.provenance),
            "benchmark": dict(self.benchmark),
        }

    @classmethod
    def from_dict(cls, data):
        """Validate and build an agent from its JSON form."""
        if not isinstance(data, dict):
            raise ValueError(f"An agent must be a JSON object, got {type(data).__name__}.")
        if data.get("format") != AGENT_FORMAT:
            raise ValueError(
                f"Not an agent file of this format: 'format' is {data.get('format')!r}, "
                f"expected {AGENT_FORMAT!r}."
            )
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"Unknown agent field(s) {unknown}; expected {list(_FIELDS)}.")
        missing = [f for f in ("name", "base", "genome") if f not in data]
        if missing:
            raise ValueError(f"Agent is missing field(s) {missing}.")
        ranges = data.get("ranges")
        if ranges is not None and isinstance(ranges, dict):
            ranges = {k: tuple(v) if isinstance(v, list) else v for k, v in ranges.items()}
        try:
            genome = Genome.from_dict(data["genome"])
        except ValueError as error:
            raise ValueError(f"Agent 'genome': {error}") from None

        def optional(field):
            value = data.get(field)
            return {} if value is None else value

        return cls(
            name=data["name"],
            base=data["base"],
            genome=genome,
            ranges=ranges,
            settings=optional("settings"),
            provenance=optional("provenance"),
            benchmark=optional("benchmark"),
        )
