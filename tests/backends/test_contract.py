"""The lowering contract, for every backend under test and the Keras export lowering: each
lowers every registered op, registered by its op-family modules (``@lowers``), and the op
tables in its ``layers.py`` are whole. What a lowering cannot express for some attributes is
refused at build time by that lowering (named there), never by a missing table entry."""

from __future__ import annotations

import importlib

import pytest

from rosetta.ops import REGISTRY

from selection import BACKENDS

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


def test_the_keras_export_lowers_or_refuses_every_registered_op():
    """Every op has a Keras lowering, or a declared refusal with its reason (``refuses``: what
    no model of Keras built-in layers can hold; attribute combinations it cannot express, e.g. a
    Conv2DTranspose with strides > 1 and dilation > 1, are refused by the lowering itself)."""
    from rosetta.backends.keras.model import LOWERINGS, REFUSED

    declared = set(LOWERINGS) | set(REFUSED)
    assert set(REGISTRY) <= declared, sorted(set(REGISTRY) - declared)
    assert not set(REFUSED) & set(LOWERINGS)
    assert all(len(reason) > 20 for reason in REFUSED.values()), REFUSED


def test_the_keras_export_gives_its_reason_for_a_refused_op():
    import types

    import rosetta as rs
    from rosetta.backends.keras.model import check_exportable
    from rosetta.errors import BackendUnavailable

    x = rs.Input((3, 3, 2), name="x")
    graph = rs.Model(x, rs.InstanceNorm2D(name="inorm")(x), name="m")
    with pytest.raises(BackendUnavailable, match="inorm \\(InstanceNorm2D\\).*running statistics"):
        check_exportable(types.SimpleNamespace(graph=graph, dtype="float32"))
