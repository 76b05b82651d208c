"""Lowerings of the shape and layout ops: Flatten, Reshape, Concatenate, ZeroPadding2D,
UpSampling2D."""

from __future__ import annotations

from rosetta.backends.mxnet.lowering import lowers, pad_nchw, to_nchw, to_nhwc
from rosetta.ops.shape import positive_axis


@lowers("ZeroPadding2D")
def zero_padding2d(F, node, xs, p, ctx):
    return to_nhwc(F, pad_nchw(F, to_nchw(F, xs[0]), node.attrs["padding"]))


@lowers("UpSampling2D")
def upsampling2d(F, node, xs, p, ctx):
    """Nearest, integer factors: repeat along H then W (exact)."""
    x = xs[0]
    for axis, f in zip((1, 2), node.attrs["size"]):
        if f != 1:
            x = F.repeat(x, repeats=f, axis=axis)
    return x


@lowers("Flatten")
def flatten(F, node, xs, p, ctx):
    """Channels-last row-major, as canonical: (H, W, C) -> H*W*C."""
    return F.reshape(xs[0], shape=(0, -1))


@lowers("Reshape")
def reshape(F, node, xs, p, ctx):
    return F.reshape(xs[0], shape=(-1, *node.attrs["shape"]))


@lowers("Concatenate")
def concatenate(F, node, xs, p, ctx):
    axis = positive_axis(node.attrs["axis"], len(node.in_types[0].shape)) + 1
    return F.concat(*xs, dim=axis)
