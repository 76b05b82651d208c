"""Cases for MultiHeadAttention, PositionEmbedding, TransformerBlock (joined into ``cases.CASES``).

Dropout on the attention weights is checked with injected masks in
``tests/backends/test_attention.py`` (the harness here compares training forwards without masks).
The torch lowering (projections + SDPA) has two mask paths (causal alone as SDPA's ``is_causal``;
any other mask as one boolean ``attn_mask``) and no path of its own for E != heads * head_dim:
the cases cover all of them.
"""

from __future__ import annotations

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
    ("position_embedding", _position_embedding),
    ("transformer_prenorm_causal", _block(True, True, "gelu_exact")),
    ("transformer_postnorm_padded", _block(False, False, "relu")),
]
