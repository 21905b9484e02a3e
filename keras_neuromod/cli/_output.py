"""What the commands and the examples print and draw: one flag vocabulary, tables, figures,
the JSON line.

The flags every command spells the same way (`parser` and `add_learning_rate`):

    --quick            the reduced run (what it reduces is the command's own)
    --seed N           the (first) seed
    --out DIR          the output folder (checkpoints, figures, JSON)
    --learning-rate X  the learning rate (`--lr` is kept as a hidden alias)
    --resume           continue from the checkpoint in --out
    --no-progress      no progress bar

A command ends with `print_json_line(...)`: the last line of stdout is one JSON
object with its headline figures. `examples/_common.py` re-exports these.
"""

import argparse
import json
import os
import sys

__all__ = [
    "parser",
    "add_learning_rate",
    "table",
    "print_table",
    "figure",
    "save_figure",
    "print_json_line",
]


def parser(
    description,
    out,
    quick=None,
    seed=0,
    seed_help=None,
    resume=None,
    progress=False,
    epilog=None,
    prog=None,
):
    """An `ArgumentParser` holding the common flags of one command.

    Args:
        description: the command's docstring or a sentence (its first paragraph is used).
        out: the default of `--out`.
        quick: the help of `--quick`, or None for a command without a reduced run.
        seed: the default of `--seed`, or None for a command without one.
        seed_help: the help of `--seed` (a default one when None).
        resume: the help of `--resume`, or None for a command that writes no checkpoint.
        progress: add `--no-progress`.
        epilog: text shown after the flags in `--help`.
        prog: the program's name in `--help` and errors (argparse's default when None).
    """
    first = " ".join(description.strip().split("\n\n")[0].split())
    p = argparse.ArgumentParser(prog=prog, description=first, epilog=epilog)
    if quick is not None:
        p.add_argument("--quick", action="store_true", help=quick)
    if seed is not None:
        p.add_argument(
            "--seed", type=int, default=seed, help=seed_help or f"the (first) seed (default {seed})"
        )
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    if resume is not None:
        p.add_argument("--resume", action="store_true", help=resume)
    if progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def add_learning_rate(p, default=None, help=None):
    """Add `--learning-rate` (read as `args.learning_rate`), with `--lr` as a hidden alias."""
    p.add_argument("--learning-rate", type=float, default=default, help=help)
    p.add_argument(
        "--lr", type=float, dest="learning_rate", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    return p


def _is_number(text):
    try:
        float(text.replace("%", "").replace(",", ""))
    except ValueError:
        return False
    return True


def table(rows, headers=None, align=None, markdown=False):
    """Rows of cells as a fixed-width (or markdown) table, one string.

    Cells are formatted by the caller (a cell that is not a string goes
    through `str`). `align`: one letter per column, "l" or "r"; by default a
    column whose cells are all numbers is right-aligned and any other left-aligned.
    Fixed-width columns are separated by two spaces, with no trailing blanks.
    """
    rows = [[c if isinstance(c, str) else str(c) for c in row] for row in rows]
    headers = None if headers is None else [str(h) for h in headers]
    columns = len(headers) if headers is not None else max(len(r) for r in rows)
    if align is None:
        align = "".join(
            "r" if rows and all(_is_number(r[i]) for r in rows) else "l" for i in range(columns)
        )
    if markdown:
        lines = []
        if headers is not None:
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    everything = ([headers] if headers is not None else []) + rows
    widths = [max(len(r[i]) for r in everything) for i in range(columns)]
    return "\n".join(
        "  ".join(
            c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)
        ).rstrip()
        for r in everything
    )


def print_table(rows, headers=None, align=None, markdown=False, title=None):
    """Print `table(...)`, after a blank line (and `title`, when given)."""
    print()
    if title:
        print(title)
    print(table(rows, headers, align, markdown), flush=True)


def figure(**options):
    """A new `matplotlib.figure.Figure` (`options`: its `figsize`, ...).

    Drawn with matplotlib's object API: nothing goes through pyplot, so no
    backend is chosen or switched (a notebook's stays as it is), and PNG files
    are written by the figure itself.
    """
    from matplotlib.figure import Figure

    return Figure(**options)


def save_figure(figure, path, dpi=110):
    """Save `figure` as PNG at `path` (its folder made as needed), close it, return `path`.

    A figure made by pyplot (the examples') is closed there too.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # (a figure pyplot does not hold is left as it is)
        pyplot.close(figure)
    return path


def print_json_line(data):
    """Print the example's last line: `data` as one JSON object (numpy values made plain)."""
    from keras_neuromod.io import to_jsonable

    print(json.dumps(to_jsonable(data)), flush=True)
    return data
