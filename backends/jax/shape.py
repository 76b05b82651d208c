"""Lowerings of the shape and layout ops: Flatten, Reshape, Concatenate, ZeroPadding2D,
UpSampling2D; the tensor-level Transpose, Squeeze, Unsqueeze, Pad, Cast."""

from __future__ import annotations

import jax.numpy as jnp

from rosetta.backends.jax.lowering import lowers
from rosetta.ops.shape import positive_axis


@lowers("ZeroPadding2D")
def zero_padding2d(node, xs, ctx):
    return jnp.pad(xs[0], ((0, 0), *node.attrs["padding"], (0, 0)))


@lowers("UpSampling2D")
def upsampling2d(node, xs, ctx):
    """Nearest, integer factors: jnp.repeat along H then W (exact)."""
    x = xs[0]
    for axis, f in zip((1, 2), node.attrs["size"]):
        if f != 1:
            x = jnp.repeat(x, f, axis=axis)
    return x


@lowers("Flatten")
def flatten(node, xs, ctx):
    """Channels-last row-major, as canonical: (H, W, C) -> H*W*C."""
    return xs[0].reshape(xs[0].shape[0], -1)


@lowers("Reshape")
def reshape(node, xs, ctx):
    return xs[0].reshape(xs[0].shape[0], *node.attrs["shape"])


@lowers("Concatenate")
def concatenate(node, xs, ctx):
    axis = positive_axis(node.attrs["axis"], len(node.in_types[0].shape)) + 1
    return jnp.concatenate(xs, axis=axis)


# --- tensor-level shape ops --------------------------------------------------------------------
@lowers("Transpose")
def transpose(node, xs, ctx):
    rank = len(node.in_types[0].shape)
    return jnp.transpose(xs[0], (0, *(positive_axis(p, rank) + 1 for p in node.attrs["perm"])))


@lowers("Squeeze", "Unsqueeze")
def squeeze_unsqueeze(node, xs, ctx):
    """Only size-1 axes dropped or inserted: a reshape to the inferred shape."""
    return xs[0].reshape(xs[0].shape[0], *node.out_type.shape)


@lowers("Pad")
def pad(node, xs, ctx):
    x, value = xs[0], node.attrs["value"]
    value = value if jnp.issubdtype(x.dtype, jnp.floating) else int(value)
    return jnp.pad(x, ((0, 0), *node.attrs["pads"]), constant_values=value)


@lowers("Cast")
def cast(node, xs, ctx):
    """To int: int32, JAX's index type (XLA's convert truncates toward zero). To float: the
    program dtype."""
    x = xs[0]
    if node.attrs["to"] == "int":
        return x if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(jnp.int32)
    return x.astype(ctx.dtype)
