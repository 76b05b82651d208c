"""DepthwiseConv2D and SeparableConv2D as grouped ``Convolution``s; Conv2DTranspose refused.

Depthwise: ``Convolution(num_group=C, num_filter=C*M)`` whose weight (C*M, 1, kH, kW) is the
canonical kernel (kH, kW, C, M) reshaped to (kH, kW, 1, C*M) and transposed: group c's M outputs
are the contiguous channels c*M .. c*M + M - 1, as the canonical rule says. Separable: that
depthwise convolution (no bias) then a 1x1 ``Convolution`` with the pointwise kernel.

Conv2DTranspose: MXNet's ``Deconvolution`` (the adjoint of its ``Convolution``, the same taps,
no flip) without padding computes the canonical full scatter output, L = (in - 1)·s + k_eff cells
per axis; its weight (in, out, kH, kW) is the canonical kernel (kH, kW, in, out) transposed. The
canonical ``transpose_plan`` then keeps cells lo .. lo + out of it (``slice``), extended with zeros
after where the full output is shorter (``same`` with k_eff < stride)."""

from __future__ import annotations

from rosetta.backends.mxnet.lowering import (activate, add_bias, conv_weight, convolve, lowers,
                                             pad_nchw, to_nchw, to_nhwc)
from rosetta.ops.convolution import Conv2DTranspose
from rosetta.ops.windows import as_2d, spatial_plan


@lowers("Conv2D")
def conv2d(F, node, xs, p, ctx):
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2], a["dilation"])
    y = convolve(F, xs[0], conv_weight(F, p["kernel"]), a, pads, a["groups"])
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)


@lowers("Conv1D")
def conv1d(F, node, xs, p, ctx):
    """The 2-D convolution of a (N, 1, T, C) value with a window of height 1 (``as_2d``)."""
    a = as_2d(node.attrs)
    t = node.in_types[0].shape[0]
    _, pads = spatial_plan(a, (1, t), a["dilation"])
    x = F.expand_dims(xs[0], axis=1)
    kernel = F.expand_dims(p["kernel"], axis=0)          # (1, k, in/groups, out)
    y = convolve(F, x, conv_weight(F, kernel), a, pads, a["groups"])
    y = F.squeeze(y, axis=1)
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)


def _depthwise(F, node, x, kernel):
    a = node.attrs
    kh, kw = a["kernel_size"]
    c, m = node.in_types[0].shape[2], a["depth_multiplier"]
    _, pads = spatial_plan(a, node.in_types[0].shape[:2], a["dilation"])
    weight = conv_weight(F, F.reshape(kernel, shape=(kh, kw, 1, c * m)))
    return convolve(F, x, weight, {**a, "filters": c * m}, pads, c)


@lowers("DepthwiseConv2D")
def depthwise_conv2d(F, node, xs, p, ctx):
    a = node.attrs
    y = _depthwise(F, node, xs[0], p["kernel"])
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)


@lowers("SeparableConv2D")
def separable_conv2d(F, node, xs, p, ctx):
    """Depthwise (no bias), then y = d . pointwise_kernel[0, 0] + bias over the channels."""
    a = node.attrs
    d = _depthwise(F, node, xs[0], p["depthwise_kernel"])
    width = node.in_types[0].shape[2] * a["depth_multiplier"]
    y = F.dot(d, F.reshape(p["pointwise_kernel"], shape=(width, a["filters"])))
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)


def _dilated(F, weight, kernel, dilation, eff, dtype):
    """The (in, out, kH, kW) weight with d - 1 zeros between taps: (in, out, effH, effW), by
    ``dot`` with one-hot maps (exact). ``Deconvolution``'s own ``dilate`` disagreed with the
    canonical scatter (tests/cases_conv.py ``transpose_dilated``: wrong values, not rounding)."""
    for ax in (0, 1):
        onehot = F.one_hot(F.arange(kernel[ax]) * dilation[ax], depth=eff[ax], dtype=dtype)
        if ax == 0:
            weight = F.transpose(F.dot(F.transpose(weight, axes=(0, 1, 3, 2)), onehot),
                                 axes=(0, 1, 3, 2))
        else:
            weight = F.dot(weight, onehot)
    return weight


@lowers("Conv2DTranspose")
def conv2d_transpose(F, node, xs, p, ctx):
    a = node.attrs
    hw = node.in_types[0].shape[:2]
    out, lo = Conv2DTranspose.plan(a, hw)
    full = [(hw[ax] - 1) * a["strides"][ax] + a["dilation"][ax] * (a["kernel_size"][ax] - 1) + 1
            for ax in range(2)]
    weight = F.transpose(p["kernel"], axes=(2, 3, 0, 1))              # (in, out, kH, kW)
    eff = [a["dilation"][ax] * (a["kernel_size"][ax] - 1) + 1 for ax in range(2)]
    if tuple(a["dilation"]) != (1, 1):
        weight = _dilated(F, weight, a["kernel_size"], a["dilation"], eff, ctx.dtype)
    y = F.Deconvolution(to_nchw(F, xs[0]), weight, kernel=tuple(eff),
                        stride=tuple(a["strides"]), num_filter=a["filters"], no_bias=True)
    ends = [min(lo[ax] + out[ax], full[ax]) for ax in range(2)]
    if tuple(lo) != (0, 0) or ends != full:
        y = F.slice(y, begin=(None, None, lo[0], lo[1]), end=(None, None, ends[0], ends[1]))
    short = [lo[ax] + out[ax] - ends[ax] for ax in range(2)]
    y = to_nhwc(F, pad_nchw(F, y, ((0, short[0]), (0, short[1]))))
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)
