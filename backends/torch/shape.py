"""Lowerings of the shape and layout ops: Flatten, Reshape, Concatenate, ZeroPadding2D,
UpSampling2D; the tensor-level Transpose, Squeeze, Unsqueeze, Pad, Cast."""

from __future__ import annotations

import torch
from torch import nn

from rosetta.backends.torch.lowering import (CHANNELS_FIRST, CHANNELS_LAST, EITHER, lowers,
                                             native_axis, pad_arg)
from rosetta.graph import Node
from rosetta.ops.shape import positive_axis


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


# --- tensor-level shape ops: canonical layout (a 4-D input is permuted to channels-last first) ---
class Permute(nn.Module):
    """x.permute(0, *(p + 1 for p in perm)): the batch axis stays first."""

    def __init__(self, perm):
        super().__init__()
        self.dims = (0, *(p + 1 for p in perm))

    def forward(self, x):
        return x.permute(self.dims)

    def extra_repr(self):
        return f"dims={self.dims}"


@lowers("Transpose", accepts=CHANNELS_LAST)
def transpose(node: Node, layout: str) -> nn.Module:
    rank = len(node.in_types[0].shape)
    return Permute([positive_axis(p, rank) for p in node.attrs["perm"]])


@lowers("Squeeze", "Unsqueeze", accepts=CHANNELS_LAST)
def squeeze_unsqueeze(node: Node, layout: str) -> nn.Module:
    """Both only drop or insert size-1 axes: a reshape to the inferred shape (a view)."""
    return Reshape(node.out_type.shape)


class ConstantPad(nn.Module):
    """F.pad(x, pads, value=value), ``pads`` in F.pad's order (last axis first, (lo, hi) each)."""

    def __init__(self, pads, value):
        super().__init__()
        self.pads = tuple(v for lo_hi in reversed(pads) for v in lo_hi)
        self.value = value

    def forward(self, x):
        value = self.value if x.is_floating_point() else int(self.value)
        return nn.functional.pad(x, self.pads, value=value)

    def extra_repr(self):
        return f"pads={self.pads}, value={self.value}"


@lowers("Pad", accepts=CHANNELS_LAST)
def pad(node: Node, layout: str) -> nn.Module:
    return ConstantPad(node.attrs["pads"], node.attrs["value"])


class CastTo(nn.Module):
    """To int: ``x.to(torch.int64)`` (truncates toward zero; no gradient). To float: the dtype
    of the module's float buffer ``probe``, which ``GraphModule.to(dtype)`` keeps at the program
    dtype (a non-persistent buffer: in no state dict, no checkpoint)."""

    def __init__(self, to: str):
        super().__init__()
        self.to_kind = to
        self.register_buffer("probe", torch.zeros(0), persistent=False)

    def forward(self, x):
        if self.to_kind == "int":
            return x if not x.is_floating_point() else x.to(torch.int64)
        return x.to(self.probe.dtype)

    def extra_repr(self):
        return f"to={self.to_kind!r}"


@lowers("Cast", accepts=EITHER)
def cast(node: Node, layout: str) -> nn.Module:
    return CastTo(node.attrs["to"])
