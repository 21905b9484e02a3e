"""The agent zoo: evolved neuromodulatory agents, shared like trained models.

An agent file is JSON only (loading one never runs code). It holds the format
version, the agent's name, its base optimizer (``"sgd"`` or ``"adam"``), the
AGRN genome, the hyperparameter ranges and AGRN settings it was evolved with,
its provenance (task, architectures, population, generations, epochs, seed,
final fitness, library version, the exact command that produced it) and its
benchmark results.

The shipped agents are package data: they live in `keras_neuromod/agents/`
(installed with the package, from a wheel as from a source checkout), listed
in its `index.json` with the sha256 of each file; loading a shipped agent
checks it and refuses a modified or truncated file. Their cards, evolution
runs and evidence are in the repository's `zoo/` folder. Another folder can be
used as a zoo with the `KERAS_NEUROMOD_ZOO` environment variable or the
`zoo_dir` argument.

Agent files are untrusted input: a file larger than
`keras_neuromod.io.MAX_AGENT_BYTES` is refused before it is parsed, a genome
with more than `keras_neuromod.agrn.MAX_PROTEINS` proteins before its tags are
read, AGRN step settings above `MAX_AGENT_STEPS`, and index entries that point
outside the zoo folder (`..`, absolute paths, symlinks leading out).

    from keras_neuromod import zoo, NmAdam
    zoo.list_agents()                       # the shipped agents
    agent = zoo.load("nm_adam_digits")      # .genome, .base, .ranges, .card
    NmAdam(agent="nm_adam_digits")          # the same, by name
"""

import dataclasses
import hashlib
import os
import re

from keras_neuromod import _fields
from keras_neuromod.agrn import Genome
from keras_neuromod.io import MAX_AGENT_BYTES
from keras_neuromod.io import atomic_write_json
from keras_neuromod.io import read_json

__all__ = ["Agent", "load", "save", "list_agents", "directory", "write_index",
           "record_benchmark", "AGENT_FORMAT", "INDEX_FORMAT", "MAX_AGENT_STEPS"]

AGENT_FORMAT = "keras_neuromod.agent/1"
INDEX_FORMAT = "keras_neuromod.zoo-index/1"
# The most AGRN steps an agent file may ask for (`warmup_steps`,
# `grn_steps_per_update`): the optimizers unroll these loops in their train step.
# The shipped agents use 25 and 1.
MAX_AGENT_STEPS = 1000
_BASES = {"sgd": 4, "adam": 8}
_SETTINGS = {"warmup_steps": 0, "grn_steps_per_update": 1}  # name -> smallest value
_FIELDS = ("format", "name", "base", "genome", "ranges", "settings", "provenance", "benchmark")
_ENTRY_FIELDS = ("file", "sha256")
_ENTRY_OPTIONAL = ("base", "summary")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PACKAGE_ZOO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agents")


def directory(zoo_dir=None):
    """The zoo folder: `zoo_dir`, else `$KERAS_NEUROMOD_ZOO`, else the shipped agents.

    The shipped agents are the package's `agents/` folder (package data, so a
    wheel carries them; in a source checkout, `keras_neuromod/agents/`).
    """
    if zoo_dir is not None:
        return os.fspath(zoo_dir)
    if os.environ.get("KERAS_NEUROMOD_ZOO"):
        return os.environ["KERAS_NEUROMOD_ZOO"]
    return _PACKAGE_ZOO


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
            raise ValueError(f"Agent 'name' must be a non-empty string without '/', got {self.name!r:.80}.")
        if not isinstance(self.base, str) or self.base not in _BASES:
            raise ValueError(f"Agent 'base' must be 'sgd' or 'adam', got {self.base!r:.80}.")
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
            for key, pair in self.ranges.items():
                _fields.items(list(pair) if isinstance(pair, tuple) else pair,
                              f"Agent 'ranges' entry {key!r}", length=2)
                for value in pair:
                    _fields.number(value, f"Agent 'ranges' entry {key!r}")
            self.optimizer_class()(self.genome, ranges=self.ranges)  # validates names and values
        if not isinstance(self.settings, dict):
            raise ValueError(f"Agent 'settings' must be a dict, got {type(self.settings).__name__}.")
        unknown = sorted(set(self.settings) - set(_SETTINGS))
        if unknown:
            raise ValueError(f"Agent 'settings' has unknown key(s) {unknown}; known: {list(_SETTINGS)}.")
        for key, value in self.settings.items():
            _fields.integer(value, f"Agent 'settings' entry {key!r}", _SETTINGS[key], MAX_AGENT_STEPS)
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
        try:
            genome = Genome.from_dict(data["genome"])
        except ValueError as error:
            raise ValueError(f"Agent 'genome': {error}") from None

        def optional(field):
            value = data.get(field)
            return {} if value is None else value

        return cls(
            name=data["name"], base=data["base"], genome=genome, ranges=ranges,
            settings=optional("settings"), provenance=optional("provenance"),
            benchmark=optional("benchmark"),
        )


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(folder, file):
    """Whether `file` (relative) names a path that stays inside `folder`."""
    parts = file.replace("\\", "/").split("/")
    if os.path.isabs(file) or file.startswith(("/", "\\")) or ".." in parts or (
        os.path.splitdrive(file)[0]
    ):
        return False
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(folder, file))
    return real != root and os.path.commonpath([root, real]) == root


