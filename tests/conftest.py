"""Which backends the tests run on.

``ROSETTA_TEST_BACKENDS`` (comma separated, or empty for none) picks them; unset means every known
backend. A backend asked for but not installed is an error, never a silent skip: each tox
environment sets the list to exactly what it installs.
"""

from __future__ import annotations

import os

from rosetta.threads import pin_threads

from selection import BACKENDS

if os.environ.get("PYTEST_XDIST_WORKER"):
    # ``pytest -n N`` runs N worker processes: one compute thread each, or their framework thread
    # pools oversubscribe the cores (set before any test imports a framework)
    pin_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "cross: compares two or more backends")


def pytest_report_header(config):
    return f"rosetta backends under test: {', '.join(BACKENDS) or 'none (core only)'}"


def pytest_ignore_collect(collection_path, config):
    # backend tests need a backend, cross-backend tests need two: the directories are not
    # collected at all otherwise (the tox env that lacks them runs no such test, none skipped)
    parts = collection_path.parts
    if "backends" in parts and "tests" in parts and not BACKENDS:
        return True
    if "cross" in parts and "tests" in parts and len(BACKENDS) < 2:
        return True
    return None
