"""Lowerings of the pools: explicit pads of the one padding rule; average pools exclude padded
cells; the 1-D pools are the 2-D ones on (N, 1, T, C)."""

from __future__ import annotations

from dataclasses import dataclass

from rosetta.backends.mxnet.lowering import NEG_INF, lowers, pad_nchw, step_mask, to_nchw, to_nhwc
from rosetta.ops.windows import as_2d, spatial_plan


def _pool_nchw(F, x, a, kind):
    return F.Pooling(x, kernel=tuple(a["kernel_size"]), stride=tuple(a["strides"]),
                     pool_type=kind, pooling_convention="valid")


@lowers("MaxPool2D")
def max_pool2d(F, node, xs, p, ctx):
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2])
    return to_nhwc(F, _pool_nchw(F, pad_nchw(F, to_nchw(F, xs[0]), pads, NEG_INF), a, "max"))


@lowers("AvgPool2D")
def avg_pool2d(F, node, xs, p, ctx):
    """Window sum of the real cells / their number (padded cells excluded)."""
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2])
    x = pad_nchw(F, to_nchw(F, xs[0]), pads)
    total = _pool_nchw(F, x, a, "sum")
    if any(lo or hi for lo, hi in pads):
        ones = pad_nchw(F, F.ones_like(F.slice_axis(to_nchw(F, xs[0]), axis=1, begin=0,
                                                   end=1)), pads)
        return to_nhwc(F, F.broadcast_div(total, _pool_nchw(F, ones, a, "sum")))
    return to_nhwc(F, total / float(a["kernel_size"][0] * a["kernel_size"][1]))


def _pool1d(lower):
    def pool(F, node, xs, p, ctx):
        """The 2-D pool of (N, 1, T, C) with a window of height 1."""
        a2 = as_2d(node.attrs)
        view = _View(node, a2, (1, *node.in_types[0].shape))
        return F.squeeze(lower(F, view, [F.expand_dims(xs[0], axis=1)], p, ctx), axis=1)
    pool.__doc__ = f"{lower.__name__} over the time axis (window of height 1)."
    return pool


@dataclass
class _View:
    """A node seen as its 2-D equivalent (attributes, input type): what a 1-D lowering hands to
    the 2-D one."""

    node: object
    attrs: dict
    shape: tuple

    @property
    def in_types(self):
        return [type("T", (), {"shape": self.shape})]


@lowers("GlobalMaxPool2D")
def global_max_pool2d(F, node, xs, p, ctx):
    return F.max(xs[0], axis=(1, 2))


@lowers("GlobalAvgPool2D")
def global_avg_pool2d(F, node, xs, p, ctx):
    return F.mean(xs[0], axis=(1, 2))


@lowers("SequencePool")
def sequence_pool(F, node, xs, p, ctx):
    """Mean or max over the real steps t < length of (N, T, C) (every step without lengths)."""
    x = xs[0]
    mean = node.attrs["mode"] == "mean"
    if len(xs) == 1:
        return F.mean(x, axis=1) if mean else F.max(x, axis=1)
    t_len = node.in_types[0].shape[0]
    real = F.expand_dims(F.cast(step_mask(F, xs[1], t_len), dtype=ctx.dtype), axis=2)
    if mean:
        total = F.sum(F.broadcast_mul(x, real), axis=1)
        return F.broadcast_div(total, F.reshape(F.cast(xs[1], dtype=ctx.dtype), shape=(-1, 1)))
    floor = F.broadcast_like(real, x) * 0.0 + NEG_INF
    return F.max(F.where(F.broadcast_like(real, x), x, floor), axis=1)


lowers("MaxPool1D")(_pool1d(max_pool2d))
lowers("AvgPool1D")(_pool1d(avg_pool2d))
