"""The documentation's examples train on torch, TensorFlow and JAX: ``test_examples.py`` is
collected only where all three are under test (as tests/cross is only where two are); the text
checks run everywhere."""

from __future__ import annotations

from selection import BACKENDS

EXAMPLE_BACKENDS = ("torch", "tensorflow", "jax")


def pytest_ignore_collect(collection_path, config):
    if collection_path.name == "test_examples.py" and not set(EXAMPLE_BACKENDS) <= set(BACKENDS):
        return True
    return None
