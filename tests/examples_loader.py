"""Load a script of examples/ as a module, as the tests exercise them."""

import importlib.util
import os

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples")


def load_example(name):
    """Import `examples/<name>.py` (its `main` is not run) and return the module."""
    spec = importlib.util.spec_from_file_location(
        f"{name}_example", os.path.join(EXAMPLES, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
