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
    """F.Embedding; ``padding_idx`` p: the rows read at ids == p pass through ``BlockGrad``
    (``where`` on the mask broadcast to the output selects, so the forward is exactly the
    lookup), so row p's gradient is exactly 0."""
    a = node.attrs
    y = F.Embedding(xs[0], p["embedding"], input_dim=a["vocab_size"], output_dim=a["dim"])
    if a["padding_idx"] is None:
        return y
    at_pad = F.broadcast_like(F.expand_dims(xs[0] == a["padding_idx"], axis=-1), y)
    return F.where(at_pad, F.BlockGrad(y), y)
