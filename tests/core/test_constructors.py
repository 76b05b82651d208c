"""The layer constructors are generated from the registry (``python -m rosetta.ops.codegen``)."""

import inspect

import pytest

import rosetta as rs
from rosetta import constructors
from rosetta.ops import REGISTRY, codegen
from rosetta.ops.registry import REQUIRED


def test_checked_in_constructors_match_the_registry():
    """Regenerating gives the checked-in module byte for byte (run the codegen after changing an
    op's attributes, positional names or docstring)."""
    assert codegen.TARGET.read_text() == codegen.source(), \
        "rosetta/constructors.py is out of date: run python -m rosetta.ops.codegen"
    assert codegen.main(["--check"]) == 0


def test_signatures_come_from_the_declarations():
    for name, op in REGISTRY.items():
        sig = inspect.signature(getattr(rs, name))
        params = sig.parameters
        positional = [p for p in params.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert [p.name for p in positional] == list(op.positional), name
        for key, attr in op.attrs.items():
            want = inspect.Parameter.empty if attr.default is REQUIRED else attr.default
            assert params[key].default == want, (name, key)
        assert op.__doc__.strip().splitlines()[0] in inspect.getdoc(getattr(rs, name))


def test_a_constructor_builds_the_same_layer_as_before():
    layer = rs.Conv2D(4, 3, strides=2, name="c")
    assert (layer.op, layer.name) == ("Conv2D", "c")
    assert layer.attrs["filters"] == 4 and layer.attrs["kernel_size"] == (3, 3)
    assert layer.attrs["strides"] == (2, 2) and layer.attrs["padding"] == "valid"
    assert constructors.Dense is rs.Dense is rs.layers.Dense


def test_wrong_arguments_are_refused():
    with pytest.raises(TypeError):
        rs.Dense(3, "relu")  # activation is keyword-only
    with pytest.raises(rs.SpecError, match="unknown attribute"):
        rs.Dense(3, bogus=1)
    with pytest.raises(TypeError):
        rs.Dense()  # units is required
