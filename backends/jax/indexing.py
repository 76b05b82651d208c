"""Lowerings of the indexing ops: Slice (basic indexing) and Gather (``jnp.take``, per example
under ``jax.vmap`` when the indices are an input)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rosetta.backends.jax.lowering import lowers
from rosetta.ops import REGISTRY
from rosetta.ops.indexing import constant_indices, slice_bounds
from rosetta.ops.shape import positive_axis


@lowers("Slice")
def slice_(node, xs, ctx):
    shape = node.in_types[0].shape
    bounds = slice_bounds(REGISTRY["Slice"], node.attrs, shape, node.name)
    index = tuple(slice(*bounds[a]) if a in bounds else slice(None) for a in range(len(shape)))
    return xs[0][(slice(None), *index)]


@lowers("Gather")
def gather(node, xs, ctx):
    """Constant indices: one jnp.take on the tensor axis. Indices as input: negative ones wrapped
    (idx + size), then jnp.take per example (``mode="clip"``: an index out of range, which only
    a computed index can be, is clamped, as XLA does); a batch-broadcast x (batch 1) is shared
    by every example of the indices."""
    a, shape = node.attrs, node.in_types[0].shape
    axis = positive_axis(a["axis"], len(shape))
    x = xs[0]
    if a["indices"] is not None:
        idx = constant_indices(REGISTRY["Gather"], a, shape[axis], node.name)
        return jnp.take(x, jnp.asarray(idx), axis=axis + 1)
    idx = xs[1]
    idx = jnp.where(idx < 0, idx + shape[axis], idx)

    def take(xi, ii):
        return jnp.take(xi, ii, axis=axis, mode="clip")
    if x.shape[0] == 1 and idx.shape[0] != 1:
        y = jax.vmap(take, in_axes=(None, 0))(x[0], idx)
    elif idx.shape[0] == 1 and x.shape[0] != 1:
        y = jax.vmap(take, in_axes=(0, None))(x, idx[0])
    else:
        y = jax.vmap(take)(x, idx)
    if a["padding_idx"] is None:
        return y
    # padding_idx: the rows read at that id pass no gradient (where selects: forward unchanged)
    at_pad = (idx == a["padding_idx"]).reshape(*idx.shape, *(1,) * (len(shape) - 1))
    return jnp.where(at_pad, jax.lax.stop_gradient(y), y)
