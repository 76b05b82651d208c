"""Lowerings of Reduce, Softmax and LogSoftmax (``rosetta.ops.reduction``). Reduce runs
channels-last (its output rank may differ); the softmaxes take either layout, the axis mapped
by ``native_axis``."""

from __future__ import annotations

import torch
from torch import nn

from rosetta.backends.torch.lowering import CHANNELS_LAST, EITHER, lowers, native_axis
from rosetta.graph import Node
from rosetta.ops.reduction import normalize_axes
from rosetta.ops.registry import REGISTRY


class Reduce(nn.Module):
    """torch.sum / mean / amax / amin / var(correction=c) over the tensor axes ``dims``
    (amax/amin, not max(dim): they share the gradient evenly among ties)."""

    def __init__(self, fn: str, dims: tuple, keepdim: bool, correction=None):
        super().__init__()
        self.fn, self.dims, self.keepdim, self.correction = fn, dims, keepdim, correction

    def forward(self, x):
        if self.fn == "var":
            return torch.var(x, dim=self.dims, correction=self.correction, keepdim=self.keepdim)
        f = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax, "min": torch.amin}[self.fn]
        return f(x, dim=self.dims, keepdim=self.keepdim)


@lowers("Reduce", accepts=CHANNELS_LAST)
def reduce(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    axes = normalize_axes(REGISTRY["Reduce"], a["axes"], len(node.in_types[0].shape), node.name)
    return Reduce(a["fn"], tuple(i + 1 for i in axes), a["keepdims"], a["correction"])


class AxisSoftmax(nn.Module):
    def __init__(self, fn, dim: int):
        super().__init__()
        self.fn, self.dim = fn, dim

    def forward(self, x):
        return self.fn(x, dim=self.dim)


@lowers("Softmax", "LogSoftmax", accepts=EITHER)
def softmax(node: Node, layout: str) -> nn.Module:
    dim = native_axis(node.attrs["axis"], len(node.in_types[0].shape), layout)
    fn = torch.softmax if node.op == "Softmax" else torch.log_softmax
    return AxisSoftmax(fn, dim)


class Cumsum(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.cumsum(x, dim=self.dim)


@lowers("Cumsum", accepts=EITHER)
def cumsum(node: Node, layout: str) -> nn.Module:
    """torch.cumsum along the native axis (an int32 input gives int64, torch's rule)."""
    return Cumsum(native_axis(node.attrs["axis"], len(node.in_types[0].shape), layout))
