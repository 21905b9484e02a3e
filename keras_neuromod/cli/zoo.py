"""`keras-neuromod zoo`: list the zoo's agents and show an agent's card.

    keras-neuromod zoo list               name, optimizer and summary of each agent
    keras-neuromod zoo show NAME_OR_FILE  what the agent is, how it was made, its records
    keras-neuromod zoo show NAME --json   the whole card (without the genome) as JSON

The zoo is the shipped one, or the folder in `$KERAS_NEUROMOD_ZOO`; `show` also
reads an agent file (`runs/evolve/best_agent.json`).
"""

import argparse
import json
import math

from keras_neuromod.cli import _output

PROG = "keras-neuromod zoo"

#: the provenance fields `show` prints first, in this order, when present
_MADE = (
    "task",
    "tasks",
    "architectures",
    "width",
    "epochs",
    "batch_size",
    "metric",
    "instances",
    "baseline",
    "algorithm",
    "inputs",
    "outputs",
    "population",
    "generations",
    "seed",
    "final_fitness",
    "evaluations",
    "trainings",
    "evolution_seconds",
    "workers",
    "cpu_hours",
    "cpu_hours_estimated",
    "library_version",
)


def _parser(prog):
    parser = argparse.ArgumentParser(
        prog=prog, description="The agent zoo: list and inspect agents."
    )
    commands = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = commands.add_parser("list", help="the zoo's agents")
    listing.add_argument(
        "--json", action="store_true", help="one JSON object per agent, a line each"
    )
    listing.add_argument(
        "--zoo-dir",
        default=None,
        help="another zoo folder (default: $KERAS_NEUROMOD_ZOO, else the shipped agents)",
    )
    show = commands.add_parser("show", help="an agent's card")
    show.add_argument("agent", metavar="NAME_OR_FILE", help="a zoo name or an agent file")
    show.add_argument(
        "--json", action="store_true", help="the whole card (without the genome) as JSON"
    )
    show.add_argument("--zoo-dir", default=None, help="another zoo folder")
    return parser


def _value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def list_agents(zoo_dir=None, as_json=False):
    """Print the zoo's agents: name, optimizer base and summary.

    Args:
        zoo_dir: another zoo folder (`keras_neuromod.zoo.directory` when None).
        as_json: one JSON object a line instead of a table.

    Returns:
        The agents, as `keras_neuromod.zoo.list_agents` gives them.
    """
    from keras_neuromod import zoo

    agents = zoo.list_agents(zoo_dir)
    if as_json:
        for entry in agents:
            print(json.dumps(entry), flush=True)
        return agents
    if not agents:
        print(f"No agents in {zoo.directory(zoo_dir)}.")
        return agents
    print(
        _output.table(
            [(a["name"], a["base"], a.get("summary", "")) for a in agents],
            headers=("name", "base", "summary"),
            align="lll",
        )
    )
    print(f"\n{len(agents)} agents in {zoo.directory(zoo_dir)}; `{PROG} show NAME` shows one.")
    return agents


def show_agent(name_or_path, zoo_dir=None, as_json=False):
    """Print an agent's card: its optimizer, ranges, settings, provenance and records.

    Args:
        name_or_path: a zoo name, or the path of an agent file.
        zoo_dir: another zoo folder (`keras_neuromod.zoo.directory` when None).
        as_json: the card (everything but the genome) as one JSON object.

    Returns:
        The loaded `keras_neuromod.agents.Agent`.
    """
    from keras_neuromod import zoo

    agent = zoo.load(name_or_path, zoo_dir)
    if as_json:
        _print_card_json(agent)
        return agent
    optimizer = agent.optimizer_class().__name__
    summary = {e["name"]: e.get("summary", "") for e in zoo.list_agents(zoo_dir)}.get(agent.name)
    print(f"{agent.name}: an {optimizer} agent")
    if summary:
        print(summary)
    _print_genome_and_ranges(agent)
    if agent.settings:
        print("settings: " + ", ".join(f"{k} {_value(v)}" for k, v in agent.settings.items()))
    if agent.provenance:
        _print_provenance(agent.provenance)
    for key, record in agent.benchmark.items():
        _print_record(key, record)
    print(f"\n`{PROG} show {name_or_path} --json` gives the whole card.")
    return agent


