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
  one extra cell, dropped by ``CropEnd``."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from rosetta.backends.torch.lowering import (CHANNELS_FIRST, CHANNELS_LAST, ChannelsFirst1d,
                                             activation, fused, lowers, native_params, pad_arg,
                                             same, symmetric_pads)
from rosetta.graph import Node
from rosetta.ops.convolution import Conv2DTranspose as _TransposeOp
from rosetta.ops.windows import spatial_plan, time_plan


@lowers("Conv2D", accepts=CHANNELS_FIRST)
def conv2d(node: Node, layout: str) -> nn.Module:
    """nn.Conv2d on NCHW. Padding comes from ``spatial_plan`` (the canonical rule): symmetric
    pads go to Conv2d's ``padding``; asymmetric ones (``same`` with stride > 1 or an even
    window, explicit (lo, hi)) are applied first with ``nn.ZeroPad2d``, since torch's own
    ``padding="same"`` refuses strides > 1 and puts the odd cell before."""
    a = node.attrs
    h, w, c = node.in_types[0].shape
    _, pads = spatial_plan(a, (h, w), a["dilation"])
    sym = symmetric_pads(pads)
    conv = nn.Conv2d(c, a["filters"], a["kernel_size"], stride=a["strides"],
                     padding=sym if sym is not None else 0, dilation=a["dilation"],
                     groups=a["groups"], bias=a["use_bias"])
    pad = None if sym is not None else nn.ZeroPad2d(pad_arg(pads))
    return fused("conv", conv, activation(a["activation"], dim=1), pad)


@lowers("Conv1D", accepts=CHANNELS_LAST)
def conv1d(node: Node, layout: str) -> nn.Module:
    """nn.Conv1d on (N, C, T) inside ``ChannelsFirst1d``. Padding from the shared rule
    (``time_plan``): symmetric pads go to Conv1d's ``padding``, asymmetric ones to a
    ``ConstantPad1d(0)`` first (torch pads symmetrically, and ``padding="same"`` refuses
    strides > 1)."""
    a = node.attrs
    t, c = node.in_types[0].shape
    _, (lo, hi) = time_plan(a, t, a["dilation"][0])
    conv = nn.Conv1d(c, a["filters"], a["kernel_size"][0], stride=a["strides"][0],
                     padding=lo if lo == hi else 0, dilation=a["dilation"][0],
                     groups=a["groups"], bias=a["use_bias"])
    parts = [] if lo == hi else [("pad", nn.ConstantPad1d((lo, hi), 0.0))]
    parts.append(("conv", conv))
    act = activation(a["activation"], dim=1)
    if not isinstance(act, nn.Identity):
        parts.append(("activation", act))
    return ChannelsFirst1d(OrderedDict(parts))


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



def _depthwise(node: Node, use_bias: bool):
    """(pad module or None, DepthwiseConv2d) for the window attributes of ``node``."""
    a = node.attrs
    h, w, c = node.in_types[0].shape
    _, pads = spatial_plan(a, (h, w), a["dilation"])
    sym = symmetric_pads(pads)
    conv = DepthwiseConv2d(c, a["depth_multiplier"], a["kernel_size"], stride=a["strides"],
                           padding=sym if sym is not None else 0, dilation=a["dilation"],
                           bias=use_bias)
    return (None if sym is not None else nn.ZeroPad2d(pad_arg(pads))), conv


def _chain(*parts) -> nn.Module:
    """Sequential of the named parts that are not None (the core alone if it is the only one)."""
    kept = [(name, m) for name, m in parts if m is not None and not isinstance(m, nn.Identity)]
    return kept[0][1] if len(kept) == 1 else nn.Sequential(OrderedDict(kept))


@lowers("DepthwiseConv2D", accepts=CHANNELS_FIRST)
def depthwise_conv2d(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    pad, conv = _depthwise(node, a["use_bias"])
    return _chain(("pad", pad), ("depthwise", conv),
                  ("activation", activation(a["activation"], dim=1)))


@lowers("SeparableConv2D", accepts=CHANNELS_FIRST)
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


@lowers("Conv2DTranspose", accepts=CHANNELS_FIRST)
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


def _reverse_axes(k):
    """Conv1D (k, in/groups, out) <-> nn.Conv1d (out, in/groups, k): its own inverse."""
    return k.transpose(2, 1, 0)


native_params({
    "Conv2D": {"kernel": (nn.Conv2d, "weight", _conv_to_native, _conv_to_canonical),
               "bias": (nn.Conv2d, "bias", same, same)},
    "Conv1D": {"kernel": (nn.Conv1d, "weight", _reverse_axes, _reverse_axes),
               "bias": (nn.Conv1d, "bias", same, same)},
    "DepthwiseConv2D": {
        "kernel": (DepthwiseConv2d, "weight", _depthwise_weight_to_native,
                   _depthwise_weight_to_canonical),
        "bias": (DepthwiseConv2d, "bias", same, same)},
    "SeparableConv2D": {
        "depthwise_kernel": (DepthwiseConv2d, "weight", _depthwise_weight_to_native,
                             _depthwise_weight_to_canonical),
        "pointwise_kernel": (PointwiseConv2d, "weight", _conv_to_native, _conv_to_canonical),
        "bias": (PointwiseConv2d, "bias", same, same)},
    "Conv2DTranspose": {
        "kernel": (nn.ConvTranspose2d, "weight", _swap_pairs, _swap_pairs),
        "bias": (nn.ConvTranspose2d, "bias", same, same)},
})
