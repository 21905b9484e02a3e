"""What the examples share: one flag vocabulary, tables, figures and the final JSON line.

Every example starts with

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _common

which works both for `python examples/NAME.py` and for a test that loads the
example by path. The examples run the installed `keras_neuromod` (`pip install
"keras_neuromod[examples]"`, or `pip install -e ".[examples]"` from a clone).
Importing this module quiets TensorFlow's C++ log unless `TF_CPP_MIN_LOG_LEVEL`
is already set; import it before Keras. The flags, tables, figures and JSON line
are `keras_neuromod.cli._output`'s, which the `keras-neuromod` command shares.

The flags every example spells the same way (`parser` and `add_learning_rate`):

    --quick            the reduced run (what it reduces is the example's own)
    --seed N           the (first) seed
    --out DIR          the output folder (checkpoints, figures, JSON)
    --learning-rate X  the learning rate (`--lr` is kept as a hidden alias)
    --resume           continue from the checkpoint in --out
    --no-progress      no progress bar

Every example ends with `print_json_line(...)`: the last line of stdout is one
JSON object with its headline figures.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_neuromod.cli._output import add_learning_rate  # noqa: E402
from keras_neuromod.cli._output import parser  # noqa: E402
from keras_neuromod.cli._output import print_json_line  # noqa: E402
from keras_neuromod.cli._output import print_table  # noqa: E402
from keras_neuromod.cli._output import save_figure  # noqa: E402
from keras_neuromod.cli._output import table  # noqa: E402

__all__ = [
    "parser",
    "add_learning_rate",
    "table",
    "print_table",
    "pyplot",
    "save_figure",
    "print_json_line",
    "interval",
]


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (files only, no display needed).

    The examples are scripts, the process's entry point: choosing pyplot's
    backend is theirs (the library draws with `matplotlib.figure.Figure`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def interval(values, confidence=0.95):
    """Mean of `values` and the half-width of its `confidence` interval (Student's t;
    infinite for a single value)."""
    import numpy as np
    from scipy import stats

    values = np.asarray(values, np.float64)
    n = len(values)
    half = (
        float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / np.sqrt(n))
        if n > 1
        else float("inf")
    )
    return float(values.mean()), half
