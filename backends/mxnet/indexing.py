"""Lowerings of the indexing ops: Slice (``slice``) and Gather (slices for constant indices;
per example as one ``take`` on the batch-flattened table when the indices are an input). MXNet
carries int tensors in the program's float dtype; ``take`` reads them as integers."""

from __future__ import annotations

import math

from rosetta.backends.mxnet.lowering import lowers
from rosetta.ops import REGISTRY
from rosetta.ops.indexing import constant_indices, slice_bounds
from rosetta.ops.shape import positive_axis


# MXNet's ``slice`` kernel takes at most this many axes, batch included ("ndim=6 too large")
SLICE_MAX_NDIM = 5


@lowers("Slice")
def slice_(F, node, xs, p, ctx):
    """``slice`` over the batch and every axis at once; past ``SLICE_MAX_NDIM`` axes (Swin's
    windows: (N, windows, T, 3, heads, D)), axis by axis on a 3-D view (N * the axes before,
    the axis, the axes after), reshaped back: the same elements, moved only."""
    shape = node.in_types[0].shape
    bounds = slice_bounds(REGISTRY["Slice"], node.attrs, shape, node.name)
    if len(shape) + 1 <= SLICE_MAX_NDIM:
        begin = (None, *(bounds[a][0] if a in bounds else None for a in range(len(shape))))
        end = (None, *(bounds[a][1] if a in bounds else None for a in range(len(shape))))
        step = (None, *(bounds[a][2] if a in bounds else None for a in range(len(shape))))
        return F.slice(xs[0], begin=begin, end=end, step=step)
    x, now = xs[0], list(shape)
    for a, (b, e, s) in sorted(bounds.items()):
        view = F.reshape(x, shape=(-1, now[a], math.prod(now[a + 1:])))
        x = F.slice(view, begin=(None, b, None), end=(None, e, None), step=(None, s, None))
        now[a] = len(range(b, e, s))
        x = F.reshape(x, shape=(-1, *now))
    return x


@lowers("Gather")
def gather(F, node, xs, p, ctx):
    """``_gather``; with ``padding_idx`` the rows read at that id pass through ``BlockGrad``
    (``where`` on the mask broadcast to the output: the forward is the gather itself)."""
    y = _gather(F, node, xs, p, ctx)
    pad = node.attrs["padding_idx"]
    if pad is None:
        return y
    at_pad = xs[1] == pad
    for _ in range(len(node.in_types[0].shape) - 1):
        at_pad = F.expand_dims(at_pad, axis=-1)
    return F.where(F.broadcast_like(at_pad, y), F.BlockGrad(y), y)


def _gather(F, node, xs, p, ctx):
    """Constant indices: one-wide ``slice_axis`` per index, concatenated on the axis, then a
    reshape to the inferred shape (no constant array in the graph).
    Indices as input: negative ones wrapped (idx + K); x viewed (N, A, K, B) is laid out
    (N * K, A * B) so that example n's row k is row n * K + k; one ``take`` (mode ``clip``: an
    index out of range, which only a computed index can be, is clamped) of the rows
    idx[n] + n * K, then back to (N, A, M, B). A batch-broadcast table (batch 1) is gathered
    at rows idx[n] alone; batch-broadcast indices gather the same positions of every example."""
    a, shape = node.attrs, node.in_types[0].shape
    axis = positive_axis(a["axis"], len(shape))
    out = tuple(node.out_type.shape)
    x = xs[0]
    if a["indices"] is not None:
        idx = constant_indices(REGISTRY["Gather"], a, shape[axis], node.name).reshape(-1)
        picked = [F.slice_axis(x, axis=axis + 1, begin=int(i), end=int(i) + 1) for i in idx]
        rows = picked[0] if len(picked) == 1 else F.concat(*picked, dim=axis + 1)
        return F.reshape(rows, shape=(-1, *out))
    k = shape[axis]
    pa, pb = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
    idx = F.reshape(xs[1], shape=(0, -1))
    idx = F.where(idx < 0, idx + k, idx)
    shared_x, shared_idx = (getattr(t, "batch_broadcast", False) for t in node.in_types)
    if shared_idx and not shared_x:
        # one index set for every example: a take on the tensor axis
        rows = F.take(x, F.reshape(idx, shape=(-1,)), axis=axis + 1, mode="clip")
        return F.reshape(rows, shape=(-1, *out))
    m = math.prod(node.in_types[1].shape)
    table = F.reshape(F.transpose(F.reshape(x, shape=(-1, pa, k, pb)), axes=(0, 2, 1, 3)),
                      shape=(-1, pa * pb))
    if shared_x and not shared_idx:
        flat = idx      # one table (rows 0..K-1) for every example
    else:
        flat = F.broadcast_add(idx, F.reshape(F.contrib.arange_like(idx, axis=0) * k,
                                              shape=(-1, 1)))
    rows = F.take(table, F.reshape(flat, shape=(-1,)), axis=0, mode="clip")
    y = F.transpose(F.reshape(rows, shape=(-1, m, pa, pb)), axes=(0, 2, 1, 3))
    return F.reshape(y, shape=(-1, *out))
