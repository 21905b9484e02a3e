"""Test-wide settings: quiet TensorFlow, deterministic seeds per test.

Hypothesis draws the same examples at every run (the "deterministic" profile),
so that a run's result depends on the code only; `HYPOTHESIS_PROFILE=explore`
draws new ones (a failure prints the example to pin with `@example`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
