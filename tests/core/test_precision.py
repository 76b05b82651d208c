"""The precision table and the loss-scale rule (rosetta.precision), without a framework."""

from __future__ import annotations

import pytest

import rosetta as rs
from rosetta.errors import BackendUnavailable, CheckpointError, DataError, SpecError
from rosetta.ops.registry import REGISTRY
from rosetta.precision import (ELEMENTWISE, FLOAT32, PRECISIONS, PRODUCT, LossScale, family,
                               node_types, policy, resolve, sentence, check_graph)


def test_every_op_has_a_family_and_its_docstring_says_it():
    for name, op in REGISTRY.items():
        assert family(name) in (PRODUCT, FLOAT32, ELEMENTWISE)
        assert sentence(name).split()[0] in op.__doc__.replace("\n", " "), name
        assert " ".join(sentence(name).split()) in " ".join(op.__doc__.split()), name


def test_the_table():
    m = policy("mixed_bfloat16")
    assert (m.param, m.low, m.mixed, m.loss_scale, m.host) == (
        "float32", "bfloat16", True, False, "float32")
    assert m.types(PRODUCT) == ("bfloat16",) * 3 and m.types(FLOAT32) == ("float32",) * 3
    assert m.types(ELEMENTWISE) == ("same",) * 3
    f16 = policy("mixed_float16")
    assert f16.low == "float16" and f16.loss_scale
    b = policy("bfloat16")
    assert b.param == "bfloat16" and b.types(FLOAT32) == ("bfloat16",) * 3
    assert policy("float64").host == "float64"
    assert family("Activation", {"fn": "softmax"}) == FLOAT32
    assert family("Activation", {"fn": "relu"}) == ELEMENTWISE
    with pytest.raises(BackendUnavailable, match="precision must be one of"):
        policy("float16")
    assert set(PRECISIONS) == {"float32", "float64", "bfloat16", "mixed_bfloat16",
                               "mixed_float16"}


def test_node_types_follow_the_table():
    g = rs.Sequential([rs.Dense(4, name="d1"), rs.LayerNorm(name="ln"),
                       rs.Activation("relu", name="act"), rs.Dense(2, name="d2")], (3,))
    t = node_types(g, policy("mixed_float16"))
    assert (t["d1"], t["ln"], t["act"], t["d2"]) == ("float16", "float32", "float32",
                                                     "float16")
    assert set(node_types(g, policy("bfloat16")).values()) == {"bfloat16"}


def test_fused_softmax_under_mixed_is_refused_with_the_fix():
    g = rs.Sequential([rs.Dense(4, activation="softmax", name="d")], (3,))
    with pytest.raises(SpecError, match="make the softmax an Activation node"):
        check_graph(g, policy("mixed_bfloat16"))
    check_graph(g, policy("bfloat16"))


def test_dtype_is_an_alias_of_precision():
    assert resolve("float64", None) == "float64"
    assert resolve(None, "mixed_bfloat16") == "mixed_bfloat16"
    assert resolve("float32", "float32") == "float32"
    with pytest.raises(DataError, match="disagree"):
        resolve("float32", "bfloat16")


def test_loss_scale_rule_growth_interval_2_and_a_planted_infinite_gradient():
    # good, good (grows), skip (backs off, counter restarts), good, good (grows), good
    s = LossScale(interval=2)
    got = []
    for finite in (True, True, False, True, True, True):
        applied = s.after(finite)
        got.append((applied, s.scale, s.good))
    assert got == [(True, 2.0 ** 15, 1), (True, 2.0 ** 16, 0), (False, 2.0 ** 15, 0),
                   (True, 2.0 ** 15, 1), (True, 2.0 ** 16, 0), (True, 2.0 ** 16, 1)]


def test_loss_scale_state_round_trips_and_is_checked():
    s = LossScale(scale=1024.0, good=7)
    t = LossScale()
    t.load(s.to_json())
    assert (t.scale, t.good) == (1024.0, 7)
    for bad in ({"scale": 0.0, "good": 0}, {"scale": 2.0, "good": 2000}, {"good": 1},
                {"scale": float("inf"), "good": 0}):
        with pytest.raises(CheckpointError, match="loss_scale"):
            LossScale().load(bad)
