"""Lowerings of the elementwise ops: Activation (the one table of ``lowering.py``) and HardSwish
(Add and Multiply are in ``math.py``)."""

from __future__ import annotations

from rosetta.backends.mxnet.lowering import activate, lowers
from rosetta.ops import elementwise as act_ops


@lowers("Activation")
def activation(F, node, xs, p, ctx):
    name, kwargs = act_ops.key(node.attrs)
    return activate(F, name, xs[0], **kwargs)


@lowers("HardSwish")
def hard_swish(F, node, xs, p, ctx):
    """x * clip(x + 3, 0, 6) / 6 (relu6 as a clip)."""
    return xs[0] * F.clip(xs[0] + 3.0, 0.0, 6.0) / 6.0
