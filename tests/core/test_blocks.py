"""MultiHeadAttention, PositionEmbedding and TransformerBlock in the spec: the nodes a block
builds, lossless JSON, errors that name the place, and the references against naive loops."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rosetta as rs
from rosetta.ops import REGISTRY, RefContext


def _spec(graph):
    return rs.TrainSpec(model=graph, loss=rs.losses.MeanSquaredError(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"))


def _block(**kw):
    x = rs.Input((4, 4), name="x")
    n = rs.Input((), kind="int", name="lengths")
    y = rs.TransformerBlock(x, heads=2, head_dim=2, ff_dim=6, lengths=n, name="blk", **kw)
    return rs.Model([x, n], y, name="m")


def test_prenorm_block_nodes():
    g = _block(causal=True, dropout=0.1)
    assert [(n.name, n.op) for n in g.nodes] == [
        ("blk_ln1", "LayerNorm"), ("blk_attn", "MultiHeadAttention"), ("blk_drop1", "Dropout"),
        ("blk_add1", "Add"), ("blk_ln2", "LayerNorm"), ("blk_ff1", "Dense"),
        ("blk_ff2", "Dense"), ("blk_drop2", "Dropout"), ("blk_add2", "Add")]
    by = {n.name: n for n in g.nodes}
    assert by["blk_attn"].inputs == ("blk_ln1", "blk_ln1", "lengths")
    assert by["blk_attn"].attrs["causal"] and by["blk_attn"].attrs["dropout"] == 0.1
    assert by["blk_add1"].inputs == ("x", "blk_drop1")
    assert by["blk_add2"].inputs == ("blk_add1", "blk_drop2")
    assert by["blk_ff1"].attrs["activation"] == "gelu_exact"
    assert by["blk_ff1"].out_type.shape == (4, 6) and g.output_type.shape == (4, 4)


def test_postnorm_block_nodes_without_dropout():
    g = _block(norm_first=False, activation="relu", epsilon=1e-3)
    assert [n.name for n in g.nodes] == ["blk_attn", "blk_add1", "blk_ln1", "blk_ff1", "blk_ff2",
                                         "blk_add2", "blk_ln2"]
    by = {n.name: n for n in g.nodes}
    assert by["blk_attn"].inputs == ("x", "x", "lengths")
    assert by["blk_add1"].inputs == ("x", "blk_attn")
    assert by["blk_ln1"].inputs == ("blk_add1",) and by["blk_ln1"].attrs["epsilon"] == 1e-3
    assert by["blk_add2"].inputs == ("blk_ln1", "blk_ff2")
    assert list(g.outputs) == ["blk_ln2"]


def test_block_reference_is_the_composition():
    """pre-norm: h = x + Att(LN1(x)); y = h + FF(LN2(h)), from the ops' own references."""
    g = _block(causal=True)
    p = g.init_params(3)
    rng = np.random.default_rng(0)
    x, n = rng.standard_normal((2, 4, 4)), np.array([2, 4])

    def op(name, a, *xs):
        node = next(m for m in g.nodes if m.name == name)
        params = {k: p[f"{name}/{k}"] for k in node.params}
        return REGISTRY[node.op].reference(node.attrs, params, list(xs), RefContext())

    h = x + op("blk_attn", None, *(2 * [op("blk_ln1", None, x)]), n)
    y = h + op("blk_ff2", None, op("blk_ff1", None, op("blk_ln2", None, h)))
    np.testing.assert_allclose(g.reference_forward(p, {"x": x, "lengths": n}), y, rtol=1e-14)


@pytest.mark.parametrize("kw", [dict(norm_first=True, causal=True, dropout=0.2),
                                dict(norm_first=False)])
def test_block_json_roundtrip(kw):
    spec = _spec(_block(**kw))
    text = spec.dumps()
    back = rs.TrainSpec.from_json(json.loads(text))
    assert back == spec and back.dumps() == text


def _attention_reference_loops(a, p, xq, xv, lengths):
    """Per example, head, query and key, with scalar loops."""
    n, tq, _ = xq.shape
    tk = xv.shape[1]
    h, d = a["heads"], a["head_dim"]
    out = np.zeros((n, tq, p["output_kernel"].shape[-1]))
    for b in range(n):
        for i in range(tq):
            acc = p["output_bias"].copy()
            for hh in range(h):
                q = xq[b, i] @ p["query_kernel"][:, hh] + p["query_bias"][hh]
                keys = [j for j in range(tk)
                        if j < lengths[b] and not (a["causal"] and j > i)]
                s = np.array([q @ (xv[b, j] @ p["key_kernel"][:, hh] + p["key_bias"][hh])
                              for j in keys]) / np.sqrt(d)
                w = np.exp(s - s.max())
                w /= w.sum()
                o = sum(wj * (xv[b, j] @ p["value_kernel"][:, hh] + p["value_bias"][hh])
                        for wj, j in zip(w, keys))
                acc += o @ p["output_kernel"][hh]
            out[b, i] = acc
    return out


