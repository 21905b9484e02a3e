"""Test-wide settings: quiet TensorFlow, deterministic seeds per test.

The suite's processes (JAX workers, examples, JAX-backend tests) compile many of the
same JAX programs: they share one compilation cache, a folder of the session's,
removed at its end. An executable read from the cache is the one that compiling
would make, so results do not depend on it (`JAX_COMPILATION_CACHE_DIR` set
beforehand names another folder, kept).

Hypothesis draws the same examples at every run (the "deterministic" profile),
so that a run's result depends on the code only; `HYPOTHESIS_PROFILE=explore`
draws new ones (a failure prints the example to pin with `@example`).
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE = tempfile.mkdtemp(prefix="keras_neuromod_jax_cache_")
    atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
    # every program, however quick to compile: the suite's are small
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import keras  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(autouse=True)
def _seed_everything():
    keras.utils.set_random_seed(1234)
    yield
