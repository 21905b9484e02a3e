"""The `keras-neuromod` command (also `python -m keras_neuromod`).

    keras-neuromod evolve [flags]     evolve an agent (`keras-neuromod evolve --help`)
    keras-neuromod zoo list           the agents shipped with the package
    keras-neuromod zoo show NAME      an agent's card: what it is, how it was made, its records
    keras-neuromod compare [flags]    an agent on the paper's models against SGD, Adam, SGD*, Adam*

`evolve` is `examples/evolve.py` and `compare` is `examples/compare.py`, flag for
flag (`keras_neuromod.cli.evolve`, `keras_neuromod.cli.compare`).
The command starts without TensorFlow's start-up notices (`keras_neuromod.cli._startup`)
and shows a progress bar over each generation where tqdm is installed
(`pip install "keras_neuromod[examples]"`, which also draws the figures).
"""

import argparse
import sys

from keras_neuromod.cli import _startup

PROG = _startup.COMMAND
COMMANDS = {
    "evolve": "evolve a neuromodulatory agent with GRNEAT (the main job)",
    "zoo": "list the zoo's agents, or show one agent's card",
    "compare": "an agent on the paper's models against SGD, Adam and tuned SGD*, Adam*",
}


def _parser():
    from keras_neuromod import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Neuromodulated learning for Keras 3: evolve, list and inspect agents.",
        epilog=f"`{PROG} COMMAND --help` gives a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"keras_neuromod {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in COMMANDS.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


def main(argv=None):
    """Run one command of `keras-neuromod`.

    Args:
        argv: the arguments after the program's name (`sys.argv[1:]` when None).

    Returns:
        The exit status (0 on success); errors exit through `SystemExit` with
        their message, as argparse does.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evolve":
        from keras_neuromod.cli import evolve

        return evolve.run(argv[1:], prog=f"{PROG} evolve")
    if argv and argv[0] == "zoo":
        from keras_neuromod.cli import zoo

        return zoo.main(argv[1:], prog=f"{PROG} zoo")
    if argv and argv[0] == "compare":
        from keras_neuromod.cli import compare

        compare.main(argv[1:], prog=f"{PROG} compare")
        return 0
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0  # not reached: every command is dispatched above
