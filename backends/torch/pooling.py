"""Lowerings of the pools: MaxPool2D, AvgPool2D, MaxPool1D, AvgPool1D, GlobalAvgPool2D,
GlobalMaxPool2D and SequencePool. Native pools where torch can take the canonical pads; the
exceptions are documented where they are built."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from rosetta.backends.torch.lowering import (CHANNELS_FIRST, CHANNELS_LAST, ChannelsFirst1d, EITHER,
                                             lowers, native_axis, native_pool_padding, pad_arg)
from rosetta.graph import Node
from rosetta.ops.windows import spatial_plan, time_plan


@lowers("MaxPool2D", accepts=CHANNELS_FIRST)
def max_pool2d(node: Node, layout: str) -> nn.Module:
    """nn.MaxPool2d (it pads with -inf). Pads it cannot take (asymmetric, or more than half the
    window) are applied first with ``ConstantPad2d(-inf)``: padded cells are never chosen."""
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2])
    native = native_pool_padding(a, pads)
    if native is not None:
        return nn.MaxPool2d(a["kernel_size"], a["strides"], padding=native)
    return nn.Sequential(OrderedDict([
        ("pad", nn.ConstantPad2d(pad_arg(pads), float("-inf"))),
        ("pool", nn.MaxPool2d(a["kernel_size"], a["strides"]))]))


class ExcludePadAvgPool2d(nn.Module):
    """Average pooling that excludes padded cells for any padding (NCHW).

    y = window_sum(zero_pad(x)) / count, count[h, w] = number of real cells in the window.
    torch's ``count_include_pad=False`` does this only for symmetric pads of at most half the
    window, so other pads are lowered here: a sum-pool (``divisor_override=1``) divided by a
    count map fixed by the input size (a non-persistent buffer).
    """

    def __init__(self, kernel_size, stride, pads, in_hw):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.pad = pad_arg(pads)
        ones = F.pad(torch.ones(1, 1, *in_hw, dtype=torch.get_default_dtype()), self.pad)
        count = F.avg_pool2d(ones, self.kernel_size, self.stride, divisor_override=1)
        self.register_buffer("count", count, persistent=False)

    def forward(self, x):
        total = F.avg_pool2d(F.pad(x, self.pad), self.kernel_size, self.stride,
                             divisor_override=1)
        return total / self.count

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pad={self.pad}"


@lowers("AvgPool2D", accepts=CHANNELS_FIRST)
def avg_pool2d(node: Node, layout: str) -> nn.Module:
    """nn.AvgPool2d(count_include_pad=False) where torch can take the pads, else
    ``ExcludePadAvgPool2d``. Both divide by the number of real cells (torch's default counts
    the padding)."""
    a = node.attrs
    hw = node.in_types[0].shape[:2]
    _, pads = spatial_plan(a, hw)
    native = native_pool_padding(a, pads)
    if native is not None:
        return nn.AvgPool2d(a["kernel_size"], a["strides"], padding=native,
                            count_include_pad=False)
    return ExcludePadAvgPool2d(a["kernel_size"], a["strides"], pads, hw)


@lowers("MaxPool1D", accepts=CHANNELS_LAST)
def max_pool1d(node: Node, layout: str) -> nn.Module:
    """nn.MaxPool1d on (N, C, T) inside ``ChannelsFirst1d``; pads it cannot take (asymmetric,
    or more than half the window) go to a ``ConstantPad1d(-inf)`` first."""
    a = node.attrs
    k, s = a["kernel_size"][0], a["strides"][0]
    _, (lo, hi) = time_plan(a, node.in_types[0].shape[0])
    if lo == hi and lo <= k // 2:
        return ChannelsFirst1d(OrderedDict([("pool", nn.MaxPool1d(k, s, padding=lo))]))
    return ChannelsFirst1d(OrderedDict([("pad", nn.ConstantPad1d((lo, hi), float("-inf"))),
                                        ("pool", nn.MaxPool1d(k, s))]))


class ExcludePadAvgPool1d(nn.Module):
    """Average pooling over (N, C, T) that excludes padded cells for any (lo, hi) pads:
    y = avg_pool1d(zero_pad(x)) * (k / count), count[t] = real cells in the window (a
    non-persistent buffer fixed by the input length)."""

    def __init__(self, kernel_size: int, stride: int, pads, length: int):
        super().__init__()
        self.kernel_size, self.stride, self.pad = kernel_size, stride, tuple(pads)
        ones = F.pad(torch.ones(1, 1, length, dtype=torch.get_default_dtype()), self.pad)
        count = F.avg_pool1d(ones, kernel_size, stride) * kernel_size
        self.register_buffer("rescale", kernel_size / count, persistent=False)

    def forward(self, x):
        return F.avg_pool1d(F.pad(x, self.pad), self.kernel_size, self.stride) * self.rescale

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pad={self.pad}"


@lowers("AvgPool1D", accepts=CHANNELS_LAST)
def avg_pool1d(node: Node, layout: str) -> nn.Module:
    """nn.AvgPool1d(count_include_pad=False) where torch can take the pads, else
    ``ExcludePadAvgPool1d``; both inside ``ChannelsFirst1d`` and both divide by the number of
    real cells."""
    a = node.attrs
    k, s = a["kernel_size"][0], a["strides"][0]
    t = node.in_types[0].shape[0]
    _, (lo, hi) = time_plan(a, t)
    if lo == hi and lo <= k // 2:
        pool = nn.AvgPool1d(k, s, padding=lo, count_include_pad=False)
    else:
        pool = ExcludePadAvgPool1d(k, s, (lo, hi), t)
    return ChannelsFirst1d(OrderedDict([("pool", pool)]))


class GlobalMaxPool2d(nn.Module):
    """y[n, c] = max over the two spatial axes ``dims`` (they depend on the layout)."""

    def __init__(self, dims: tuple[int, int]):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.amax(dim=self.dims)

    def extra_repr(self):
        return f"dims={self.dims}"


@lowers("GlobalMaxPool2D", accepts=EITHER)
def global_max_pool2d(node: Node, layout: str) -> nn.Module:
    return GlobalMaxPool2d((native_axis(0, 3, layout), native_axis(1, 3, layout)))


class GlobalAvgPool2d(nn.Module):
    """y[n, c] = mean over the two spatial axes ``dims`` (they depend on the layout)."""

    def __init__(self, dims: tuple[int, int]):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.mean(dim=self.dims)

    def extra_repr(self):
        return f"dims={self.dims}"


@lowers("GlobalAvgPool2D", accepts=EITHER)
def global_avg_pool2d(node: Node, layout: str) -> nn.Module:
    return GlobalAvgPool2d((native_axis(0, 3, layout), native_axis(1, 3, layout)))


class SequencePool(nn.Module):
    """Mean or max over the real steps t < length of (N, T, C) (every step without lengths);
    max puts -inf on padded steps."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x, lengths=None):
        if lengths is None:
            return x.mean(dim=1) if self.mode == "mean" else x.amax(dim=1)
        real = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[..., None]
        if self.mode == "mean":
            return (x * real).sum(dim=1) / lengths[:, None].to(x.dtype)
        return x.masked_fill(~real, float("-inf")).amax(dim=1)

    def extra_repr(self):
        return f"mode={self.mode}"


@lowers("SequencePool", accepts=CHANNELS_LAST)
def sequence_pool(node: Node, layout: str) -> nn.Module:
    return SequencePool(node.attrs["mode"])