def _print_record(key, record):
    """Print one of a card's records: what made it and, where it holds one, its verdicts."""
    record = record if isinstance(record, dict) else {}
    command = record.get("command")
    print(f"\nRecord {key!r}" + (f", made by:\n  {command}" if command else ""))
    _print_paired(record)
    summary = record.get("summary")
    if (
        isinstance(summary, list)
        and summary
        and all(
            isinstance(s, dict) and {"baseline", "better", "within_noise", "worse"} <= set(s)
            for s in summary
        )
    ):
        # an evidence record (`evidence.aggregate`): verdicts per pair, and across tasks
        rows = []
        for s in summary:
            ratio = s.get("log_error_ratio") or {}
            low, high = ratio.get("ci", (math.nan, math.nan))
            rows.append(
                (
                    s["baseline"],
                    f"{s['better']} / {s['within_noise']} / {s['worse']}",
                    f"{ratio.get('mean', math.nan):+.2f} [{low:+.2f}, {high:+.2f}]",
                    ratio.get("verdict", ""),
                )
            )
        print(
            f"{record.get('seeds', '?')} seeds on each of {len(record.get('pairs', ()))} "
            f"(task, model) pairs of {record.get('tasks', '?')} tasks; the agent minus:"
        )
        print(
            _output.table(
                rows,
                headers=(
                    "baseline",
                    "pairs better / within noise / worse",
                    "mean log error ratio [95% CI over tasks]",
                    "verdict",
                ),
                align="llll",
            )
        )


def _print_paired(record):
    """A comparison's paired differences (`keras-neuromod compare --record`), if it holds them:
    per model and baseline, the agent's mean difference, its 95% interval and the verdict."""
    paired = record.get("paired")
    keys = {"model", "baseline", "mean", "ci", "verdict"}
    if not isinstance(paired, list) or not all(
        isinstance(p, dict) and keys <= set(p) for p in paired
    ):
        return
    rows = [r for r in record.get("rows") or () if isinstance(r, dict)]
    metric = rows[0].get("metric_name", "metric") if rows else "metric"
    print(
        f"{record.get('seeds', '?')} seeds on {record.get('dataset', '?')}; the agent's test "
        f"{metric} minus the baseline's:"
    )
    rows = [
        (
            p["model"],
            p["baseline"],
            f"{p['mean']:+.4f} [{p['ci'][0]:+.4f}, {p['ci'][1]:+.4f}]",
            p["verdict"],
        )
        for p in paired
    ]
    print(
        _output.table(
            rows, headers=("model", "baseline", "difference [95% CI]", "verdict"), align="llll"
        )
    )


def _print_card_json(agent):
    """Print the agent's card as one JSON object, the genome by its sizes."""
    genome = agent.genome
    card = {key: value for key, value in agent.to_dict().items() if key != "genome"}
    card["genome"] = {
        "n_inputs": genome.n_inputs,
        "n_outputs": genome.n_outputs,
        "n_regulatory": genome.n_regulatory,
    }
    print(json.dumps(card, indent=1), flush=True)


def _print_genome_and_ranges(agent):
    """Print the AGRN genome's sizes, the output set and the table of ranges and scales."""
    from keras_neuromod import bases

    genome = agent.genome
    print(
        f"\nAGRN genome: {genome.n_inputs} inputs, {genome.n_regulatory} regulatory proteins, "
        f"{genome.n_outputs} outputs"
    )
    base, output_set = bases.get(agent.base), agent.output_set
    named = "" if "outputs" in agent.settings else ", read by default"
    print(f"output set: {output_set.name}{named} ({output_set.description})")
    ranges = base.check_ranges(agent.ranges, outputs=output_set.name)
    scales = base.scales(output_set.name)
    own = agent.ranges or {}
    print(
        _output.table(
            [
                (
                    name,
                    f"[{lo:.6g}, {hi:.6g}]" + ("" if name in own else " (default)"),
                    scales[name],
                )
                for name, (lo, hi) in ranges.items()
            ],
            headers=("hyperparameter", "range", "scale"),
            align="lll",
        )
    )


def _print_provenance(made):
    """Print how an agent was made (its card's provenance) and the command that reproduces it."""
    rows = [(key, _value(made[key])) for key in _MADE if key in made]
    rows += [
        (key, _value(value))
        for key, value in made.items()
        if key not in _MADE and key not in ("command", "selection")
    ]
    if "selection" in made:
        chosen = made["selection"]
        rows.append(
            (
                "selection",
                f"best of {chosen.get('candidates')} candidates on "
                f"{chosen.get('instances')} validation instances, "
                f"score {chosen.get('score')}",
            )
        )
    _output.print_table(rows, headers=("how it was made", ""), align="ll")
    if "command" in made:
        print(f"\nReproduced by:\n  {made['command']}")


def main(argv=None, prog=PROG):
    """Run `keras-neuromod zoo ACTION`.

    Args:
        argv: the arguments after `zoo`.
        prog: how the command is spelled in `--help` and errors.

    Returns:
        The exit status, 0; an unknown agent or a malformed file exits with its message.
    """
    args = _parser(prog).parse_args(argv)
    try:
        if args.action == "list":
            list_agents(args.zoo_dir, args.json)
        else:
            show_agent(args.agent, args.zoo_dir, args.json)
    except (KeyError, ValueError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise SystemExit(f"{prog} {args.action}: {message}") from None
    return 0
