"""The tensor-math ops at the spec level: batch-broadcast values (Constant, Parameter) and the
rule for each kind of op, the broadcasting rule over the full shape, Constant values in the
JSON (strict: +-inf as strings), and the attribute errors. Numbers (forward, gradients,
backends) are in tests/cases_tensor_math.py through the op tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rosetta as rs
from rosetta.ops import RefContext, get_op


def _model(out, *inputs):
    return rs.Model(list(inputs), out, name="m")


def test_constant_and_parameter_are_batch_broadcast_and_the_flag_follows_the_inputs():
    x = rs.Input((3, 4), name="x")
    c = rs.Constant(np.ones((3, 4)), name="c")()
    p = rs.Parameter((4,), "zeros", name="p")()
    shared = rs.Dense(2, name="d")(rs.Add(name="cp")(c, p))          # all inputs shared
    y = rs.Add(name="y")(x, rs.Dense(4, name="back")(shared))
    g = _model(y, x)
    t = g.types
    assert t["c"].batch_broadcast and t["p"].batch_broadcast and t["cp"].batch_broadcast
    assert t["d"].batch_broadcast and not t["y"].batch_broadcast
    assert g.param_defs()["p/value"].shape == (4,)
    assert "batch_broadcast" not in json.dumps(g.to_json())       # inferred, never stored


def test_mixing_shared_and_batched_inputs_needs_a_broadcasting_op():
    x = rs.Input((3, 4), name="x")
    c = rs.Constant(np.ones((3, 4)), name="c")()
    with pytest.raises(rs.SpecError, match="m/cat.*batch-broadcast.*Expand them first"):
        _model(rs.Concatenate(axis=0, name="cat")([x, c]), x)
    with pytest.raises(rs.SpecError, match="m/drop.*random mask per example"):
        _model(rs.Add(name="a")(x, rs.Dropout(0.5, name="drop")(c)), x)
    with pytest.raises(rs.SpecError, match="output 'c' depends on no model input"):
        _model(c, x)
    e = rs.Expand((-1, -1), name="e")(c)                           # to the run's batch
    g = _model(rs.Concatenate(axis=0, name="cat")([x, e]), x)
    assert g.output_type.shape == (6, 4) and not g.output_type.batch_broadcast


def test_broadcasting_is_numpy_over_the_full_shape():
    x, v = rs.Input((3, 4), name="x"), rs.Input((4,), name="v")
    c = rs.Constant(np.arange(4.0), name="c")()                     # (1, 4): fits (N, 3, 4)
    assert _model(rs.Subtract(name="s")(x, c), x).output_type.shape == (3, 4)
    with pytest.raises(rs.SpecError, match="m/s.*one rank"):       # (N, 4) vs (N, 3, 4)
        _model(rs.Subtract(name="s")(x, v), x, v)
    w = rs.Parameter((4, 5), "zeros", name="w")()
    assert _model(rs.MatMul(name="mm")(x, w), x).output_type.shape == (3, 5)
    with pytest.raises(rs.SpecError, match="m/mm.*last axis"):
        _model(rs.MatMul(name="mm")(x, x), x)


def test_constant_values_roundtrip_strict_json_with_infinities():
    x = rs.Input((2,), name="x")
    mask = rs.Constant(np.array([[0.0, -np.inf], [np.inf, 1.5]]), name="mask")()
    ids = rs.Constant(np.array([1, 0], np.int32), name="ids")()
    h = rs.Where(y=float("-inf"), name="w")(rs.Equal(constant=1, name="one")(ids),
                                             rs.Add(name="a")(x, rs.Reduce("min", (0,),
                                                                           name="r")(mask)))
    spec = rs.TrainSpec(model=_model(rs.Softmax(name="sm")(h), x),
                        loss=rs.losses.MeanSquaredError(), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("images"), steps=1)
    text = spec.dumps()
    json.loads(text, parse_constant=lambda s: pytest.fail(f"non-standard JSON {s}"))
    back = rs.TrainSpec.from_json(json.loads(text))
    assert back == spec
    node = {n.name: n for n in back.model.nodes}
    assert node["ids"].attrs["value"].dtype == np.int64 and node["ids"].out_type.kind == "int"
    np.testing.assert_array_equal(node["mask"].attrs["value"], [[0.0, -np.inf], [np.inf, 1.5]])
    assert node["w"].attrs["y"] == -np.inf
    y = back.model.reference_forward({}, np.zeros((3, 2)))
    np.testing.assert_allclose(y, np.tile([1.0, 0.0], (3, 1)))   # exp(-inf) = 0


@pytest.mark.parametrize("build,words", [
    (lambda: rs.Constant(np.array([1.0, np.nan])), "nan"),
    (lambda: rs.Reduce("var", (0,)), "explicit correction"),
    (lambda: rs.Reduce("sum", (0,), correction=1), "correction only with fn='var'"),
    (lambda: rs.Unary("log1p"), "must be one of"),
    (lambda: rs.Parameter((2, 0), "zeros"), "positive sizes"),
])
def test_bad_attributes_are_refused_at_construction(build, words):
    with pytest.raises(rs.SpecError, match=words):
        build()


@pytest.mark.parametrize("build,words", [
    (lambda x, i: rs.Subtract(constant=1.0, name="op")(x, x), "one input with a constant"),
    (lambda x, i: rs.Divide(name="op")(x), "2 inputs"),
    (lambda x, i: rs.Divide(name="op")(x, x, x), "2 inputs"),
    (lambda x, i: rs.Add(reverse=True, name="op")(x, x), "reverse only with a constant"),
    (lambda x, i: rs.Divide(name="op")(i, i), "expected a float input"),
    (lambda x, i: rs.Equal(constant=0.5, name="op")(i), "integer constant for an int input"),
    (lambda x, i: rs.Equal(name="op")(x, i), "one kind"),
    (lambda x, i: rs.Where(name="op")(x, x, x), "int condition"),
    (lambda x, i: rs.Where(x=0.0, y=1.0, name="op")(i, x), "one scalar"),
    (lambda x, i: rs.Reduce("mean", (2,), name="op")(x), "within the 2 per-example axes"),
    (lambda x, i: rs.Reduce("mean", (0, -2), name="op")(x), "distinct axes"),
    (lambda x, i: rs.Reduce("var", (1,), correction=1, name="op")(
        rs.Reduce("mean", (1,), keepdims=True, name="k")(x)), "more than correction"),
    (lambda x, i: rs.Softmax(2, name="op")(x), "within the 2"),
    (lambda x, i: rs.Expand((4,), name="op")(x), "at least the input's rank"),
    (lambda x, i: rs.Expand((-1, 4, 4), name="op")(x), "-1 only on an axis the input has"),
    (lambda x, i: rs.Expand((3, 5), name="op")(x), "size 1 or the target size"),
])
def test_bad_graphs_name_the_node(build, words):
    x, i = rs.Input((3, 4), name="x"), rs.Input((3, 4), kind="int", name="i")
    with pytest.raises(rs.SpecError, match=f"m/op.*{words}"):
        rs.Model([x, i], rs.Flatten(name="f")(build(x, i)), name="m")


def test_expand_reference_takes_the_run_batch_for_a_shared_value():
    op = get_op("Expand")
    a = op.resolve_attrs({"shape": (2, -1, 3)}, "t")
    shared = np.arange(3.0).reshape(1, 1, 3)                      # per example (1, 3), shared
    y = op.reference(a, {}, [shared], RefContext(batch=4))
    assert y.shape == (4, 2, 1, 3) and (y == np.arange(3.0)).all()
    batched = np.arange(6.0).reshape(2, 1, 3)
    assert op.reference(a, {}, [batched], RefContext(batch=2)).shape == (2, 2, 1, 3)
