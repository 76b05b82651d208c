"""Pooling, channels last: windowed (MaxPool2D, AvgPool2D, MaxPool1D, AvgPool1D), global
(GlobalAvgPool2D, GlobalMaxPool2D) and over the real steps of a sequence (SequencePool).

Windows pad by the one rule of ``rosetta.ops.windows``; unset strides default to the window."""

from __future__ import annotations

import numpy as np

from rosetta.ops.registry import Attr, OpDef, REGISTRY, TensorType, positive, register
from rosetta.ops.windows import (pair_as_list, check_rank2, check_rank3, as_2d,
                                 resolve_window_strides, spatial_plan, time_plan, windows)


class _Pool1D(OpDef):
    attrs = {
        "kernel_size": Attr("ints", n=1, check=positive),
        "strides": Attr("ints", None, n=1, check=positive, doc="defaults to kernel_size"),
        "padding": Attr("padding", "valid", n=1),
    }
    ref2d = ""

    def resolve_attrs(self, given, where):
        return resolve_window_strides(super().resolve_attrs, pair_as_list(given), where)

    def infer(self, a, inputs, where):
        x = inputs[0]
        check_rank2(self, x, where)
        out, pads = time_plan(a, x.shape[0])
        if out < 1:
            raise self.fail(where, f"a window of {a['kernel_size'][0]} that fits in "
                            f"{x.shape[0]}", f"output length {out}")
        if max(pads) >= a["kernel_size"][0]:
            raise self.fail(where, "padding smaller than the window (a window of padding only "
                            "has no value)", f"pads {pads}")
        return TensorType((out, x.shape[1]))

    def reference(self, a, p, xs, ctx):
        return REGISTRY[self.ref2d].reference(as_2d(a), p, [xs[0][:, None]], ctx)[:, 0]


@register
class MaxPool1D(_Pool1D):
    """y[n, t, c] = max_i xpad[n, t*s + i, c]; padded cells are -inf (never chosen). strides
    default to kernel_size."""

    positional = ("kernel_size",)

    ref2d = "MaxPool2D"


@register
class AvgPool1D(_Pool1D):
    """y[n, t, c] = sum over the window of real cells / number of real cells in the window
    (padded cells excluded from both). strides default to kernel_size."""

    positional = ("kernel_size",)

    ref2d = "AvgPool2D"


def _window_attrs():
    return {
        "kernel_size": Attr("ints", n=2, check=positive),
        "strides": Attr("ints", None, n=2, check=positive,
                        doc="defaults to kernel_size (flax defaults to 1: lowered explicitly)"),
        "padding": Attr("padding", "valid", n=2),
    }


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

    positional = ("kernel_size",)

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

    positional = ("kernel_size",)

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


@register
class GlobalMaxPool2D(OpDef):
    """y[n, c] = max_{h, w} x[n, h, w, c]."""

    attrs = {}

    def infer(self, a, inputs, where):
        x = inputs[0]
        check_rank3(self, x, where)
        return TensorType((x.shape[2],))

    def reference(self, a, p, xs, ctx):
        return xs[0].max(axis=(1, 2))

    def flops(self, a, inputs, out):
        return int(np.prod(inputs[0].shape))


@register
class SequencePool(OpDef):
    """Pool a sequence (T, C) to (C,) over its real steps t < length (every step without a
    ``lengths`` input; lengths are in [1, T]).

    mean: y[c] = sum_{t < length} x[t, c] / length;  max: y[c] = max_{t < length} x[t, c].
    Padded steps never count, so a model's output does not depend on what the padding holds.
    """

    positional = ("mode",)

    arity = (1, 2)
    lengths_input = 1
    attrs = {"mode": Attr("str", "mean", choices=("mean", "max"))}

    def infer(self, a, inputs, where):
        if len(inputs) > 2:
            raise self.fail(where, "a sequence and optional lengths (2 inputs at most)",
                            f"{len(inputs)} inputs")
        x = inputs[0]
        if len(x.shape) != 2:
            raise self.fail(where, "a sequence input of rank 2 per example (T, C)",
                            f"shape {x.shape}")
        return TensorType((x.shape[1],))

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        n, t = x.shape[:2]
        lengths = np.asarray(xs[1]) if len(xs) > 1 else np.full(n, t)
        real = np.arange(t)[None, :] < lengths[:, None]          # (N, T)
        if a["mode"] == "mean":
            return (x * real[..., None]).sum(axis=1) / lengths[:, None]
        return np.where(real[..., None], x, -np.inf).max(axis=1)

    def flops(self, a, inputs, out):
        return int(np.prod(inputs[0].shape))
