"""Which backends the tests run on (see conftest.py): the backends registered through the
``rosetta.backends`` entry points, none listed here."""

from __future__ import annotations

import itertools
import os

import pytest

from rosetta.backend_registry import backend_class, backend_names


def default_backends() -> list[str]:
    """Unset ROSETTA_TEST_BACKENDS: every registered backend, except that one which lives in its
    own environment (mxnet) runs only where it is installed."""
    out = []
    for name in backend_names():
        cls = backend_class(name)
        if not cls.own_environment or not cls.missing():
            out.append(name)
    return out


def selected_backends() -> list[str]:
    raw = os.environ.get("ROSETTA_TEST_BACKENDS")
    names = default_backends() if raw is None else [n.strip() for n in raw.split(",")
                                                    if n.strip()]
    known = backend_names()
    for n in names:
        if n not in known:
            raise pytest.UsageError(f"ROSETTA_TEST_BACKENDS names unknown backend {n!r}")
        cls = backend_class(n)
        if cls.missing():
            raise pytest.UsageError(f"ROSETTA_TEST_BACKENDS asks for {n!r}, which is not "
                                    f"installed: {cls.install_hint()}")
    return names


BACKENDS = selected_backends()
PAIRS = list(itertools.combinations(BACKENDS, 2))
