"""Lowerings of BatchNorm, LayerNorm, RMSNorm and GroupNorm: ``use_fast_variance=False`` and the
explicit epsilon everywhere."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from rosetta.backends.jax.lowering import lowers
from rosetta.ops.normalization import unbiased_factor


class UnbiasedBatchNorm(nn.Module):
    """Canonical BatchNorm with ``running_var == "unbiased"`` (torch's rule; flax's nn.BatchNorm
    stores the biased variance): statistics over every axis but the last, the biased variance
    (centred first) normalises, the running ``batch_stats`` var takes var * n / (n - 1), n the
    values per channel (not while the variables are being created). Under data parallelism the
    batch is the global one (a sharded array: flax's statistics are global, and so is n)."""

    momentum: float
    epsilon: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        axes = tuple(range(x.ndim - 1))
        scale = self.param("scale", nn.initializers.ones, (c,), self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.dtype)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), self.dtype)
        running_var = self.variable("batch_stats", "var", jnp.ones, (c,), self.dtype)
        if train:
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            if not self.is_initializing():
                m = self.momentum
                factor = unbiased_factor(x.size // c)
                running_mean.value = m * running_mean.value + (1 - m) * mean
                running_var.value = m * running_var.value + (1 - m) * var * factor
        else:
            mean, var = running_mean.value, running_var.value
        return (x - mean) / jnp.sqrt(var + self.epsilon) * scale + bias


@lowers("BatchNorm")
def batch_norm(node, xs, ctx):
    a = node.attrs
    if a["running_var"] == "unbiased":
        return UnbiasedBatchNorm(a["momentum"], a["epsilon"], ctx.dtype,
                                 name=node.name)(xs[0], ctx.train)
    return nn.BatchNorm(use_running_average=not ctx.train, momentum=a["momentum"],
                        epsilon=a["epsilon"], use_fast_variance=False, dtype=ctx.dtype,
                        param_dtype=ctx.params, name=node.name)(xs[0])


class InstanceNorm(nn.Module):
    """Canonical InstanceNorm2D on (N, H, W, C): per-example statistics over H, W in training
    (biased variance, centred first), the running ``batch_stats`` mean and var in eval; training
    folds the batch average of the mean and of the unbiased variance into them (not while the
    variables are being created)."""

    momentum: float
    epsilon: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.dtype)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), self.dtype)
        running_var = self.variable("batch_stats", "var", jnp.ones, (c,), self.dtype)
        if train:
            mean = jnp.mean(x, axis=(1, 2), keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
            if not self.is_initializing():
                cells = x.shape[1] * x.shape[2]
                m = self.momentum
                running_mean.value = (m * running_mean.value
                                      + (1 - m) * jnp.mean(mean, axis=(0, 1, 2)))
                running_var.value = (m * running_var.value + (1 - m)
                                     * jnp.mean(var, axis=(0, 1, 2)) * (cells / (cells - 1)))
        else:
            mean, var = running_mean.value, running_var.value
        return (x - mean) / jnp.sqrt(var + self.epsilon) * scale + bias


@lowers("InstanceNorm2D")
def instance_norm2d(node, xs, ctx):
    a = node.attrs
    return InstanceNorm(a["momentum"], a["epsilon"], ctx.dtype, name=node.name)(xs[0], ctx.train)


@lowers("LayerNorm")
def layer_norm(node, xs, ctx):
    return nn.LayerNorm(epsilon=node.attrs["epsilon"], use_fast_variance=False, dtype=ctx.dtype,
                        param_dtype=ctx.params, name=node.name)(xs[0])


@lowers("RMSNorm")
def rms_norm(node, xs, ctx):
    """nn.RMSNorm over the last axis, explicit epsilon: y = x * rsqrt(mean(x^2) + eps) * scale."""
    return nn.RMSNorm(epsilon=node.attrs["epsilon"], use_fast_variance=False, dtype=ctx.dtype,
                      param_dtype=ctx.params, name=node.name)(xs[0])


@lowers("GroupNorm")
def group_norm(node, xs, ctx):
    """nn.GroupNorm (channels last, contiguous groups, statistics over every non-batch axis of a
    group, biased variance), explicit epsilon (flax: 1e-6), ``use_fast_variance=False``."""
    a = node.attrs
    return nn.GroupNorm(num_groups=a["groups"], epsilon=a["epsilon"], use_fast_variance=False,
                        dtype=ctx.dtype, param_dtype=ctx.params, name=node.name)(xs[0])
