"""``rosetta.importers.patterns.fuse`` on spec graphs (NumPy only): the attention pattern with a
k^T that is not a Transpose (one is added), and a Constant keep-mask with a row that keeps no
key (the written-out softmax gives nan there, the op 0: left written out)."""

from __future__ import annotations

import numpy as np

import rosetta as rs
from rosetta.importers.patterns import fuse


def _attention(keep=None):
    q = rs.Input((2, 3, 4), name="q")
    kt = rs.Input((2, 4, 5), name="kt")
    v = rs.Input((2, 5, 3), name="v")
    s = rs.Multiply(constant=0.5, name="scale")(rs.MatMul(name="scores")(q, kt))
    if keep is not None:
        s = rs.Where(y="-inf", name="mask")(rs.Constant(keep, name="keep")(), s)
    w = rs.Dropout(0.0, name="drop")(rs.Softmax(axis=-1, name="softmax")(s))
    return rs.Model([q, kt, v], rs.MatMul(name="out")(w, v), name="att")


def test_attention_over_any_k_transposed_is_fused_to_the_same_numbers():
    keep = np.ones((3, 5), np.int64)
    keep[0, 1:] = 0
    graph = _attention(keep)
    fused, counts = fuse(graph)
    assert counts == {"attention": 1}, counts
    assert [(n.name, n.op) for n in fused.nodes] == [
        ("keep", "Constant"), ("scores", "Transpose"), ("out", "DotProductAttention")]
    assert fused.nodes[-1].inputs == ("q", "scores", "v", "keep")
    rng = np.random.default_rng(0)
    x = {"q": rng.standard_normal((3, 2, 3, 4)), "kt": rng.standard_normal((3, 2, 4, 5)),
         "v": rng.standard_normal((3, 2, 5, 3))}
    p = graph.init_params(0)
    np.testing.assert_allclose(fused.reference_forward(p, x), graph.reference_forward(p, x),
                               rtol=1e-14, atol=0)


def test_a_constant_mask_that_drops_a_whole_row_is_left_written_out():
    keep = np.ones((3, 5), np.int64)
    keep[1] = 0
    fused, counts = fuse(_attention(keep))
    assert "attention" not in counts
    assert "DotProductAttention" not in [n.op for n in fused.nodes]


def test_same_values_names_only_nodes_that_still_hold_their_old_value():
    """The scores MatMul made k's Transpose does not hold its old value (the scores); the
    attention's last node does (the output), and so does a node left alone."""
    from rosetta.importers.patterns import same_values

    graph = _attention()
    fused, _ = fuse(graph)
    assert same_values(graph, fused) == {"out"}
