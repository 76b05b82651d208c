"""Lowerings of Reduce, Softmax and LogSoftmax (``rosetta.ops.reduction``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rosetta.backends.jax.lowering import lowers
from rosetta.ops.reduction import normalize_axes
from rosetta.ops.registry import REGISTRY


@lowers("Reduce")
def reduce(node, xs, ctx):
    """jnp.sum / mean / max / min / var(ddof=correction) over the per-example axes (+1)."""
    a = node.attrs
    axes = tuple(i + 1 for i in normalize_axes(REGISTRY["Reduce"], a["axes"],
                                               len(node.in_types[0].shape), node.name))
    x, keep = xs[0], a["keepdims"]
    if a["fn"] == "var":
        return jnp.var(x, axis=axes, ddof=a["correction"], keepdims=keep)
    f = {"sum": jnp.sum, "mean": jnp.mean, "max": jnp.max, "min": jnp.min}[a["fn"]]
    return f(x, axis=axes, keepdims=keep)


@lowers("Softmax", "LogSoftmax")
def softmax(node, xs, ctx):
    """jax.nn.softmax / log_softmax (both subtract the max) over the per-example axis (+1)."""
    axis = normalize_axes(REGISTRY[node.op], (node.attrs["axis"],),
                          len(node.in_types[0].shape), node.name)[0] + 1
    fn = jax.nn.softmax if node.op == "Softmax" else jax.nn.log_softmax
    return fn(xs[0], axis=axis)


@lowers("Cumsum")
def cumsum(node, xs, ctx):
    """jnp.cumsum over the per-example axis (+1); the dtype kept."""
    axis = normalize_axes(REGISTRY[node.op], (node.attrs["axis"],),
                          len(node.in_types[0].shape), node.name)[0] + 1
    return jnp.cumsum(xs[0], axis=axis, dtype=xs[0].dtype)
