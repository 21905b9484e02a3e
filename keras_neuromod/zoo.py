"""The agent zoo: evolved neuromodulatory agents, shared like trained models.

An agent file is JSON only (loading one never runs code). It holds the format
version, the agent's name, its base optimizer (``"sgd"`` or ``"adam"``), the
AGRN genome, the hyperparameter ranges and AGRN settings it was evolved with,
its provenance (task, architectures, population, generations, epochs, seed,
final fitness, library version, the exact command that produced it) and its
benchmark results.

The shipped agents live in the `zoo/` folder of the source tree, listed in
`zoo/index.json` with the sha256 of each file; loading a shipped agent checks
it and refuses a modified or truncated file. Another folder can be used as a
zoo with the `KERAS_NEUROMOD_ZOO` environment variable or the `zoo_dir`
argument.

    from keras_neuromod import zoo, NmAdam
    zoo.list_agents()                       # the shipped agents
    agent = zoo.load("nm_adam_digits")      # .genome, .base, .ranges, .card
    NmAdam(agent="nm_adam_digits")          # the same, by name
"""

import dataclasses
import hashlib
import os

from keras_neuromod.agrn import Genome
from keras_neuromod.io import atomic_write_json
from keras_neuromod.io import read_json

__all__ = ["Agent", "load", "save", "list_agents", "directory", "write_index",
           "record_benchmark", "AGENT_FORMAT", "INDEX_FORMAT"]

AGENT_FORMAT = "keras_neuromod.agent/1"
INDEX_FORMAT = "keras_neuromod.zoo-index/1"
_BASES = {"sgd": 4, "adam": 8}
_SETTINGS = ("warmup_steps", "grn_steps_per_update")
_FIELDS = ("format", "name", "base", "genome", "ranges", "settings", "provenance", "benchmark")


def directory(zoo_dir=None):
    """The zoo folder: `zoo_dir`, else `$KERAS_NEUROMOD_ZOO`, else the source tree's `zoo/`."""
    if zoo_dir is not None:
        return os.fspath(zoo_dir)
    if os.environ.get("KERAS_NEUROMOD_ZOO"):
        return os.environ["KERAS_NEUROMOD_ZOO"]
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zoo")


@dataclasses.dataclass(frozen=True)
class Agent:
    """An evolved agent and its card.

    Attributes:
        name: the agent's name.
        base: ``"sgd"`` (for `NmSGD`) or ``"adam"`` (for `NmAdam`).
        genome: the AGRN `Genome`.
        ranges: hyperparameter ranges it was evolved with (None: the defaults).
        settings: AGRN settings (`warmup_steps`, `grn_steps_per_update`).
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
            raise ValueError(f"Agent 'name' must be a non-empty string without '/', got {self.name!r}.")
        if self.base not in _BASES:
            raise ValueError(f"Agent 'base' must be 'sgd' or 'adam', got {self.base!r}.")
        if not isinstance(self.genome, Genome):
            raise ValueError("Agent 'genome' must be a Genome.")
        if self.genome.n_inputs != 13 or self.genome.n_outputs != _BASES[self.base]:
            raise ValueError(
                f"Agent 'genome' has {self.genome.n_inputs} inputs and {self.genome.n_outputs} "
                f"outputs; an Nm-{self.base.upper() if self.base == 'sgd' else 'Adam'} agent needs "
                f"13 and {_BASES[self.base]}."
            )
        if self.ranges is not None:
            if not isinstance(self.ranges, dict):
                raise ValueError("Agent 'ranges' must be a dict of name -> [lo, hi].")
            self.optimizer_class()(self.genome, ranges=self.ranges)  # validates names and values
        unknown = sorted(set(self.settings) - set(_SETTINGS))
        if unknown:
            raise ValueError(f"Agent 'settings' has unknown key(s) {unknown}; known: {list(_SETTINGS)}.")
        for field in ("provenance", "benchmark"):
            if not isinstance(getattr(self, field), dict):
                raise ValueError(f"Agent '{field}' must be a dict.")

    def optimizer_class(self):
        """`NmSGD` or `NmAdam`, by the agent's base."""
        from keras_neuromod.optimizers import NmAdam
        from keras_neuromod.optimizers import NmSGD

        return NmSGD if self.base == "sgd" else NmAdam

    def optimizer(self, **kwargs):
        """A fresh optimizer driven by this agent, with its ranges and settings."""
        return self.optimizer_class()(agent=self, **kwargs)

    @property
    def card(self):
        """The agent's card: provenance and benchmark results."""
        return {"name": self.name, "base": self.base, "provenance": self.provenance,
                "benchmark": self.benchmark}

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
        return cls(
            name=data["name"], base=data["base"], genome=Genome.from_dict(data["genome"]),
            ranges=ranges, settings=data.get("settings") or {},
            provenance=data.get("provenance") or {}, benchmark=data.get("benchmark") or {},
        )


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _index(folder):
    path = os.path.join(folder, "index.json")
    if not os.path.exists(path):
        return {}
    data = read_json(path, what="zoo index")
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or not isinstance(
        data.get("agents"), dict
    ):
        raise ValueError(f"The zoo index {path!r} is not a {INDEX_FORMAT} file.")
    return data["agents"]


