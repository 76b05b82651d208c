"""Lowerings of DepthwiseConv2D, SeparableConv2D and Conv2DTranspose (joined to layers.LOWERINGS).

Each op is one flax module named by the node, holding its parameters in canonical layout, and
computing with ``jax.lax`` convolutions (every bias added by ``bias.add_bias``: its gradient
accumulated in float32) (NHWC / HWIO, ``Precision.HIGHEST``, the explicit pads of
the shared padding rule):

* DepthwiseConv2D: ``conv_general_dilated`` with ``feature_group_count=C`` on the kernel
  reshaped (kH, kW, C, M) -> (kH, kW, 1, C·M) (output channel c·M + m, as canonical). Not flax
  ``nn.Conv(feature_group_count=C)``: it would store that reshaped kernel, not the canonical one.
* SeparableConv2D: that depthwise convolution, then a 1x1 convolution and the bias.
* Conv2DTranspose: ``jax.lax.conv_transpose`` (a convolution of the input dilated by the strides)
  with explicit pads and the kernel flipped in space: the canonical scatter rule, written as a
  gather, reads the taps in reverse. Not flax ``nn.ConvTranspose``: without ``transpose_kernel``
  it applies the kernel unflipped (a different op), with it it stores Keras' (kH, kW, out, in).
  Pads: valid (k_eff - 1, k_eff - 1) gives the full output; same keeps the cells
  [lo, lo + in·s) of it, with zeros past its end when k_eff < s."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta.backends.jax.bias import Biased, add_bias
from rosetta.backends.jax.lowering import HIGHEST, activate, lowers
from rosetta.ops.convolution import Conv2DTranspose as _TransposeOp
from rosetta.ops.windows import spatial_plan, time_plan


@lowers("Conv2D")
def conv2d(node, xs, ctx):
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2], a["dilation"])
    inner = nn.Conv(a["filters"], a["kernel_size"], strides=a["strides"], padding=pads,
                    kernel_dilation=a["dilation"], feature_group_count=a["groups"],
                    use_bias=False, dtype=ctx.dtype, param_dtype=ctx.params,
                    precision=HIGHEST, parent=None)
    y = Biased(inner, a["filters"], a["use_bias"], ctx.params, name=node.name)(xs[0])
    return activate(a["activation"], y)


@lowers("Conv1D")
def conv1d(node, xs, ctx):
    """nn.Conv over the time axis of (N, T, C) with the explicit (lo, hi) pads of the shared rule;
    flax's 1-D kernel (k, C/groups, filters) is the canonical one."""
    a = node.attrs
    _, pads = time_plan(a, node.in_types[0].shape[0], a["dilation"][0])
    inner = nn.Conv(a["filters"], a["kernel_size"], strides=a["strides"], padding=[pads],
                    kernel_dilation=a["dilation"], feature_group_count=a["groups"],
                    use_bias=False, dtype=ctx.dtype, param_dtype=ctx.params,
                    precision=HIGHEST, parent=None)
    y = Biased(inner, a["filters"], a["use_bias"], ctx.params, name=node.name)(xs[0])
    return activate(a["activation"], y)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _depthwise(x, kernel, strides, pads, dilation):
    kh, kw, c, m = kernel.shape
    return jax.lax.conv_general_dilated(
        x, kernel.reshape(kh, kw, 1, c * m), window_strides=strides, padding=pads,
        rhs_dilation=dilation, dimension_numbers=_NHWC, feature_group_count=c,
        precision=HIGHEST)


class DepthwiseConv(nn.Module):
    """Depthwise (and, with ``filters``, separable) convolution with canonical parameters."""

    kernel_size: tuple
    multiplier: int
    strides: tuple
    pads: tuple
    dilation: tuple
    use_bias: bool
    filters: int | None = None     # set: separable (a 1x1 pointwise convolution follows)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        shape = (*self.kernel_size, c, self.multiplier)
        init = nn.initializers.zeros   # the values are always loaded from canonical ones
        if self.filters is None:
            y = _depthwise(x, self.param("kernel", init, shape, self.dtype), self.strides,
                           self.pads, self.dilation)
            channels = c * self.multiplier
        else:
            d = _depthwise(x, self.param("depthwise_kernel", init, shape, self.dtype),
                           self.strides, self.pads, self.dilation)
            pointwise = self.param("pointwise_kernel", init,
                                   (1, 1, c * self.multiplier, self.filters), self.dtype)
            y = jax.lax.conv_general_dilated(d, pointwise, (1, 1), "VALID",
                                             dimension_numbers=_NHWC, precision=HIGHEST)
            channels = self.filters
        if self.use_bias:
            y = add_bias(y, self.param("bias", init, (channels,), self.dtype))
        return y


class ConvTranspose(nn.Module):
    """Transposed convolution with the canonical (kH, kW, in, out) kernel (see the module doc)."""

    filters: int
    kernel_size: tuple
    strides: tuple
    pads: tuple
    dilation: tuple
    use_bias: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros
        kernel = self.param("kernel", init, (*self.kernel_size, x.shape[-1], self.filters),
                            self.dtype)
        y = jax.lax.conv_transpose(x, jnp.flip(kernel, (0, 1)), self.strides, self.pads,
                                   rhs_dilation=self.dilation, dimension_numbers=_NHWC,
                                   precision=HIGHEST)
        if self.use_bias:
            y = add_bias(y, self.param("bias", init, (self.filters,), self.dtype))
        return y


def _window_module(node, ctx, filters=None):
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2], a["dilation"])
    return DepthwiseConv(a["kernel_size"], a["depth_multiplier"], a["strides"], pads,
                         a["dilation"], a["use_bias"], filters, ctx.dtype, name=node.name)


@lowers("DepthwiseConv2D")
def depthwise_conv2d(node, xs, ctx):
    return activate(node.attrs["activation"], _window_module(node, ctx)(xs[0]))


@lowers("SeparableConv2D")
def separable_conv2d(node, xs, ctx):
    a = node.attrs
    return activate(a["activation"], _window_module(node, ctx, a["filters"])(xs[0]))


@lowers("Conv2DTranspose")
def conv2d_transpose(node, xs, ctx):
    """Pads of the stride-dilated input per axis: k_eff - 1 - lo before (the full output starts
    k_eff - 1 cells before the first input cell), and after what makes ``out`` cells:
    (in - 1)·s + 1 + before + after - k_eff + 1 = out (never negative)."""
    a = node.attrs
    hw = node.in_types[0].shape[:2]
    out, lo = _TransposeOp.plan(a, hw)
    pads = []
    for ax in range(2):
        eff = a["dilation"][ax] * (a["kernel_size"][ax] - 1) + 1
        before = eff - 1 - lo[ax]
        pads.append((before, out[ax] + eff - 2 - (hw[ax] - 1) * a["strides"][ax] - before))
    y = ConvTranspose(a["filters"], a["kernel_size"], a["strides"], tuple(pads), a["dilation"],
                      a["use_bias"], ctx.dtype, name=node.name)(xs[0])
    return activate(a["activation"], y)
