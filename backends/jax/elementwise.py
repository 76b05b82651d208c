"""Lowerings of the elementwise ops: Activation (the one table of ``lowering.py``) and Add."""

from __future__ import annotations

import functools
import operator

import jax

from rosetta.backends.jax.lowering import activate, lowers
from rosetta.ops import elementwise as act_ops


@lowers("Activation")
def activation(node, xs, ctx):
    name, kwargs = act_ops.key(node.attrs)
    return activate(name, xs[0], **kwargs)


@lowers("Add")
def add(node, xs, ctx):
    return functools.reduce(operator.add, xs)


@lowers("HardSwish")
def hard_swish(node, xs, ctx):
    """jax.nn.hard_swish: x * relu6(x + 3) / 6."""
    return jax.nn.hard_swish(xs[0])


@lowers("Multiply")
def multiply(node, xs, ctx):
    """x_1 * x_2 * ... left to right; jnp broadcasts size-1 axes (its vjp sums over them)."""
    return functools.reduce(operator.mul, xs)
