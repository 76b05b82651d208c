"""Lowerings of the elementwise ops: Activation (the one table of ``lowering.py``) and HardSwish
(Add and Multiply are in ``math.py``)."""

from __future__ import annotations

import jax

from rosetta.backends.jax.lowering import activate, lowers
from rosetta.ops import elementwise as act_ops


@lowers("Activation")
def activation(node, xs, ctx):
    name, kwargs = act_ops.key(node.attrs)
    return activate(name, xs[0], **kwargs)


@lowers("HardSwish")
def hard_swish(node, xs, ctx):
    """jax.nn.hard_swish: x * relu6(x + 3) / 6."""
    return jax.nn.hard_swish(xs[0])
