"""One lowering per registered op: ``LOWERINGS[op](node, inputs, ctx) -> output``.

Lowerings run inside ``GraphModule.__call__`` (a ``@nn.compact`` method), so every flax submodule
they create is a child of the graph module, named by the node name: the variables come out as
``{"params": {node: {param}}, "batch_stats": {node: {"mean", "var"}}}``, the canonical paths.

Where flax's default differs from the canonical rule (DESIGN section 3) the lowering sets it:

* Conv2D and the pools get explicit ((top, bottom), (left, right)) pads from
  ``rosetta.ops.windows.spatial_plan`` (the one padding rule), never the string ``"SAME"``;
* Conv1D and the 1-D pools get the explicit (lo, hi) pad of the same rule (``time_plan``);
* pools pass ``strides`` explicitly (flax defaults to 1; canonical defaults to the window);
* AvgPool2D excludes padded cells (flax's ``count_include_pad=False`` rule);
* BatchNorm, LayerNorm, GroupNorm and RMSNorm use ``use_fast_variance=False``
  (E[x^2] - E[x]^2 cancels badly) and an explicit epsilon (flax LayerNorm, GroupNorm and RMSNorm
  default to 1e-6); BatchNorm ``momentum`` is the weight of the old running value in both flax
  and rosetta, and both store the biased batch variance;
* gelu passes ``approximate`` explicitly (flax/JAX default to tanh), leaky_relu its slope;
* Dense and Conv use ``Precision.HIGHEST`` (no TF32 / bf16 passes on GPU).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta.ops import elementwise as act_ops
from rosetta.ops.windows import spatial_plan
from rosetta.ops.windows import time_plan
from rosetta.ops.shape import positive_axis

HIGHEST = jax.lax.Precision.HIGHEST


@dataclass(frozen=True)
class Context:
    """What a lowering needs beyond the node: the program dtype, the mode, and injected dropout
    keep-masks ({Dropout node: mask}, conformance mode) if any."""

    dtype: jnp.dtype
    train: bool
    masks: dict | None = None


# --- activations: ONE table, for the Activation op and the fused ``activation`` attribute ------

ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "gelu_exact": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "leaky_relu": lambda x, slope: jax.nn.leaky_relu(x, negative_slope=slope),
    # ``axis`` is per-example (rosetta); the batch axis shifts non-negative axes by one
    "softmax": lambda x, axis=-1: jax.nn.softmax(x, axis=axis + 1 if axis >= 0 else axis),
}

assert set(act_ops.FUSED) <= set(ACTIVATIONS), "an activation name has no JAX lowering"


def activate(name: str, x, **kwargs):
    return ACTIVATIONS[name](x, **kwargs)


# --- ops with parameters -----------------------------------------------------------------------

def dense(node, xs, ctx):
    a = node.attrs
    y = nn.Dense(a["units"], use_bias=a["use_bias"], dtype=ctx.dtype, param_dtype=ctx.dtype,
                 precision=HIGHEST, name=node.name)(xs[0])
    return activate(a["activation"], y)


def conv2d(node, xs, ctx):
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2], a["dilation"])
    y = nn.Conv(a["filters"], a["kernel_size"], strides=a["strides"], padding=pads,
                kernel_dilation=a["dilation"], feature_group_count=a["groups"],
                use_bias=a["use_bias"], dtype=ctx.dtype, param_dtype=ctx.dtype,
                precision=HIGHEST, name=node.name)(xs[0])
    return activate(a["activation"], y)


def conv1d(node, xs, ctx):
    """nn.Conv over the time axis of (N, T, C) with the explicit (lo, hi) pads of the shared rule;
    flax's 1-D kernel (k, C/groups, filters) is the canonical one."""
    a = node.attrs
    _, pads = time_plan(a, node.in_types[0].shape[0], a["dilation"][0])
    y = nn.Conv(a["filters"], a["kernel_size"], strides=a["strides"], padding=[pads],
                kernel_dilation=a["dilation"], feature_group_count=a["groups"],
                use_bias=a["use_bias"], dtype=ctx.dtype, param_dtype=ctx.dtype,
                precision=HIGHEST, name=node.name)(xs[0])
    return activate(a["activation"], y)


def batch_norm(node, xs, ctx):
    a = node.attrs
    return nn.BatchNorm(use_running_average=not ctx.train, momentum=a["momentum"],
                        epsilon=a["epsilon"], use_fast_variance=False, dtype=ctx.dtype,
                        param_dtype=ctx.dtype, name=node.name)(xs[0])


def layer_norm(node, xs, ctx):
    return nn.LayerNorm(epsilon=node.attrs["epsilon"], use_fast_variance=False, dtype=ctx.dtype,
                        param_dtype=ctx.dtype, name=node.name)(xs[0])


def rms_norm(node, xs, ctx):
    """nn.RMSNorm over the last axis, explicit epsilon: y = x * rsqrt(mean(x^2) + eps) * scale."""
    return nn.RMSNorm(epsilon=node.attrs["epsilon"], use_fast_variance=False, dtype=ctx.dtype,
                      param_dtype=ctx.dtype, name=node.name)(xs[0])