def list_agents(zoo_dir=None):
    """The agents of the zoo: a list of dicts (name, base, file, summary)."""
    folder = directory(zoo_dir)
    return [{"name": name, **{k: v for k, v in entry.items() if k != "sha256"}}
            for name, entry in sorted(_index(folder).items())]


def load(name_or_path, zoo_dir=None):
    """Load an agent by zoo name (integrity-checked) or from a JSON file path."""
    folder = directory(zoo_dir)
    text_path = os.fspath(name_or_path)
    index = _index(folder)
    if text_path in index:
        entry = index[text_path]
        path = os.path.join(folder, entry["file"])
        if not os.path.exists(path):
            raise FileNotFoundError(f"The zoo agent {text_path!r} is listed but {path!r} is missing.")
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise ValueError(
                f"The zoo agent file {path!r} does not match the sha256 in the zoo index "
                f"(expected {entry['sha256'][:12]}..., found {digest[:12]}...): it was modified "
                "or truncated. Restore it from the source tree, or load it as a plain file path "
                "if the change is yours."
            )
        agent = Agent.from_dict(read_json(path, what="agent file"))
        if agent.name != text_path:
            raise ValueError(f"The zoo file for {text_path!r} holds the agent {agent.name!r}.")
        return agent
    if os.path.isfile(text_path):
        return Agent.from_dict(read_json(text_path, what="agent file"))
    known = ", ".join(sorted(index)) or "none"
    raise ValueError(
        f"{text_path!r} is neither an agent file nor an agent of the zoo in {folder!r} "
        f"(known agents: {known})."
    )


def save(agent, path):
    """Write `agent` as JSON, atomically. Returns the path."""
    if not isinstance(agent, Agent):
        raise TypeError(f"save() expects an Agent, got {type(agent).__name__}.")
    return atomic_write_json(path, agent.to_dict())


def write_index(zoo_dir=None, summaries=None):
    """Rebuild `index.json` from the agent files in the zoo folder.

    Every `*.json` file other than the index that holds an agent is listed with
    its sha256; `summaries` maps names to a short text kept in the index (an
    agent without one keeps the summary the index had).
    """
    folder = directory(zoo_dir)
    summaries = {**{name: entry["summary"] for name, entry in _index(folder).items()
                    if "summary" in entry}, **(summaries or {})}
    agents = {}
    for file in sorted(os.listdir(folder)):
        path = os.path.join(folder, file)
        if file == "index.json" or not file.endswith(".json") or not os.path.isfile(path):
            continue
        try:
            agent = Agent.from_dict(read_json(path, what="agent file"))
        except ValueError:
            continue
        agents[agent.name] = {"file": file, "base": agent.base, "sha256": _sha256(path)}
        if agent.name in summaries:
            agents[agent.name]["summary"] = summaries[agent.name]
    atomic_write_json(os.path.join(folder, "index.json"), {"format": INDEX_FORMAT, "agents": agents})
    return agents


def record_benchmark(name_or_path, key, result, zoo_dir=None):
    """Store `result` as `benchmark[key]` in an agent's file and return the new agent.

    A zoo agent (named in the index) is integrity-checked first and its index
    entry refreshed afterwards; a file path is simply rewritten.
    """
    folder = directory(zoo_dir)
    agent = load(name_or_path, zoo_dir=folder)
    index = _index(folder)
    in_zoo = os.fspath(name_or_path) in index
    path = os.path.join(folder, index[agent.name]["file"]) if in_zoo else os.fspath(name_or_path)
    agent = dataclasses.replace(agent, benchmark={**agent.benchmark, key: result})
    save(agent, path)
    if in_zoo:
        write_index(folder)
    return agent
