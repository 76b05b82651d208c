"""Cases for MultiHeadAttention, DotProductAttention, PositionEmbedding, TransformerBlock (joined
into ``cases.CASES``).

Dropout on the attention weights is checked with injected masks in
``tests/backends/test_attention.py`` (the harness here compares training forwards without masks).
The torch lowering (projections + SDPA) has two mask paths (causal alone as SDPA's ``is_causal``;
any other mask as one boolean ``attn_mask``) and no path of its own for E != heads * head_dim:
the cases cover all of them.
"""

from __future__ import annotations

import numpy as np

import rosetta as rs

MSE = rs.losses.MeanSquaredError


def _spec(inputs, out, name):
    return rs.TrainSpec(model=rs.Model(inputs, out, name=name), loss=MSE(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"), steps=5)


def _self_attention(t=3, e=4, lengths=False, name="mha", **attrs):
    def build():
        x = rs.Input((t, e), name="x")
        ins, args = [x], [x, x]
        if lengths:
            n = rs.Input((), kind="int", name="lengths")
            ins.append(n)
            args.append(n)
        return _spec(ins, rs.MultiHeadAttention(name="attn", **attrs)(*args), name)
    return build


def _cross_attention():
    q = rs.Input((2, 4), name="q")
    v = rs.Input((3, 3), name="v")
    y = rs.MultiHeadAttention(2, 2, output_dim=3, name="attn")(q, v)
    return _spec([q, v], y, "mha_cross")


def _cross_attention_key_lengths():
    """Tq < Tk: the lengths measure the keys (valid up to Tk = 4, beyond Tq = 2)."""
    q = rs.Input((2, 4), name="q")
    v = rs.Input((4, 3), name="v")
    n = rs.Input((), kind="int", name="key_lengths")
    y = rs.MultiHeadAttention(2, 2, name="attn")(q, v, n)
    return _spec([q, v, n], y, "mha_cross_lengths")


def _position_embedding():
    x = rs.Input((3, 4), name="x")
    y = rs.Dense(2, name="head")(rs.PositionEmbedding(5, name="pos")(x))
    return _spec(x, y, "position_embedding")


def _block(norm_first, causal, activation):
    def build():
        x = rs.Input((4, 4), name="x")
        n = rs.Input((), kind="int", name="lengths")
        h = rs.PositionEmbedding(4, name="pos")(x)
        y = rs.TransformerBlock(h, heads=2, head_dim=2, ff_dim=6, lengths=n, causal=causal,
                                norm_first=norm_first, activation=activation, name="block")
        return _spec([x, n], y, "transformer")
    return build


def _qkv(xq, xk, d, dv, name):
    """q, k, v projections; k without a bias (q.bk shifts a whole row of scores, which softmax
    ignores: its exact gradient is 0 and autodiff's rounding noise would differ per backend)."""
    return (rs.Dense(d, name=f"{name}_q")(xq), rs.Dense(d, use_bias=False, name=f"{name}_k")(xk),
            rs.Dense(dv, name=f"{name}_v")(xk))


def _dpa_masks():
    """DotProductAttention with one leading axis, Tq = 3 != Tk = 4, every mask path on the same
    q, k, v: causal alone (top-left) with a scale of its own; a shared int keep-mask (3, 4) of
    lower rank with a row that keeps no key (weights 0); a computed float mask (a Dense of the
    queries, so its gradient is checked) with causal; a shared float mask with -inf entries and
    a row all -inf."""
    xq = rs.Input((2, 3, 4), name="xq")
    xk = rs.Input((2, 4, 4), name="xk")
    qkv = _qkv(xq, xk, 3, 2, "p")
    keep = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]])
    bias = np.array([[0.5, -np.inf, 0.0, -1.0], [-np.inf] * 4, [0.0, 2.0, -np.inf, 0.25]])
    ys = [rs.DotProductAttention(causal=True, scale=0.3, name="causal")(*qkv),
          rs.DotProductAttention(name="keep")(*qkv, rs.Constant(keep, name="keep_mask")()),
          rs.DotProductAttention(causal=True, name="bias_causal")(
              *qkv, rs.Dense(4, name="bias_mask")(xq)),
          rs.DotProductAttention(name="inf")(*qkv, rs.Constant(bias, name="inf_mask")())]
    return _spec([xq, xk], rs.Concatenate(name="cat")(ys), "dpa_masks")


def _dpa_ranks():
    """DotProductAttention on (T, D) per example (no leading axis, no mask, default scale) and
    with two leading axes and a batched int keep-mask input that broadcasts over the first."""
    x = rs.Input((2, 2, 3, 4), name="x")
    m = rs.Input((1, 2, 3, 3), kind="int", name="keep")
    qkv = _qkv(x, x, 2, 2, "p")
    y1 = rs.DotProductAttention(name="plain")(
        *[rs.Reshape((12, 2), name=f"flat_{i}")(t) for i, t in enumerate(qkv)])
    y2 = rs.DotProductAttention(name="lead2")(*qkv, m)
    y = rs.Concatenate(name="cat")([rs.Flatten(name="f1")(y1), rs.Flatten(name="f2")(y2)])
    return _spec([x, m], y, "dpa_ranks")


CASES: list = [
    # E == heads * head_dim
    ("mha_self", _self_attention(heads=2, head_dim=2)),
    ("mha_causal", _self_attention(t=4, heads=2, head_dim=2, causal=True)),
    ("mha_cross_output_dim", _cross_attention),
    ("mha_cross_key_lengths", _cross_attention_key_lengths),
    # E != heads * head_dim
    ("mha_key_lengths", _self_attention(t=4, lengths=True, heads=2, head_dim=3)),
    ("mha_causal_padded_output_dim", _self_attention(t=4, e=3, lengths=True, heads=1,
                                                     head_dim=2, causal=True, output_dim=2)),
    ("mha_no_bias", _self_attention(heads=2, head_dim=2, use_bias=False)),
    ("dpa_masks", _dpa_masks),
    ("dpa_ranks", _dpa_ranks),
    ("position_embedding", _position_embedding),
    ("transformer_prenorm_causal", _block(True, True, "gelu_exact")),
    ("transformer_postnorm_padded", _block(False, False, "relu")),
]
