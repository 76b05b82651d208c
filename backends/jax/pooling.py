"""Lowerings of the pools: explicit strides and the explicit pads of the one padding rule; average
pools exclude padded cells."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta.backends.jax.lowering import lowers
from rosetta.ops.windows import spatial_plan, time_plan


@lowers("MaxPool2D")
def max_pool2d(node, xs, ctx):
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2])
    return nn.max_pool(xs[0], a["kernel_size"], strides=a["strides"], padding=pads)


@lowers("AvgPool2D")
def avg_pool2d(node, xs, ctx):
    """Window sum of real cells / number of real cells (padded cells excluded).

    This is flax's ``avg_pool(count_include_pad=False)`` rule written out with ``nn.pool``: flax
    builds its divisor from ``jnp.ones`` in the default float dtype, which is float64 under x64,
    and would turn a float32 program's pooling (and its gradient) into float64 arithmetic.
    """
    a = node.attrs
    x = xs[0]
    _, pads = spatial_plan(a, node.in_types[0].shape[:2])
    window = dict(window_shape=a["kernel_size"], strides=a["strides"], padding=pads)
    total = nn.pool(x, 0.0, jax.lax.add, **window)
    count = nn.pool(jnp.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, jax.lax.add, **window)
    return total / count


@lowers("MaxPool1D")
def max_pool1d(node, xs, ctx):
    a = node.attrs
    _, pads = time_plan(a, node.in_types[0].shape[0])
    return nn.max_pool(xs[0], a["kernel_size"], strides=a["strides"], padding=[pads])


@lowers("AvgPool1D")
def avg_pool1d(node, xs, ctx):
    """Window sum of real cells / number of real cells, as ``avg_pool2d``."""
    a = node.attrs
    x = xs[0]
    _, pads = time_plan(a, node.in_types[0].shape[0])
    window = dict(window_shape=a["kernel_size"], strides=a["strides"], padding=[pads])
    total = nn.pool(x, 0.0, jax.lax.add, **window)
    count = nn.pool(jnp.ones((1, x.shape[1], 1), x.dtype), 0.0, jax.lax.add, **window)
    return total / count


@lowers("GlobalMaxPool2D")
def global_max_pool2d(node, xs, ctx):
    return jnp.max(xs[0], axis=(1, 2))


@lowers("GlobalAvgPool2D")
def global_avg_pool2d(node, xs, ctx):
    return jnp.mean(xs[0], axis=(1, 2))


@lowers("SequencePool")
def sequence_pool(node, xs, ctx):
    """Mean or max over the real steps t < length of (N, T, C) (every step without lengths)."""
    x = xs[0]
    mean = node.attrs["mode"] == "mean"
    if len(xs) == 1:
        return jnp.mean(x, axis=1) if mean else jnp.max(x, axis=1)
    real = (jnp.arange(x.shape[1])[None, :] < xs[1][:, None])[..., None]       # (N, T, 1)
    if mean:
        return jnp.sum(jnp.where(real, x, 0), axis=1) / xs[1][:, None].astype(x.dtype)
    return jnp.max(jnp.where(real, x, -jnp.inf), axis=1)
