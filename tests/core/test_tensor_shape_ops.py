"""The tensor-level shape and indexing ops in the core, no framework: their references against
NumPy written independently, bad attributes refused at spec time with the node named, the new
attribute kinds through JSON, and Gather's int-input indices range-checked on the host."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rosetta as rs
from rosetta.datacheck import check_input_ranges, embedding_vocab
from rosetta.errors import DataError, SpecError
from rosetta.graph import Graph


def _graph(layer, shape=(3, 4, 5), kind="float", extra=None):
    x = rs.Input(shape, name="x", kind=kind)
    ins = [x] + ([extra] if extra is not None else [])
    return rs.Model(ins, layer(*ins) if extra is not None else layer(x), name="g")


def _run(g, *xs):
    names = [i.name for i in g.inputs]
    return g.reference_forward({}, dict(zip(names, xs)))


X = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)


@pytest.mark.parametrize("layer,expect", [
    (rs.Transpose((2, 0, -2)), X.transpose(0, 3, 1, 2)),
    (rs.Slice(axes=(0, -1), starts=(-2, 1), stops=(100, 5), steps=(1, 2)), X[:, -2:, :, 1:5:2]),
    (rs.Slice(axes=(1,), starts=(-100,), stops=(-1,)), X[:, :, :-1]),
    (rs.Pad(((1, 0), (0, 0), (2, 1)), value=0.5),
     np.pad(X, ((0, 0), (1, 0), (0, 0), (2, 1)), constant_values=0.5)),
    (rs.Gather(-1, indices=((0, -1), (2, 2))), X[..., [[0, 4], [2, 2]]]),
    (rs.Gather(1, indices=-1), X[:, :, -1]),
    (rs.Unsqueeze((0, -1)), X[:, None, ..., None]),
    (rs.Cast("int"), np.trunc(X - 60.5).astype(np.int64)),
])
def test_reference_is_numpy(layer, expect):
    g = _graph(layer)
    x = X - 60.5 if isinstance(expect, np.ndarray) and expect.dtype.kind == "i" else X
    got = _run(g, x)
    assert got.shape[1:] == g.output_type.shape
    np.testing.assert_array_equal(got, expect)


def test_squeeze_listed_and_all_size1_axes():
    x = np.ones((2, 1, 3, 1))
    assert _run(_graph(rs.Squeeze((-1,)), (1, 3, 1)), x).shape == (2, 1, 3)
    assert _run(_graph(rs.Squeeze(), (1, 3, 1)), x).shape == (2, 3)


def test_gather_by_input_indices_per_example():
    idx = rs.Input((2,), name="i", kind="int")
    g = _graph(rs.Gather(1), extra=idx)
    ids = np.array([[0, -1], [3, 3]])
    got = _run(g, X, ids)
    assert g.output_type.shape == (3, 2, 5)
    np.testing.assert_array_equal(got[0], X[0][:, [0, 3]])
    np.testing.assert_array_equal(got[1], X[1][:, [3, 3]])


def test_cast_truncates_toward_zero_and_changes_the_kind():
    g = _graph(rs.Cast("int"), (4,))
    np.testing.assert_array_equal(_run(g, np.array([[2.7, -2.7, 0.5, -0.5]])), [[2, -2, 0, 0]])
    assert g.output_type.kind == "int"
    assert _graph(rs.Cast("float"), (4,), kind="int").output_type.kind == "float"


@pytest.mark.parametrize("layer,words", [
    (rs.Transpose((0, 1)), "permutation of all 3"),
    (rs.Transpose((0, 0, 1)), "distinct"),
    (rs.Slice(axes=(0,), starts=(2,), stops=(1,)), "non-empty slice"),
    (rs.Slice(axes=(3,), starts=(0,), stops=(1,)), "within the 3 per-example axes"),
    (rs.Slice(axes=(0, 1), starts=(0,), stops=(1, 1)), "one start, stop and step per axis"),
    (rs.Slice(axes=(0,), starts=(0,), stops=(1,), steps=(0,)), "steps >= 1"),
    (rs.Gather(0, indices=(3,)), "indices in [-3, 3)"),
    (rs.Gather(0), "inputs (x, indices)"),
    (rs.Squeeze((0,)), "axes of size 1"),
    (rs.Pad(((1, 1),)), "one (lo, hi) pair per per-example axis"),
])
def test_bad_attributes_name_the_node(layer, words):
    with pytest.raises(SpecError, match=r"g/\w+ \(\w+\).*") as e:
        _graph(layer)
    assert words in str(e.value)


@pytest.mark.parametrize("make", [
    lambda: rs.Pad(((1, -1),)), lambda: rs.Pad("same"), lambda: rs.Gather(0, indices=[]),
    lambda: rs.Gather(0, indices=[[1, 2], [3]]), lambda: rs.Gather(0, indices=1.5),
    lambda: rs.Cast("double"), lambda: rs.Unsqueeze(()),
])
def test_malformed_attributes_are_refused_at_once(make):
    with pytest.raises(SpecError):
        make()


def test_gather_refuses_float_indices():
    f = rs.Input((2,), name="i")
    with pytest.raises(SpecError, match="int tensor of indices"):
        _graph(rs.Gather(0), extra=f)


def test_new_attribute_kinds_survive_json():
    idx = rs.Input((2,), name="i", kind="int")
    x = rs.Input((3, 4), name="x")
    h = rs.Pad(((1, 0), (0, 2)), value=-1.5, name="pad")(x)
    h = rs.Gather(0, indices=((0, -1), (2, 2)), name="take")(h)
    h = rs.Gather(-1, name="pick")(h, idx)
    h = rs.Slice(axes=(0,), starts=(-1,), stops=(2,), steps=(1,), name="cut")(h)
    g = rs.Model([x, idx], rs.Flatten(name="flat")(h), name="g")
    back = Graph.from_json(json.loads(json.dumps(g.to_json())))
    assert back.to_json() == g.to_json()
    assert back.types == g.types


def test_int_inputs_feeding_gather_indices_are_range_checked():
    idx = rs.Input((2,), name="i", kind="int")
    g = _graph(rs.Gather(1), extra=idx)
    assert embedding_vocab(g) == {"i": 4}
    check_input_ranges(g, {"i": np.array([[0, 3]])}, "file")
    with pytest.raises(DataError, match="'i'.*must be in \\[0, 3\\]"):
        check_input_ranges(g, {"i": np.array([[0, 4]])}, "file")
