"""Lowering of Dropout (inverted; an injected keep-mask in conformance mode)."""

from __future__ import annotations

from rosetta.backends.mxnet.lowering import lowers


@lowers("Dropout")
def dropout(F, node, xs, p, ctx):
    """Training: y = x * (keep-mask / (1 - rate)) with the scaled mask the graph takes as an
    input; eval (or rate 0): y = x."""
    if ctx.training and ctx.scale is not None:
        return xs[0] * ctx.scale
    return xs[0]


@lowers("StochasticDepth")
def stochastic_depth(F, node, xs, p, ctx):
    """Training: y = x * scale, the scale (keep-mask / (1 - rate)) of shape (batch, 1, ..., 1)
    broadcast over each example; eval (or rate 0): y = x."""
    if ctx.training and ctx.scale is not None:
        return F.broadcast_mul(xs[0], ctx.scale)
    return xs[0]