def _index(folder):
    """The validated entries of the zoo index in `folder` ({} without an index)."""
    path = os.path.join(folder, "index.json")
    if not os.path.exists(path):
        return {}
    data = read_json(path, what="zoo index", max_bytes=MAX_AGENT_BYTES)
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or not isinstance(
        data.get("agents"), dict
    ):
        raise ValueError(
            f"The zoo index {path!r} is not a {INDEX_FORMAT} file (a JSON object with "
            "'format' and a dict 'agents')."
        )
    _fields.fields(data, f"The zoo index {path!r}", ("format", "agents"))
    for name, entry in data["agents"].items():
        where = f"The zoo index {path!r}, entry {name!r}"
        if not name or "/" in name:
            raise ValueError(f"{where}: an agent name must be non-empty, without '/'.")
        _fields.fields(entry, where, _ENTRY_FIELDS, _ENTRY_OPTIONAL)
        file = _fields.text(entry["file"], f"{where}, field 'file'")
        if not file or "\0" in file or not _inside(folder, file):
            raise ValueError(
                f"{where}, field 'file' is {file!r:.200}: it must be a path inside the zoo "
                "folder (no '..', no absolute path, no symlink leading out)."
            )
        digest = _fields.text(entry["sha256"], f"{where}, field 'sha256'")
        if not _SHA256.fullmatch(digest):
            raise ValueError(f"{where}, field 'sha256' must be 64 lowercase hex digits, got {digest!r:.80}.")
        if "base" in entry and (not isinstance(entry["base"], str) or entry["base"] not in _BASES):
            raise ValueError(f"{where}, field 'base' must be 'sgd' or 'adam', got {entry['base']!r:.80}.")
        if "summary" in entry:
            _fields.text(entry["summary"], f"{where}, field 'summary'")
    return data["agents"]


def _read_agent(path):
    """Load and validate the agent file `path`; errors name it."""
    data = read_json(path, what="agent file", max_bytes=MAX_AGENT_BYTES)
    try:
        return Agent.from_dict(data)
    except ValueError as error:
        raise ValueError(f"The agent file {path!r} is invalid: {error}") from None


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
        if not os.path.isfile(path):
            raise ValueError(f"The zoo agent {text_path!r} is listed as {path!r}, which is not a file.")
        if os.path.getsize(path) > MAX_AGENT_BYTES:
            raise ValueError(
                f"The zoo agent file {path!r} has {os.path.getsize(path)} bytes, more than the "
                f"{MAX_AGENT_BYTES} that are read (keras_neuromod.io.MAX_AGENT_BYTES)."
            )
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise ValueError(
                f"The zoo agent file {path!r} does not match the sha256 in the zoo index "
                f"(expected {entry['sha256'][:12]}..., found {digest[:12]}...): it was modified "
                "or truncated. Restore it from the source tree, or load it as a plain file path "
                "if the change is yours."
            )
        agent = _read_agent(path)
        if agent.name != text_path:
            raise ValueError(f"The zoo file for {text_path!r} holds the agent {agent.name!r}.")
        return agent
    if os.path.isfile(text_path):
        return _read_agent(text_path)
    known = ", ".join(sorted(index)) or "none"
    raise ValueError(
        f"{text_path!r} is neither an agent file nor an agent of the zoo in {folder!r} "
        f"(known agents: {known})."
    )


def save(agent, path):
    """Write `agent` as JSON, atomically. Returns the path.

    An agent whose JSON would exceed `keras_neuromod.io.MAX_AGENT_BYTES` (and
    so could not be loaded) raises `ValueError`; nothing is written.
    """
    if not isinstance(agent, Agent):
        raise TypeError(f"save() expects an Agent, got {type(agent).__name__}.")
    return atomic_write_json(path, agent.to_dict(), max_bytes=MAX_AGENT_BYTES)


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
            agent = _read_agent(path)
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
