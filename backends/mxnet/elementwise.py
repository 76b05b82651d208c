"""Lowerings of the elementwise ops: Activation (the one table of ``lowering.py``) and Add."""

from __future__ import annotations

from rosetta.backends.mxnet.lowering import activate, lowers
from rosetta.ops import elementwise as act_ops


@lowers("Activation")
def activation(F, node, xs, p, ctx):
    name, kwargs = act_ops.key(node.attrs)
    return activate(F, name, xs[0], **kwargs)


@lowers("Add")
def add(F, node, xs, p, ctx):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


@lowers("HardSwish")
def hard_swish(F, node, xs, p, ctx):
    """x * clip(x + 3, 0, 6) / 6 (relu6 as a clip)."""
    return xs[0] * F.clip(xs[0] + 3.0, 0.0, 6.0) / 6.0


@lowers("Multiply")
def multiply(F, node, xs, p, ctx):
    """x_1 * x_2 * ... left to right with F.broadcast_mul (a symbol's ``*`` does not broadcast);
    its gradient sums over the broadcast axes."""
    y = xs[0]
    for x in xs[1:]:
        y = F.broadcast_mul(y, x)
    return y
