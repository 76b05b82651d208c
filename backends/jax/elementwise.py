"""Lowerings of the elementwise ops: Activation (the one table of ``lowering.py``) and Add."""

from __future__ import annotations

import functools
import operator

from rosetta.backends.jax.lowering import activate, lowers
from rosetta.ops import elementwise as act_ops


# --- parameter-free ops --------------------------------------------------------------------------
@lowers("Activation")
def activation(node, xs, ctx):
    name, kwargs = act_ops.key(node.attrs)
    return activate(name, xs[0], **kwargs)


@lowers("Add")
def add(node, xs, ctx):
    return functools.reduce(operator.add, xs)
