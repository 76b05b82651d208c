"""Lowerings of DepthwiseConv2D, SeparableConv2D and Conv2DTranspose (joined to layers.LOWERINGS).

All three run on NCHW (``CHANNELS_FIRST``) with native torch convolutions:

* DepthwiseConv2D: ``nn.Conv2d(C, C·M, groups=C)``, whose output channel c·M + m reads input
  channel c, as canonical. Its weight is kept as a (C, M, 1, kH, kW) parameter (``DepthwiseConv2d``)
  and flattened to torch's (C·M, 1, kH, kW) view in ``forward``: the canonical (kH, kW, C, M) is
  then a pure transpose, with no need to know M when converting back. Padding as Conv2D
  (symmetric pads to ``padding``, asymmetric ones to a ``ZeroPad2d`` first).
* SeparableConv2D: that depthwise convolution (no bias), then a 1x1 ``PointwiseConv2d`` with bias.
* Conv2DTranspose: ``nn.ConvTranspose2d``, whose scatter rule is the canonical one (no kernel
  flip), weight (in, out, kH, kW). valid: padding 0. same: ``padding`` = the crop before and,
  when k_eff < s, ``output_padding`` = s - k_eff (zeros after); when the canonical crop after
  is one more than the crop before (odd k_eff - s), torch (which crops both sides alike) leaves
  one extra cell, dropped by ``CropEnd``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from rosetta.graph import Node
from rosetta.ops.windows import spatial_plan
from rosetta.ops.convolution import Conv2DTranspose as _TransposeOp
from rosetta.backends.torch.layers import (CHANNELS_FIRST, Lowering, _pad_arg, _symmetric,
                                           activation)


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d(C, C·M, groups=C) with its weight stored as (C, M, 1, kH, kW); ``forward`` uses
    the contiguous (C·M, 1, kH, kW) view torch expects (channel c·M + m), no copy."""

    def __init__(self, channels: int, multiplier: int, kernel_size, **kwargs):
        super().__init__(channels, channels * multiplier, kernel_size, groups=channels, **kwargs)
        self.weight = nn.Parameter(self.weight.detach().reshape(channels, multiplier, 1,
                                                                *self.kernel_size))

    def forward(self, x):
        return self._conv_forward(x, self.weight.flatten(0, 1), self.bias)


class PointwiseConv2d(nn.Conv2d):
    """The 1x1 nn.Conv2d of a separable convolution (its own class, so params.py tells it from the
    depthwise one)."""


def _depthwise_weight_to_native(k):
    """(kH, kW, C, M) -> (C, M, 1, kH, kW)."""
    return k.transpose(2, 3, 0, 1)[:, :, None]


def _depthwise_weight_to_canonical(w):
    """(C, M, 1, kH, kW) -> (kH, kW, C, M)."""
    return w[:, :, 0].transpose(2, 3, 0, 1)


def _conv_to_native(k):
    """(kH, kW, in, out) -> (out, in, kH, kW)."""
    return k.transpose(3, 2, 0, 1)


def _conv_to_canonical(w):
    return w.transpose(2, 3, 1, 0)


def _swap_pairs(k):
    """Conv2DTranspose (kH, kW, in, out) <-> ConvTranspose2d (in, out, kH, kW): its own inverse."""
    return k.transpose(2, 3, 0, 1)


def _same(a):
    return a


def _depthwise(node: Node, use_bias: bool):
    """(pad module or None, DepthwiseConv2d) for the window attributes of ``node``."""
    a = node.attrs
    h, w, c = node.in_types[0].shape
    _, pads = spatial_plan(a, (h, w), a["dilation"])
    sym = _symmetric(pads)
    conv = DepthwiseConv2d(c, a["depth_multiplier"], a["kernel_size"], stride=a["strides"],
                           padding=sym if sym is not None else 0, dilation=a["dilation"],
                           bias=use_bias)
    return (None if sym is not None else nn.ZeroPad2d(_pad_arg(pads))), conv


def _chain(*parts) -> nn.Module:
    """Sequential of the named parts that are not None (the core alone if it is the only one)."""
    kept = [(name, m) for name, m in parts if m is not None and not isinstance(m, nn.Identity)]
    return kept[0][1] if len(kept) == 1 else nn.Sequential(OrderedDict(kept))


def depthwise_conv2d(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    pad, conv = _depthwise(node, a["use_bias"])
    return _chain(("pad", pad), ("depthwise", conv),
                  ("activation", activation(a["activation"], dim=1)))


def separable_conv2d(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    pad, depthwise = _depthwise(node, False)
    c = node.in_types[0].shape[2]
    pointwise = PointwiseConv2d(c * a["depth_multiplier"], a["filters"], 1, bias=a["use_bias"])
    return _chain(("pad", pad), ("depthwise", depthwise), ("pointwise", pointwise),
                  ("activation", activation(a["activation"], dim=1)))


class CropEnd(nn.Module):
    """Drop the last ``crop`` = (rows, columns) cells of an NCHW tensor."""

    def __init__(self, crop):
        super().__init__()
        self.crop = tuple(crop)

    def forward(self, x):
        return x[:, :, :x.shape[2] - self.crop[0], :x.shape[3] - self.crop[1]]

    def extra_repr(self):
        return f"crop={self.crop}"


def conv2d_transpose(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    h, w, c = node.in_types[0].shape
    out, lo = _TransposeOp.plan(a, (h, w))
    padding, output_padding, crop = [], [], []
    for ax, size in enumerate((h, w)):
        k, s, d = a["kernel_size"][ax], a["strides"][ax], a["dilation"][ax]
        torch_out = (size - 1) * s - 2 * lo[ax] + d * (k - 1) + 1   # before output_padding
        padding.append(lo[ax])
        output_padding.append(max(out[ax] - torch_out, 0))
        crop.append(max(torch_out - out[ax], 0))
    conv = nn.ConvTranspose2d(c, a["filters"], a["kernel_size"], stride=a["strides"],
                              padding=tuple(padding), output_padding=tuple(output_padding),
                              dilation=a["dilation"], bias=a["use_bias"])
    return _chain(("conv", conv), ("crop", CropEnd(crop) if any(crop) else None),
                  ("activation", activation(a["activation"], dim=1)))


LOWERINGS: dict = {
    "DepthwiseConv2D": Lowering(CHANNELS_FIRST, depthwise_conv2d),
    "SeparableConv2D": Lowering(CHANNELS_FIRST, separable_conv2d),
    "Conv2DTranspose": Lowering(CHANNELS_FIRST, conv2d_transpose),
}

NATIVE: dict = {
    "DepthwiseConv2D": {
        "kernel": (DepthwiseConv2d, "weight", _depthwise_weight_to_native,
                   _depthwise_weight_to_canonical),
        "bias": (DepthwiseConv2d, "bias", _same, _same)},
    "SeparableConv2D": {
        "depthwise_kernel": (DepthwiseConv2d, "weight", _depthwise_weight_to_native,
                             _depthwise_weight_to_canonical),
        "pointwise_kernel": (PointwiseConv2d, "weight", _conv_to_native, _conv_to_canonical),
        "bias": (PointwiseConv2d, "bias", _same, _same)},
    "Conv2DTranspose": {
        "kernel": (nn.ConvTranspose2d, "weight", _swap_pairs, _swap_pairs),
        "bias": (nn.ConvTranspose2d, "bias", _same, _same)},
}
