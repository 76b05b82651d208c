"""Running a backend imports its own framework and no other."""

from __future__ import annotations

import pytest

from selection import BACKENDS
from helpers import imported_after as _imported_after

OWN = {"torch": {"torch"}, "tensorflow": {"tensorflow"}, "jax": {"jax", "flax", "optax"},
       "mxnet": {"mxnet"}}


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_imports_only_its_framework(backend):
    code = ("from rosetta import models\nfrom rosetta.training import train\n"
            f"train(models.get('cnn'), {backend!r}, steps=2, progress=False)\n")
    imported = _imported_after(code)
    assert imported - OWN[backend] == set(), imported
    assert OWN[backend] <= imported
