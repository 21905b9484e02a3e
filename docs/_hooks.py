"""MkDocs hook: the repository's figures (evolution runs, evidence, examples) in the site.

The figures stay where the commands that draw them write them (`zoo/runs/`,
`zoo/evidence/`, `examples/figures/`); this hook adds each to the site under
`figures/<its path in the repository>`, so that a page shows it with
`![...](../figures/zoo/runs/nm_adam_digits/fitness.png)`.
"""

import glob
import os

from mkdocs.structure.files import File

FIGURES = (
    "zoo/runs/*/fitness.png",
    "zoo/evidence/*.png",
    "zoo/evidence/general/*.png",
    "examples/figures/*.png",
)


def on_files(files, config):
    root = os.path.dirname(os.path.abspath(config["config_file_path"]))
    for pattern in FIGURES:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            files.append(File.generated(config, f"figures/{relative}", abs_src_path=path))
    return files
