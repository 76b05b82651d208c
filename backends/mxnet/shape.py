"""Lowerings of the shape and layout ops: Flatten, Reshape, Concatenate, ZeroPadding2D,
UpSampling2D; the tensor-level Transpose, Squeeze, Unsqueeze, Pad, Cast."""

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


# --- tensor-level shape ops --------------------------------------------------------------------
@lowers("Transpose")
def transpose(F, node, xs, p, ctx):
    rank = len(node.in_types[0].shape)
    return F.transpose(xs[0], axes=(0, *(positive_axis(q, rank) + 1 for q in node.attrs["perm"])))


@lowers("Squeeze", "Unsqueeze")
def squeeze_unsqueeze(F, node, xs, p, ctx):
    """Only size-1 axes dropped or inserted: a reshape to the inferred shape."""
    return F.reshape(xs[0], shape=(-1, *node.out_type.shape))


@lowers("Pad")
def pad(F, node, xs, p, ctx):
    """Concatenation of constant blocks, axis by axis (MXNet's ``pad`` takes only 4-D/5-D inputs
    and leaves the first two axes alone): each block is a one-wide slice of the current tensor,
    zeroed (``zeros_like``, which passes no gradient), plus ``value``, repeated lo or hi times."""
    x = xs[0]
    for ax, (lo, hi) in enumerate(node.attrs["pads"], start=1):
        if not lo and not hi:
            continue
        edge = F.zeros_like(F.slice_axis(x, axis=ax, begin=0, end=1)) + node.attrs["value"]
        parts = ([F.repeat(edge, repeats=lo, axis=ax)] if lo else []) + [x] + (
            [F.repeat(edge, repeats=hi, axis=ax)] if hi else [])
        x = F.concat(*parts, dim=ax)
    return x


@lowers("Cast")
def cast(F, node, xs, p, ctx):
    """MXNet carries int tensors (ids, lengths) in the program's float dtype, so a cast to int
    is ``trunc`` (toward zero) behind ``BlockGrad`` (no gradient) and a cast to float the
    identity."""
    if node.attrs["to"] == "int" and node.in_types[0].kind == "float":
        return F.BlockGrad(F.trunc(xs[0]))
    return xs[0]
