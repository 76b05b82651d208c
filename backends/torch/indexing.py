"""Lowerings of the indexing ops: Slice (basic indexing, a view) and Gather (``torch.gather`` per
example, or ``index_select`` for constant indices). Both run on the canonical layout."""

from __future__ import annotations

import math

import torch
from torch import nn

from rosetta.backends.torch.lowering import CHANNELS_LAST, lowers
from rosetta.graph import Node
from rosetta.ops import REGISTRY
from rosetta.ops.indexing import constant_indices, slice_bounds
from rosetta.ops.shape import positive_axis


class SliceAxes(nn.Module):
    """x[index]: one Python slice per axis, already normalised (0 <= start, stop <= size)."""

    def __init__(self, bounds: dict, rank: int):
        super().__init__()
        self.index = tuple(slice(*bounds[a]) if a in bounds else slice(None)
                           for a in range(rank))

    def forward(self, x):
        return x[(slice(None), *self.index)]

    def extra_repr(self):
        return f"index={self.index}"


@lowers("Slice", accepts=CHANNELS_LAST)
def slice_(node: Node, layout: str) -> nn.Module:
    shape = node.in_types[0].shape
    return SliceAxes(slice_bounds(REGISTRY["Slice"], node.attrs, shape, node.name), len(shape))


class GatherConstant(nn.Module):
    """index_select on tensor axis ``dim`` with the flat (non-negative) constant indices, then a
    reshape that puts the indices' shape in place of the axis (no axis for a scalar index)."""

    def __init__(self, dim: int, idx, out_shape):
        super().__init__()
        self.dim, self.out_shape = dim, tuple(out_shape)
        self.register_buffer("idx", torch.as_tensor(idx.reshape(-1)), persistent=False)

    def forward(self, x):
        return x.index_select(self.dim, self.idx).reshape(x.shape[0], *self.out_shape)

    def extra_repr(self):
        return f"dim={self.dim}, idx={self.idx.tolist()}"


class GatherPerExample(nn.Module):
    """y[n] = take(x[n], idx[n], axis) as one ``torch.gather``: x viewed (N, A, K, B) around the
    axis, the flat indices (N, M) broadcast to (N, A, M, B). Negative indices are wrapped here
    (idx + K); out-of-range ones make torch.gather raise. A batch of 1 on either side (a
    batch-broadcast table or index set) is expanded to the other's batch."""

    def __init__(self, axis: int, in_shape, out_shape):
        super().__init__()
        self.size = in_shape[axis]
        self.a, self.b = math.prod(in_shape[:axis]), math.prod(in_shape[axis + 1:])
        self.out_shape = tuple(out_shape)

    def forward(self, x, idx):
        n = max(x.shape[0], idx.shape[0])
        idx = idx.reshape(idx.shape[0], -1)
        idx = torch.where(idx < 0, idx + self.size, idx)
        m = idx.shape[1]
        xv = x.reshape(x.shape[0], self.a, self.size, self.b).expand(n, -1, -1, -1)
        iv = idx.reshape(idx.shape[0], 1, m, 1).expand(n, self.a, m, self.b)
        return torch.gather(xv, 2, iv).reshape(n, *self.out_shape)

    def extra_repr(self):
        return f"size={self.size}, out_shape={self.out_shape}"


class PaddedGather(nn.Module):
    """A Gather whose positions at idx == padding_idx pass no gradient: the rows read there
    are detached (``torch.where`` selects, so the forward is the gather itself)."""

    def __init__(self, inner: nn.Module, padding_idx: int, trailing: int):
        super().__init__()
        self.inner, self.padding_idx, self.trailing = inner, padding_idx, trailing

    def forward(self, x, idx):
        y = self.inner(x, idx)
        at_pad = (idx == self.padding_idx).reshape(*idx.shape, *(1,) * self.trailing)
        return torch.where(at_pad, y.detach(), y)


@lowers("Gather", accepts=CHANNELS_LAST)
def gather(node: Node, layout: str) -> nn.Module:
    a, shape = node.attrs, node.in_types[0].shape
    axis = positive_axis(a["axis"], len(shape))
    if a["indices"] is not None:
        idx = constant_indices(REGISTRY["Gather"], a, shape[axis], node.name)
        return GatherConstant(axis + 1, idx, node.out_type.shape)
    inner = GatherPerExample(axis, shape, node.out_type.shape)
    if a["padding_idx"] is None:
        return inner
    return PaddedGather(inner, a["padding_idx"], len(shape) - 1)