def group_norm(node, xs, ctx):
    """nn.GroupNorm (channels last, contiguous groups, statistics over every non-batch axis of a
    group, biased variance), explicit epsilon (flax: 1e-6), ``use_fast_variance=False``."""
    a = node.attrs
    return nn.GroupNorm(num_groups=a["groups"], epsilon=a["epsilon"], use_fast_variance=False,
                        dtype=ctx.dtype, param_dtype=ctx.dtype, name=node.name)(xs[0])


def embedding(node, xs, ctx):
    a = node.attrs
    return nn.Embed(a["vocab_size"], a["dim"], dtype=ctx.dtype, param_dtype=ctx.dtype,
                    name=node.name)(xs[0])


def dropout(node, xs, ctx):
    """Inverted dropout, rate = drop probability (flax's rule); masks from the 'dropout' rng.

    An injected keep-mask (conformance mode) replaces the RNG: y = x * mask / (1 - rate), in
    training only, as the reference does. Otherwise ``nn.Dropout``, with the rate passed as a
    scalar of the program dtype: flax draws the mask's uniforms in the dtype of ``1 - rate``, and
    a Python float would make them float64 under x64."""
    rate = node.attrs["rate"]
    if ctx.train and rate > 0.0 and ctx.masks and node.name in ctx.masks:
        return xs[0] * ctx.masks[node.name] / (1.0 - rate)
    return nn.Dropout(ctx.dtype.type(rate), deterministic=not ctx.train, name=node.name)(xs[0])


# --- parameter-free ops --------------------------------------------------------------------------

def activation(node, xs, ctx):
    name, kwargs = act_ops.key(node.attrs)
    return activate(name, xs[0], **kwargs)


def max_pool2d(node, xs, ctx):
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2])
    return nn.max_pool(xs[0], a["kernel_size"], strides=a["strides"], padding=pads)


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


def max_pool1d(node, xs, ctx):
    a = node.attrs
    _, pads = time_plan(a, node.in_types[0].shape[0])
    return nn.max_pool(xs[0], a["kernel_size"], strides=a["strides"], padding=[pads])


def avg_pool1d(node, xs, ctx):
    """Window sum of real cells / number of real cells, as ``avg_pool2d``."""
    a = node.attrs
    x = xs[0]
    _, pads = time_plan(a, node.in_types[0].shape[0])
    window = dict(window_shape=a["kernel_size"], strides=a["strides"], padding=[pads])
    total = nn.pool(x, 0.0, jax.lax.add, **window)
    count = nn.pool(jnp.ones((1, x.shape[1], 1), x.dtype), 0.0, jax.lax.add, **window)
    return total / count


def zero_padding2d(node, xs, ctx):
    return jnp.pad(xs[0], ((0, 0), *node.attrs["padding"], (0, 0)))


def upsampling2d(node, xs, ctx):
    """Nearest, integer factors: jnp.repeat along H then W (exact)."""
    x = xs[0]
    for axis, f in zip((1, 2), node.attrs["size"]):
        if f != 1:
            x = jnp.repeat(x, f, axis=axis)
    return x


def global_max_pool2d(node, xs, ctx):
    return jnp.max(xs[0], axis=(1, 2))


def global_avg_pool2d(node, xs, ctx):
    return jnp.mean(xs[0], axis=(1, 2))


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


def flatten(node, xs, ctx):
    """Channels-last row-major, as canonical: (H, W, C) -> H*W*C."""
    return xs[0].reshape(xs[0].shape[0], -1)


def reshape(node, xs, ctx):
    return xs[0].reshape(xs[0].shape[0], *node.attrs["shape"])


def add(node, xs, ctx):
    return functools.reduce(operator.add, xs)


def concatenate(node, xs, ctx):
    axis = positive_axis(node.attrs["axis"], len(node.in_types[0].shape)) + 1
    return jnp.concatenate(xs, axis=axis)


LOWERINGS = {
    "Dense": dense,
    "Conv2D": conv2d,
    "MaxPool2D": max_pool2d,
    "AvgPool2D": avg_pool2d,
    "GlobalAvgPool2D": global_avg_pool2d,
    "Flatten": flatten,
    "Reshape": reshape,
    "Add": add,
    "Concatenate": concatenate,
    "Activation": activation,
    "Dropout": dropout,
    "BatchNorm": batch_norm,
    "LayerNorm": layer_norm,
    "Embedding": embedding,
    "ZeroPadding2D": zero_padding2d,
    "UpSampling2D": upsampling2d,
    "GlobalMaxPool2D": global_max_pool2d,
    "RMSNorm": rms_norm,
    "GroupNorm": group_norm,
    "Conv1D": conv1d,
    "MaxPool1D": max_pool1d,
    "AvgPool1D": avg_pool1d,
    "SequencePool": sequence_pool,
}

# The op families kept in their own modules (same file names in every backend) join the table here;
# they may import from this module, whose names above are defined by now.
from rosetta.backends.jax import attention as _attention  # noqa: E402
from rosetta.backends.jax import conv_variants as _conv_variants  # noqa: E402
from rosetta.backends.jax import recurrent as _recurrent  # noqa: E402

for _family in (_attention, _conv_variants, _recurrent):
    LOWERINGS.update(_family.LOWERINGS)
