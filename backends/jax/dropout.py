"""Lowering of Dropout (flax's inverted dropout; an injected keep-mask in conformance mode)."""

from __future__ import annotations

import flax.linen as nn

from rosetta.backends.jax.lowering import lowers


@lowers("Dropout")
def dropout(node, xs, ctx):
    """Inverted dropout, rate = drop probability (flax's rule); masks from the 'dropout' rng.

    An injected keep-mask (conformance mode) replaces the RNG: y = x * mask / (1 - rate), in
    training only, as the reference does. Otherwise ``nn.Dropout``, with the rate passed as a
    scalar of the program dtype: flax draws the mask's uniforms in the dtype of ``1 - rate``, and
    a Python float would make them float64 under x64."""
    rate = node.attrs["rate"]
    if ctx.train and rate > 0.0 and ctx.masks and node.name in ctx.masks:
        return xs[0] * ctx.masks[node.name].astype(xs[0].dtype) / (1.0 - rate)
    return nn.Dropout(ctx.dtype.type(rate), deterministic=not ctx.train, name=node.name)(xs[0])


@lowers("StochasticDepth")
def stochastic_depth(node, xs, ctx):
    """One keep-mask value per example: the injected mask (conformance mode), else flax's
    ``nn.Dropout`` with its mask broadcast over every axis but the batch (``broadcast_dims``)."""
    rate = node.attrs["rate"]
    x = xs[0]
    if ctx.train and rate > 0.0 and ctx.masks and node.name in ctx.masks:
        return x * ctx.masks[node.name].astype(x.dtype) / (1.0 - rate)
    return nn.Dropout(ctx.dtype.type(rate), broadcast_dims=tuple(range(1, x.ndim)),
                      deterministic=not ctx.train, name=node.name)(x)
