"""Lowerings of BatchNorm, LayerNorm, RMSNorm and GroupNorm: ``use_fast_variance=False`` and the
explicit epsilon everywhere."""

from __future__ import annotations

import flax.linen as nn

from rosetta.backends.jax.lowering import lowers


@lowers("BatchNorm")
def batch_norm(node, xs, ctx):
    a = node.attrs
    return nn.BatchNorm(use_running_average=not ctx.train, momentum=a["momentum"],
                        epsilon=a["epsilon"], use_fast_variance=False, dtype=ctx.dtype,
                        param_dtype=ctx.dtype, name=node.name)(xs[0])


@lowers("LayerNorm")
def layer_norm(node, xs, ctx):
    return nn.LayerNorm(epsilon=node.attrs["epsilon"], use_fast_variance=False, dtype=ctx.dtype,
                        param_dtype=ctx.dtype, name=node.name)(xs[0])


@lowers("RMSNorm")
def rms_norm(node, xs, ctx):
    """nn.RMSNorm over the last axis, explicit epsilon: y = x * rsqrt(mean(x^2) + eps) * scale."""
    return nn.RMSNorm(epsilon=node.attrs["epsilon"], use_fast_variance=False, dtype=ctx.dtype,
                      param_dtype=ctx.dtype, name=node.name)(xs[0])


@lowers("GroupNorm")
def group_norm(node, xs, ctx):
    """nn.GroupNorm (channels last, contiguous groups, statistics over every non-batch axis of a
    group, biased variance), explicit epsilon (flax: 1e-6), ``use_fast_variance=False``."""
    a = node.attrs
    return nn.GroupNorm(num_groups=a["groups"], epsilon=a["epsilon"], use_fast_variance=False,
                        dtype=ctx.dtype, param_dtype=ctx.dtype, name=node.name)(xs[0])
