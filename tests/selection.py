"""Which backends the tests run on (see conftest.py)."""

from __future__ import annotations

import itertools
import os

import pytest

from rosetta.backend_registry import KNOWN, OWN_ENVIRONMENT, install_hint, missing_modules


def default_backends() -> list[str]:
    """Unset ROSETTA_TEST_BACKENDS: every known backend of the main environment, and a backend
    that lives in its own environment (mxnet) only where it is installed."""
    return [n for n in KNOWN if n not in OWN_ENVIRONMENT or not missing_modules(n)]


def selected_backends() -> list[str]:
    raw = os.environ.get("ROSETTA_TEST_BACKENDS")
    names = default_backends() if raw is None else [n.strip() for n in raw.split(",")
                                                    if n.strip()]
    for n in names:
        if n not in KNOWN:
            raise pytest.UsageError(f"ROSETTA_TEST_BACKENDS names unknown backend {n!r}")
        if missing_modules(n):
            raise pytest.UsageError(f"ROSETTA_TEST_BACKENDS asks for {n!r}, which is not "
                                    f"installed: {install_hint(n)}")
    return names


BACKENDS = selected_backends()
PAIRS = list(itertools.combinations(BACKENDS, 2))
