"""The lowering contract, for every backend under test and the Keras export lowering: each
lowers every registered op, registered by its op-family modules (``@lowers``), and the op
tables in its ``layers.py`` are whole. What a lowering cannot express for some attributes is
refused at build time by that lowering (named there), never by a missing table entry."""

from __future__ import annotations

import importlib

import pytest

from rosetta.ops import REGISTRY

from selection import BACKENDS

# ops the Keras export lowering refuses outright, with the reason (none today: it refuses
# attribute combinations, e.g. a Conv2DTranspose with strides > 1 and dilation > 1)
KERAS_REFUSES: dict[str, str] = {}


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_lowers_every_registered_op(backend):
    table = importlib.import_module(f"rosetta.backends.{backend}.layers").LOWERINGS
    missing = sorted(set(REGISTRY) - set(table))
    assert not missing, f"{backend} has no lowering for {missing}"
    assert not set(table) - set(REGISTRY), f"{backend} lowers unknown ops"


@pytest.mark.parametrize("backend", BACKENDS)
def test_lowerings_register_from_their_family_modules(backend):
    """Every lowering lives in an op-family module of its backend (not in ``layers.py``, which
    only imports them), and ``lowers`` refuses a second lowering of the same op."""
    lowering = importlib.import_module(f"rosetta.backends.{backend}.lowering")
    table = importlib.import_module(f"rosetta.backends.{backend}.layers").LOWERINGS
    assert table is lowering.LOWERINGS
    for op, entry in table.items():
        fn = getattr(entry, "build", entry)
        module = fn.__module__
        assert module.startswith(f"rosetta.backends.{backend}."), (op, module)
        assert module.rsplit(".", 1)[1] not in ("layers", "lowering"), (op, module)
    with pytest.raises(ValueError, match="already"):
        kwargs = {"accepts": "either"} if backend == "torch" else {}
        lowering.lowers("Dense", **kwargs)(lambda *a: None)


def test_the_keras_export_lowers_every_registered_op():
    from rosetta.backends.keras.model import LOWERINGS

    lowered = set(LOWERINGS) | set(KERAS_REFUSES)
    assert set(REGISTRY) <= lowered, sorted(set(REGISTRY) - lowered)
    assert not set(KERAS_REFUSES) & set(LOWERINGS)