@pytest.mark.parametrize("attrs,tq,tk,ev", [
    (dict(heads=2, head_dim=3, causal=True), 4, 4, 3),
    (dict(heads=3, head_dim=2, output_dim=5), 2, 5, 2),
])
def test_attention_reference_against_loops(attrs, tq, tk, ev):
    op = REGISTRY["MultiHeadAttention"]
    a = op.resolve_attrs(attrs, "t")
    types = [rs.ops.TensorType((tq, 3)), rs.ops.TensorType((tk, ev))]
    rng = np.random.default_rng(1)
    p = {k: rng.standard_normal(d.shape) for k, d in op.params(a, types).items()}
    xq, xv = rng.standard_normal((2, tq, 3)), rng.standard_normal((2, tk, ev))
    lengths = np.array([1, tk])
    got = op.reference(a, p, [xq, xv, lengths], RefContext())
    np.testing.assert_allclose(got, _attention_reference_loops(a, p, xq, xv, lengths),
                               rtol=1e-12, atol=1e-13)


def test_attention_params_dropout_mask_and_flops():
    q, v = rs.Input((3, 4), name="q"), rs.Input((5, 2), name="v")
    g = rs.Model([q, v], rs.MultiHeadAttention(2, 3, output_dim=6, dropout=0.1, name="a")(q, v))
    shapes = {k: d.shape for k, d in g.param_defs().items()}
    assert shapes == {"a/query_kernel": (4, 2, 3), "a/key_kernel": (2, 2, 3),
                      "a/value_kernel": (2, 2, 3), "a/output_kernel": (2, 3, 6),
                      "a/query_bias": (2, 3), "a/key_bias": (2, 3), "a/value_bias": (2, 3),
                      "a/output_bias": (6,)}
    node = g.nodes[0]
    assert node.out_type.shape == (3, 6)
    assert node.opdef.dropout_mask_shape(node.attrs, node.in_types, node.out_type) == (2, 3, 5)
    assert g.flops_per_example() > 0
    g0 = rs.Model([q, v], rs.MultiHeadAttention(2, 3, use_bias=False, name="a")(q, v))
    assert set(g0.param_defs()) == {"a/query_kernel", "a/key_kernel", "a/value_kernel",
                                    "a/output_kernel"}
    n0 = g0.nodes[0]
    assert n0.opdef.dropout_mask_shape(n0.attrs, n0.in_types, n0.out_type) is None


def test_position_embedding():
    x = rs.Input((3, 2), name="x")
    g = rs.Model(x, rs.PositionEmbedding(5, name="pos")(x))
    assert g.param_defs()["pos/embedding"].shape == (5, 2)
    p = {"pos/embedding": np.arange(10.0).reshape(5, 2)}
    xs = np.ones((2, 3, 2))
    np.testing.assert_array_equal(g.reference_forward(p, xs), xs + p["pos/embedding"][:3])


def _raises(match, build):
    with pytest.raises(rs.SpecError, match=match):
        build()


def test_spec_errors_name_the_place():
    def causal_cross():
        q, v = rs.Input((2, 4), name="q"), rs.Input((3, 4), name="v")
        rs.Model([q, v], rs.MultiHeadAttention(1, 2, causal=True, name="att")(q, v))
    _raises(r"m\w*/att.*same length.*Tq = 2, Tk = 3|att.*Tq = 2, Tk = 3", causal_cross)

    def too_long():
        x = rs.Input((6, 4), name="x")
        rs.Model(x, rs.PositionEmbedding(5, name="pos")(x))
    _raises(r"pos.*max_length = 5.*T = 6", too_long)

    _raises(r"heads.*positive", lambda: rs.MultiHeadAttention(0, 2))
    _raises(r"head_dim.*integer", lambda: rs.MultiHeadAttention(2, 1.5))
    _raises(r"output_dim.*positive", lambda: rs.MultiHeadAttention(2, 2, output_dim=0))
    _raises(r"dropout.*\[0, 1\)", lambda: rs.MultiHeadAttention(2, 2, dropout=1.0))

    def float_lengths():
        x, n = rs.Input((3, 4), name="x"), rs.Input((), name="n")
        rs.Model([x, n], rs.MultiHeadAttention(2, 2, name="att")(x, x, n))
    _raises(r"att.*sequence lengths.*int tensor", float_lengths)

    def rank3():
        x = rs.Input((3, 4, 1), name="x")
        rs.Model(x, rs.MultiHeadAttention(2, 2, name="att")(x, x))
    _raises(r"att.*rank 2", rank3)

    def one_input():
        x = rs.Input((3, 4), name="x")
        rs.Model(x, rs.MultiHeadAttention(2, 2, name="att")(x))
    _raises(r"att.*at least 2 inputs", one_input)

    x = rs.Input((3, 4), name="x")
    _raises(r"activation", lambda: rs.TransformerBlock(x, heads=1, head_dim=2, ff_dim=4,
                                                       activation="softmax"))
    _raises(r"heads.*positive", lambda: rs.TransformerBlock(x, heads=0, head_dim=2, ff_dim=4))
    _raises(r"name", lambda: rs.TransformerBlock(x, heads=1, head_dim=2, ff_dim=4,
                                                 name="a/b"))


def test_lengths_are_checked_once_for_every_backend():
    g = _block()
    x = np.zeros((2, 4, 4))
    with pytest.raises(rs.DataError, match=r"lengths.*\[1, 4\]"):
        g.reference_forward(g.init_params(0), {"x": x, "lengths": np.array([0, 2])})
