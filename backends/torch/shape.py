"""Lowerings of the shape and layout ops: Flatten, Reshape, Concatenate, ZeroPadding2D,
UpSampling2D."""

from __future__ import annotations

import torch
from torch import nn

from rosetta.backends.torch.lowering import (CHANNELS_FIRST, CHANNELS_LAST, EITHER, lowers,
                                             native_axis, pad_arg)
from rosetta.graph import Node


@lowers("ZeroPadding2D", accepts=CHANNELS_FIRST)
def zero_padding2d(node: Node, layout: str) -> nn.Module:
    return nn.ZeroPad2d(pad_arg(node.attrs["padding"]))


class RepeatUpsample(nn.Module):
    """Nearest upsampling by integer factors: y = x repeated ``factors[i]`` times along tensor
    axis ``dims[i]`` (exact; nn.Upsample's nearest index floor(i * (1/f)) is computed in float
    and can round to the wrong source cell)."""

    def __init__(self, factors, dims):
        super().__init__()
        self.factors, self.dims = tuple(factors), tuple(dims)

    def forward(self, x):
        for f, d in zip(self.factors, self.dims):
            if f != 1:
                x = x.repeat_interleave(f, dim=d)
        return x

    def extra_repr(self):
        return f"factors={self.factors}, dims={self.dims}"


@lowers("UpSampling2D", accepts=EITHER)
def upsampling2d(node: Node, layout: str) -> nn.Module:
    return RepeatUpsample(node.attrs["size"],
                          (native_axis(0, 3, layout), native_axis(1, 3, layout)))


@lowers("Flatten", accepts=CHANNELS_LAST)
def flatten(node: Node, layout: str) -> nn.Module:
    """nn.Flatten on the canonical layout, so (H, W, C) flattens in H*W*C order."""
    return nn.Flatten()


class Reshape(nn.Module):
    """y[n] = x[n].reshape(shape), row-major on the canonical layout."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self):
        return f"shape={self.shape}"


@lowers("Reshape", accepts=CHANNELS_LAST)
def reshape(node: Node, layout: str) -> nn.Module:
    return Reshape(node.attrs["shape"])


class Concatenate(nn.Module):
    """torch.cat along ``dim`` (the tensor axis of the canonical axis in the chosen layout)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs):
        return torch.cat(xs, dim=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


@lowers("Concatenate", accepts=EITHER)
def concatenate(node: Node, layout: str) -> nn.Module:
    return Concatenate(native_axis(node.attrs["axis"], len(node.in_types[0].shape), layout))
