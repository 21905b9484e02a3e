"""Quiet start-up for the command line.

`keras-neuromod ...` and `python -m keras_neuromod ...` import the package (and
with it TensorFlow) before the command's code runs. TensorFlow writes its
start-up notices (CUDA probing, CPU features) to file descriptor 2 while it is
imported, before any log level applies. When this process is the command line,
`keras_neuromod/__init__.py` imports Keras through `quiet_import_keras` first:
`TF_CPP_MIN_LOG_LEVEL` is set to 3 unless already set, and descriptor 2 is sent to
a temporary file while Keras and TensorFlow load (replayed if the import fails).
A program that imports `keras_neuromod` as a library is left as it is.
"""

import os
import sys
import tempfile

COMMAND = "keras-neuromod"


def is_command_line(argv=None):
    """Whether this process runs `keras-neuromod` or `python -m keras_neuromod`.

    Args:
        argv: the interpreter's original arguments (`sys.orig_argv` by default).
    """
    argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
    skip = False
    for index, word in enumerate(argv[1:], start=1):
        if skip:  # the value of -X or -W
            skip = False
            continue
        if word in ("-X", "-W", "--check-hash-based-pycs"):
            skip = True
            continue
        if word == "-m":
            return index + 1 < len(argv) and argv[index + 1] in (
                "keras_neuromod",
                "keras_neuromod.cli",
            )
        if word == "-c" or word == "-":
            return False
        if word.startswith("-"):
            continue
        # the script: the console script's wrapper, or any other program
        return os.path.basename(word) in (COMMAND, COMMAND + ".exe", COMMAND + "-script.py")
    return False


def quiet_import_keras():
    """Import Keras (and its backend) with descriptor 2 sent to a temporary file.

    What was written there is dropped when the import succeeds and written to
    stderr when it fails, before the error is raised again.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        failed = True
        try:
            os.dup2(log.fileno(), 2)
            import keras  # noqa: F401

            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode("utf-8", "replace"))
                sys.stderr.flush()


if is_command_line():
    quiet_import_keras()
