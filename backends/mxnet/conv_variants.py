"""DepthwiseConv2D and SeparableConv2D as grouped ``Convolution``s; Conv2DTranspose refused.

Depthwise: ``Convolution(num_group=C, num_filter=C*M)`` whose weight (C*M, 1, kH, kW) is the
canonical kernel (kH, kW, C, M) reshaped to (kH, kW, 1, C*M) and transposed: group c's M outputs
are the contiguous channels c*M .. c*M + M - 1, as the canonical rule says. Separable: that
depthwise convolution (no bias) then a 1x1 ``Convolution`` with the pointwise kernel.

Conv2DTranspose is not lowered by this backend yet: MXNet's ``Deconvolution`` crops a symmetric
``pad`` from the full transposed convolution, so the canonical ``transpose_plan`` (asymmetric
``same``) needs a crop after it that has not been written and proven here. It raises
``BackendUnavailable`` naming the op when the model is built, never computing something else.
"""

from __future__ import annotations

from rosetta.backends.mxnet.layers import (activate, add_bias, conv_weight, convolve,
                                           unavailable)
from rosetta.ops.conv import spatial_plan


def _depthwise(F, node, x, kernel):
    a = node.attrs
    kh, kw = a["kernel_size"]
    c, m = node.in_types[0].shape[2], a["depth_multiplier"]
    _, pads = spatial_plan(a, node.in_types[0].shape[:2], a["dilation"])
    weight = conv_weight(F, F.reshape(kernel, shape=(kh, kw, 1, c * m)))
    return convolve(F, x, weight, {**a, "filters": c * m}, pads, c)


def depthwise_conv2d(F, node, xs, p, ctx):
    a = node.attrs
    y = _depthwise(F, node, xs[0], p["kernel"])
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)


def separable_conv2d(F, node, xs, p, ctx):
    """Depthwise (no bias), then y = d . pointwise_kernel[0, 0] + bias over the channels."""
    a = node.attrs
    d = _depthwise(F, node, xs[0], p["depthwise_kernel"])
    width = node.in_types[0].shape[2] * a["depth_multiplier"]
    y = F.dot(d, F.reshape(p["pointwise_kernel"], shape=(width, a["filters"])))
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)


LOWERINGS = {
    "DepthwiseConv2D": depthwise_conv2d,
    "SeparableConv2D": separable_conv2d,
    "Conv2DTranspose": unavailable("not lowered by the mxnet backend (Deconvolution "
                                   "with the canonical transpose_plan crop is not written); "
                                   "use the torch, tensorflow or jax backend"),
}

NATIVE: dict = {}
