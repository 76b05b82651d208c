"""Lowerings of Dense and Embedding."""

from __future__ import annotations

from rosetta.backends.mxnet.lowering import activate, add_bias, lowers


@lowers("Dense")
def dense(F, node, xs, p, ctx):
    """y = x . kernel + bias over the last axis (``dot`` contracts x's last axis)."""
    a = node.attrs
    y = F.dot(xs[0], p["kernel"])
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)


@lowers("Embedding")
def embedding(F, node, xs, p, ctx):
    a = node.attrs
    return F.Embedding(xs[0], p["embedding"], input_dim=a["vocab_size"], output_dim=a["dim"])
