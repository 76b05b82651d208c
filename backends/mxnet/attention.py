"""MultiHeadAttention, DotProductAttention and PositionEmbedding, written with ``dot`` /
``batch_dot``.

DotProductAttention is written out too (``batch_dot`` on (-1, T, D) views, ``where`` for the
masks, ``softmax``): MXNet 1.9 has no fused attention over computed q, k, v with a mask, and its
CPU operators would run the same chain. A row that keeps no key gets every key for its softmax
and weights 0 after it (the spec's rule: no nan, no gradient).

MXNet 1.9's fused attention operators (``interleaved_matmul_selfatt_*``) take one packed
(T, N, 3*h*d) projection and have no key-padding or causal mask input, so the canonical rule
(``rosetta.ops.attention``) is written out; parameters keep the canonical layout:
query/key/value kernels (E, h, d), output kernel (h, d, out), biases (h, d) and (out,).

    q = x_q . Wq + bq (N, Tq, h, d) -> (N*h, Tq, d);  likewise k, v from x_v
    s = q k^T / sqrt(d);  s = -inf where j >= L or (causal) j > i;  w = softmax_j(s)
    training with dropout: w = w * mask / (1 - rate) (the mask an input of the graph)
    o = w v -> (N, Tq, h*d);  y = o . Wout + bout

The key bias shifts every score of a row by the same q . bk, which softmax ignores: it enters
the graph multiplied by 0, so its gradient is exactly 0 (the canonical value), not rounding noise."""

from __future__ import annotations

import math

from rosetta.backends.mxnet.lowering import NEG_INF, add_bias, lowers, step_mask
from rosetta.backends.mxnet.math import batch_like, full_rank


def _heads(F, x, kernel, bias, h, d):
    """(N, T, E) . (E, h, d) [+ (h, d)] -> (N*h, T, d)."""
    y = F.dot(x, F.reshape(kernel, shape=(0, -1)))                    # (N, T, h*d)
    if bias is not None:
        y = F.broadcast_add(y, F.reshape(bias, shape=(-1,)))
    y = F.reshape(y, shape=(0, 0, h, d))
    return F.reshape(F.transpose(y, axes=(0, 2, 1, 3)), shape=(-3, 0, 0))


@lowers("MultiHeadAttention")
def multi_head_attention(F, node, xs, p, ctx):
    a = node.attrs
    h, d = a["heads"], a["head_dim"]
    tq, tk = node.in_types[0].shape[0], node.in_types[1].shape[0]
    bias = a["use_bias"]
    q = _heads(F, xs[0], p["query_kernel"], p["query_bias"] if bias else None, h, d)
    k = _heads(F, xs[1], p["key_kernel"], None, h, d)
    if bias:  # softmax ignores the key bias: it enters times 0, its gradient is exactly 0
        k = F.broadcast_add(k, 0.0 * F.sum(p["key_bias"]))
    v = _heads(F, xs[1], p["value_kernel"], p["value_bias"] if bias else None, h, d)
    s = F.batch_dot(q, k, transpose_b=True) / math.sqrt(d)            # (N*h, Tq, Tk)
    s = F.reshape(s, shape=(-4, -1, h, 0, 0))                          # (N, h, Tq, Tk)
    keep = None
    if len(xs) > 2:
        keep = F.reshape(step_mask(F, xs[2], tk), shape=(0, 1, 1, tk))  # (N, 1, 1, Tk)
    if a["causal"]:
        i = F.reshape(F.arange(tq), shape=(tq, 1))
        j = F.reshape(F.arange(tk), shape=(1, tk))
        lower = F.reshape(F.cast(F.broadcast_lesser_equal(j, i), dtype="float64"),
                          shape=(1, 1, tq, tk))
        keep = lower if keep is None else F.broadcast_mul(keep, lower)
    if keep is not None:
        keep = F.broadcast_like(F.cast(keep, dtype=ctx.dtype), s)
        s = F.where(keep, s, F.zeros_like(s) + NEG_INF)
    w = F.softmax(s, axis=-1)
    if ctx.training and ctx.scale is not None:
        w = w * ctx.scale
    w = F.reshape(w, shape=(-3, 0, 0))                                 # (N*h, Tq, Tk)
    o = F.batch_dot(w, v)                                              # (N*h, Tq, d)
    o = F.reshape(F.transpose(F.reshape(o, shape=(-4, -1, h, 0, 0)), axes=(0, 2, 1, 3)),
                  shape=(0, 0, -3))                                    # (N, Tq, h*d)
    y = F.dot(o, F.reshape(p["output_kernel"], shape=(-3, 0)))
    return add_bias(F, y, p["output_bias"]) if bias else y


@lowers("DotProductAttention")
def dot_product_attention(F, node, xs, p, ctx):
    """w = softmax(q k^T * scale (+ float mask), -inf where the int mask or causal drops a key),
    0 in a row that keeps no key; y = w v (``rosetta.ops.attention.DotProductAttention``)."""
    from rosetta.ops.attention import DotProductAttention as Op

    tq_, tk_, tv_ = node.in_types[:3]
    rank, (tq, d), (tk, dv) = len(tq_.shape), tq_.shape[-2:], tv_.shape[-2:]
    scores = (*tq_.shape[:-1], tk)
    s = F.batch_dot(F.reshape(xs[0], shape=(-1, tq, d)), F.reshape(xs[1], shape=(-1, tk, d)),
                    transpose_b=True) * Op.scale(node.attrs, d)
    s = F.reshape(s, shape=(-1, *scores))
    keep = bias = None
    if node.attrs["causal"]:
        i = F.reshape(F.arange(tq), shape=(tq, 1))
        j = F.reshape(F.arange(tk), shape=(1, tk))
        keep = F.broadcast_like(F.reshape(F.cast(F.broadcast_lesser_equal(j, i), dtype=ctx.dtype),
                                          shape=(1,) * (rank - 1) + (tq, tk)), s)
    if len(xs) > 3:
        mt = node.in_types[3]
        m = full_rank(F, xs[3], rank, len(mt.shape))
        m = F.broadcast_to(batch_like(F, [xs[0], m], [tq_, mt])[1], shape=(0, *scores))
        if mt.kind == "int":
            m = F.cast(m != 0, dtype=ctx.dtype)
            keep = m if keep is None else keep * m
        else:
            bias = m
    if keep is None and bias is None:
        w = F.softmax(s, axis=-1)
    else:
        alive = keep if keep is not None else F.ones_like(s)
        if bias is not None:
            alive = alive * F.broadcast_greater(bias, F.ones_like(bias) * NEG_INF)
        dead = F.broadcast_like(1.0 - F.max(alive, axis=-1, keepdims=True), s)
        if bias is not None:
            s = s + F.where(dead, F.zeros_like(s), bias)
        if keep is not None:
            s = F.where(F.maximum(keep, dead), s, F.zeros_like(s) + NEG_INF)
        w = F.softmax(s, axis=-1)
        w = F.where(dead, F.zeros_like(w), w)
    o = F.batch_dot(F.reshape(w, shape=(-1, tq, tk)), F.reshape(xs[2], shape=(-1, tk, dv)))
    return F.reshape(o, shape=(-1, *node.out_type.shape))


@lowers("PositionEmbedding")
def position_embedding(F, node, xs, p, ctx):
    """y[t] = x[t] + embedding[t] for t < T."""
    t_len = node.in_types[0].shape[0]
    rows = F.slice_axis(p["embedding"], axis=0, begin=0, end=t_len)
    return F.broadcast_add(xs[0], F.expand_dims(rows, axis=0))
