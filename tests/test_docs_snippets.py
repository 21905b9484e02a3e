"""Every Python block of README.md and of the documentation's pages runs as pasted.

Each ```python block runs in a fresh interpreter in an empty temporary folder, so
it sees only the installed `keras_neuromod`: as a script file (`python
snippet.py`, the way a script's main guard and spawned workers see it), or, for
a block titled "In a notebook", as `python -c` (no file for workers to import,
as in a notebook). A block that is not meant to run is not a ```python block.
"""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                      recursive=True))
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


def test_the_readme_is_short_and_the_blocks_are_found():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines (at most {README_LINES})"
    pages = {page for page, _, _, _ in BLOCKS}
    assert "README.md" in pages and os.path.join("docs", "guides", "evolving.md") in pages


@pytest.mark.slow
@pytest.mark.parametrize("page, number, attributes, code", BLOCKS,
                         ids=[f"{page}:{number}" for page, number, _, _ in BLOCKS])
def test_block_runs_as_pasted(page, number, attributes, code, tmp_path):
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_NEUROMOD_ZOO")}
    environment.update(TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    if 'title="In a notebook"' in attributes:
        command = [sys.executable, "-c", code]
    else:
        (tmp_path / "snippet.py").write_text(code, encoding="utf-8")
        command = [sys.executable, "snippet.py"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=environment)
    assert done.returncode == 0, (
        f"block {number} of {page} failed:\n{code}\n--- stdout\n{done.stdout[-3000:]}"
        f"\n--- stderr\n{done.stderr[-5000:]}")
