"""Every Python block of README.md and of the documentation's pages runs as pasted.

Every block runs in a fresh namespace and an empty folder of its own, so it sees
only the installed `keras_neuromod` and nothing a block before it defined. A
block that starts an evolution runs alone in a fresh interpreter: as a script
file (`python snippet.py`, the way a script's main guard and spawned workers see
it), or, for a block titled "In a notebook", as `python -c` (no file for workers
to import, as in a notebook). The other blocks, of every page, share one
interpreter (one TensorFlow start), each executed as `__main__` in a namespace
of its own. A block that is not meant to run is not a ```python block.
"""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.relpath(path, ROOT)
    for path in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
)
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
README_LINES = 200


def python_blocks():
    """(page, number on the page, fence attributes, code) of every distinct ```python block."""
    seen, blocks = set(), []
    for page in PAGES:
        with open(os.path.join(ROOT, page), encoding="utf-8") as stream:
            text = stream.read()
        for number, match in enumerate(FENCE.finditer(text), start=1):
            attributes, code = match.group(1), match.group(2)
            if code in seen:  # the README's quickstart is also the home page's
                continue
            seen.add(code)
            blocks.append((page, number, attributes, code))
    return blocks


BLOCKS = python_blocks()


def alone(attributes, code):
    """Whether a block needs an interpreter of its own (it starts workers, or is a notebook's)."""
    return 'title="In a notebook"' in attributes or "evolve(" in code


def runs():
    """(test id, pages, [(label, attributes, code)]): each evolving block alone, then the
    others together."""
    found, together = [], []
    for page, number, attributes, code in BLOCKS:
        label = f"{page}:{number}"
        if alone(attributes, code):
            found.append((label, page, [(label, attributes, code)]))
        else:
            together.append((label, attributes, code))
    pages = sorted({label.rsplit(":", 1)[0] for label, _, _ in together})
    return found + [("the other blocks", ", ".join(pages), together)]


# Runs each block of blocks.json as `__main__` in a namespace and a folder of its own.
RUNNER = """
import json, os, sys
for label, code in json.load(open(sys.argv[1], encoding="utf-8")):
    folder = os.path.abspath(label.replace("/", "_").replace(":", "_"))
    os.makedirs(folder)
    os.chdir(folder)
    print(f"--- {label}", flush=True)
    exec(compile(code, label, "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


def test_the_readme_is_short_and_the_blocks_are_found():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines (at most {README_LINES})"
    pages = {page for page, _, _, _ in BLOCKS}
    assert "README.md" in pages and os.path.join("docs", "guides", "evolving.md") in pages


@pytest.mark.slow
@pytest.mark.parametrize(
    "page, blocks", [run[1:] for run in runs()], ids=[run[0] for run in runs()]
)
def test_blocks_run_as_pasted(page, blocks, tmp_path):
    environment = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_NEUROMOD_ZOO")
    }
    environment.update(TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    _, attributes, code = blocks[0]  # a block that runs alone is its run's only one
    if 'title="In a notebook"' in attributes:
        command = [sys.executable, "-c", code]
    elif alone(attributes, code):
        (tmp_path / "snippet.py").write_text(code, encoding="utf-8")
        command = [sys.executable, "snippet.py"]
    else:
        (tmp_path / "blocks.json").write_text(
            json.dumps([(b[0], b[2]) for b in blocks]), encoding="utf-8"
        )
        command = [sys.executable, "-c", RUNNER, "blocks.json"]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=environment
    )
    codes = "\n".join(f"--- {b[0]}\n{b[2]}" for b in blocks)
    assert done.returncode == 0, (
        f"a block of {page} failed:\n{codes}\n--- stdout\n{done.stdout[-3000:]}"
        f"\n--- stderr\n{done.stderr[-5000:]}"
    )
