"""Pooling over H and W, channels last."""

from __future__ import annotations

import numpy as np

from rosetta.ops.conv import spatial_plan, windows
from rosetta.ops.registry import Attr, OpDef, TensorType, positive, register


def _window_attrs():
    return {
        "kernel_size": Attr("ints", n=2, check=positive),
        "strides": Attr("ints", None, n=2, check=positive,
                        doc="defaults to kernel_size (flax defaults to 1: lowered explicitly)"),
        "padding": Attr("padding", "valid", n=2),
    }


def resolve_window_strides(resolve, given: dict, where: str) -> dict:
    """Resolve a pooling op's attributes with ``resolve``; unset strides default to the window
    (flax defaults to 1: the backends always lower strides explicitly)."""
    a = dict(given)
    if a.get("strides") is None:
        a.pop("strides", None)
        a = resolve(a, where)
        a["strides"] = a["kernel_size"]
        return a
    return resolve(a, where)


class _Pool2D(OpDef):
    attrs = _window_attrs()

    def resolve_attrs(self, given, where):
        return resolve_window_strides(super().resolve_attrs, given, where)

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) != 3:
            raise self.fail(where, "an input of rank 3 per example (H, W, C)", f"shape {x.shape}")
        out, pads = spatial_plan(a, x.shape[:2])
        if min(out) < 1:
            raise self.fail(where, f"a {a['kernel_size']} window that fits in {x.shape[:2]}",
                            f"output size {out}")
        for ax in range(2):
            if max(pads[ax]) >= a["kernel_size"][ax]:
                raise self.fail(where, "padding smaller than the window (a window of padding "
                                "only has no value)", f"pads {pads}")
        return TensorType((*out, x.shape[2]))


@register
class MaxPool2D(_Pool2D):
    """y[n, h, w, c] = max_{i, j} xpad[n, h*s0 + i, w*s1 + j, c]; padded cells are -inf
    (never chosen). strides default to kernel_size."""

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        out, pads = spatial_plan(a, x.shape[1:3])
        xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
        y = np.full((x.shape[0], *out, x.shape[3]), -np.inf)
        for _, patch in windows(xp, a["kernel_size"], a["strides"], (1, 1), out):
            y = np.maximum(y, patch)
        return y


@register
class AvgPool2D(_Pool2D):
    """y[n, h, w, c] = sum over the window of real cells / number of real cells in the window.
    Padded cells are excluded from both sums (torch counts them by default). strides default to
    kernel_size."""

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        out, pads = spatial_plan(a, x.shape[1:3])
        xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        ones = np.pad(np.ones((1, *x.shape[1:3], 1)), ((0, 0), pads[0], pads[1], (0, 0)))
        total = np.zeros((x.shape[0], *out, x.shape[3]))
        count = np.zeros((1, *out, 1))
        for (_, patch), (_, cpatch) in zip(
                windows(xp, a["kernel_size"], a["strides"], (1, 1), out),
                windows(ones, a["kernel_size"], a["strides"], (1, 1), out)):
            total += patch
            count += cpatch
        return total / count


@register
class GlobalAvgPool2D(OpDef):
    """y[n, c] = mean_{h, w} x[n, h, w, c]."""

    attrs = {}

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) != 3:
            raise self.fail(where, "an input of rank 3 per example (H, W, C)", f"shape {x.shape}")
        return TensorType((x.shape[2],))

    def reference(self, a, p, xs, ctx):
        return xs[0].mean(axis=(1, 2))

    def flops(self, a, inputs, out):
        return int(np.prod(inputs[0].shape))
