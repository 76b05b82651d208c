"""Lowerings of Reduce, Softmax and LogSoftmax (``rosetta.ops.reduction``)."""

from __future__ import annotations

from rosetta.backends.mxnet.lowering import lowers
from rosetta.ops.reduction import normalize_axes
from rosetta.ops.registry import REGISTRY


def _axes(node, axes):
    return tuple(i + 1 for i in normalize_axes(REGISTRY[node.op], axes,
                                               len(node.in_types[0].shape), node.name))


@lowers("Reduce")
def reduce(F, node, xs, p, ctx):
    """F.sum / mean / max / min over the axes (+1); var written out as
    sum((x - mean)^2) / (n - correction)."""
    a = node.attrs
    axes, keep, x = _axes(node, a["axes"]), a["keepdims"], xs[0]
    if a["fn"] == "var":
        n = 1
        for i in axes:
            n *= node.in_types[0].shape[i - 1]
        d = F.broadcast_sub(x, F.mean(x, axis=axes, keepdims=True))
        return F.sum(d * d, axis=axes, keepdims=keep) / float(n - a["correction"])
    return getattr(F, a["fn"])(x, axis=axes, keepdims=keep)


@lowers("Softmax", "LogSoftmax")
def softmax(F, node, xs, p, ctx):
    """F.softmax / F.log_softmax (both subtract the max) over the axis (+1)."""
    axis = _axes(node, (node.attrs["axis"],))[0]
    return (F.softmax if node.op == "Softmax" else F.log_softmax)(xs[0], axis=axis)


@lowers("Cumsum")
def cumsum(F, node, xs, p, ctx):
    """F.cumsum over the axis (+1); MXNet carries int tensors in the float dtype, where sums of
    integers below 2**53 are exact."""
    return F.cumsum(xs[0], axis=_axes(node, (node.attrs["axis"],))[0])
