"""The agent zoo: evolved neuromodulatory agents, shared like trained models.

An agent file is JSON only, in the agent format of `keras_neuromod.agents`
(loading one never runs code). A zoo is a folder of agent files and an
`index.json` that lists each agent's file with its sha256.

The shipped agents are package data: they live in this package's folder,
`keras_neuromod/zoo/` (installed with the package, from a wheel as from a
source checkout), listed in its `index.json`; loading a shipped agent checks
it and refuses a modified or truncated file. Their cards, evolution runs and
evidence are in the repository's `zoo/` folder. Another folder can be used as
a zoo with the `KERAS_NEUROMOD_ZOO` environment variable or the `zoo_dir`
argument.

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
import json
import os
import re

from keras_neuromod import _fields
from keras_neuromod import bases
from keras_neuromod.agents import AGENT_FORMAT
from keras_neuromod.agents import MAX_AGENT_STEPS
from keras_neuromod.agents import Agent
from keras_neuromod.agrn import Genome
from keras_neuromod.io import MAX_AGENT_BYTES
from keras_neuromod.io import atomic_write_json
from keras_neuromod.io import parse_json
from keras_neuromod.io import read_bytes
from keras_neuromod.io import read_json

__all__ = [
    "Agent",
    "load",
    "save",
    "list_agents",
    "directory",
    "write_index",
    "record_benchmark",
    "resolve_agent",
    "AGENT_FORMAT",
    "INDEX_FORMAT",
    "MAX_AGENT_STEPS",
]

INDEX_FORMAT = "keras_neuromod.zoo-index/1"
_ENTRY_FIELDS = ("file", "sha256")
# `previous_sha256`: the file's digest before a rewrite in progress (`record_benchmark`)
_ENTRY_OPTIONAL = ("base", "summary", "previous_sha256")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PACKAGE_ZOO = os.path.dirname(os.path.abspath(__file__))


def directory(zoo_dir=None):
    """The zoo folder: `zoo_dir`, else `$KERAS_NEUROMOD_ZOO`, else the shipped agents.

    The shipped agents are package data in this package's folder (so a wheel
    carries them; in a source checkout, `keras_neuromod/zoo/`).
    """
    if zoo_dir is not None:
        return os.fspath(zoo_dir)
    if os.environ.get("KERAS_NEUROMOD_ZOO"):
        return os.environ["KERAS_NEUROMOD_ZOO"]
    return _PACKAGE_ZOO


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _inside(folder, file):
    """Whether `file` (relative) names a path that stays inside `folder`."""
    parts = file.replace("\\", "/").split("/")
    if (
        os.path.isabs(file)
        or file.startswith(("/", "\\"))
        or ".." in parts
        or (os.path.splitdrive(file)[0])
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
    if (
        not isinstance(data, dict)
        or data.get("format") != INDEX_FORMAT
        or not isinstance(data.get("agents"), dict)
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
        for field in ("sha256", "previous_sha256"):
            if field in entry:
                digest = _fields.text(entry[field], f"{where}, field '{field}'")
                if not _SHA256.fullmatch(digest):
                    raise ValueError(
                        f"{where}, field '{field}' must be 64 lowercase hex digits, "
                        f"got {digest!r:.80}."
                    )
        if "base" in entry:
            bases.get(entry["base"], where=f"{where}, field 'base'")
        if "summary" in entry:
            _fields.text(entry["summary"], f"{where}, field 'summary'")
    return data["agents"]


def _parse_agent(data, path):
    """Validate the bytes `data` of the agent file `path`; errors name it."""
    try:
        return Agent.from_dict(parse_json(data, what=f"agent file {path!r}"))
    except ValueError as error:
        raise ValueError(f"The agent file {path!r} is invalid: {error}") from None


def _read_agent(path):
    """Load the agent file `path`: the `Agent` and the sha256 of its bytes.

    One bounded read serves both, so the digest is that of the agent parsed.
    """
    data = read_bytes(path, what="agent file", max_bytes=MAX_AGENT_BYTES)
    return _parse_agent(data, path), _sha256(data)


def list_agents(zoo_dir=None):
    """The agents of the zoo: a list of dicts (name, base, file, summary)."""
    folder = directory(zoo_dir)
    return [
        {"name": name, **{k: v for k, v in entry.items() if k != "sha256"}}
        for name, entry in sorted(_index(folder).items())
    ]


def load(name_or_path, zoo_dir=None):
    """Load an agent by zoo name (integrity-checked) or from a JSON file path.

    A zoo name wins over a file of the same name in the working directory
    (write ``./name`` to load that file).
    """
    folder = directory(zoo_dir)
    text_path = os.fspath(name_or_path)
    index = _index(folder)
    if text_path in index:
        entry = index[text_path]
        path = os.path.join(folder, entry["file"])
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"The zoo agent {text_path!r} is listed but {path!r} is missing."
            )
        if not os.path.isfile(path):
            raise ValueError(
                f"The zoo agent {text_path!r} is listed as {path!r}, which is not a file."
            )
        # one bounded read: the bytes hashed are the bytes parsed
        data = read_bytes(path, what="zoo agent file", max_bytes=MAX_AGENT_BYTES)
        digest = _sha256(data)
        # during a rewrite (`record_benchmark`) the file is either version, both listed
        if digest not in (entry["sha256"], entry.get("previous_sha256")):
            raise ValueError(
                f"The zoo agent file {path!r} does not match the sha256 in the zoo index "
                f"(expected {entry['sha256'][:12]}..., found {digest[:12]}...): it was modified "
                "or truncated. Restore it from the source tree, or load it as a plain file path "
                "if the change is yours."
            )
        agent = _parse_agent(data, path)
        if agent.name != text_path:
            raise ValueError(f"The zoo file for {text_path!r} holds the agent {agent.name!r}.")
        return agent
    if os.path.isfile(text_path):
        return _read_agent(text_path)[0]
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
    summaries = {
        **{name: entry["summary"] for name, entry in _index(folder).items() if "summary" in entry},
        **(summaries or {}),
    }
    agents = {}
    for file in sorted(os.listdir(folder)):
        path = os.path.join(folder, file)
        if file == "index.json" or not file.endswith(".json") or not os.path.isfile(path):
            continue
        try:
            agent, digest = _read_agent(path)
        except ValueError:
            continue
        agents[agent.name] = {"file": file, "base": agent.base, "sha256": digest}
        if agent.name in summaries:
            agents[agent.name]["summary"] = summaries[agent.name]
    _write_index_entries(folder, agents)
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
    agent = dataclasses.replace(agent, benchmark={**agent.benchmark, key: result})
    if not in_zoo:
        save(agent, name_or_path)
        return agent
    _rewrite(folder, index, agent)
    return agent


def _rewrite(folder, index, agent):
    """Rewrite a zoo agent's file so that a crash at any point leaves it loadable by name.

    The index first lists the new digest with the old one as `previous_sha256`,
    then the file is replaced (atomically), then the index drops the old digest:
    the file is always one of the versions the index accepts.
    """
    from keras_neuromod.io import to_jsonable

    entry = index[agent.name]
    # the bytes `save` writes: `atomic_write_json`'s text and a newline
    text = json.dumps(to_jsonable(agent.to_dict()), indent=2, allow_nan=False) + "\n"
    pending = {**entry, "sha256": _sha256(text.encode("utf-8")), "previous_sha256": entry["sha256"]}
    _write_index_entries(folder, {**index, agent.name: pending})
    save(agent, os.path.join(folder, entry["file"]))
    write_index(folder)


def _write_index_entries(folder, agents):
    atomic_write_json(
        os.path.join(folder, "index.json"), {"format": INDEX_FORMAT, "agents": agents}
    )


def resolve_agent(agent):
    """Turn what a user passes as `agent=` into `(genome, settings)`.

    Args:
        agent: a `Genome`, a genome dict, an `Agent` or agent dict (as agent
            files store it), the path of a JSON file holding a genome or an
            agent, or the name of an agent of the zoo.

    Returns:
        The `Genome`, and a dict of the ranges and AGRN settings an agent was
        evolved with (empty for a bare genome).
    """
    if isinstance(agent, Genome):
        return agent, {}
    if isinstance(agent, dict):
        if "format" not in agent:
            return Genome.from_dict(agent["genome"] if "genome" in agent else agent), {}
        agent = Agent.from_dict(agent)
    if isinstance(agent, Agent):
        return agent.genome, _agent_settings(agent)
    if isinstance(agent, (str, os.PathLike)):
        return _resolve_path(os.fspath(agent))
    raise TypeError(
        "agent must be a Genome, a genome dict, an Agent, the path of a genome or "
        f"agent JSON file, or a zoo agent name; got {type(agent).__name__}."
    )


def _agent_settings(agent):
    """The ranges and AGRN settings an `Agent` was evolved with, as one dict."""
    settings = dict(agent.settings)
    if agent.ranges is not None:
        settings["ranges"] = {k: tuple(v) for k, v in agent.ranges.items()}
    return settings


def _resolve_path(path):
    """`resolve_agent` for a zoo name or the path of a genome or agent JSON file."""
    if path in _index(directory()):  # a zoo name wins over a file of that name (see `load`)
        return resolve_agent(load(path))
    if os.path.isfile(path):
        data = read_json(path, what="agent file", max_bytes=MAX_AGENT_BYTES)
        if not isinstance(data, dict):
            raise ValueError(
                f"The agent file {path!r} must hold a JSON object (a genome or an "
                f"agent), not a {type(data).__name__}."
            )
        try:
            return resolve_agent(data)
        except ValueError as error:
            raise ValueError(f"The agent file {path!r}: {error}") from None
    try:
        found = load(path)
    except ValueError as error:
        raise ValueError(
            f"agent={path!r} is neither a genome JSON file nor a usable zoo agent: {error}"
        ) from None
    return resolve_agent(found)
