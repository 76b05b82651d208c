"""Spatial layout ops on (H, W, C) inputs, channels last: ZeroPadding2D, UpSampling2D (nearest)
and GlobalMaxPool2D."""

from __future__ import annotations

import numpy as np

from rosetta.ops.registry import Attr, OpDef, TensorType, positive, register


def _explicit(v):
    return "must be explicit ((top, bottom), (left, right)) pads" if isinstance(v, str) else None


def _rank3(op, x, where):
    if len(x.shape) != 3:
        raise op.fail(where, "an input of rank 3 per example (H, W, C)", f"shape {x.shape}")


@register
class ZeroPadding2D(OpDef):
    """y[n, h, w, c] = x[n, h - top, w - left, c] where that index is inside x, else 0.

    padding is explicit: ((top, bottom), (left, right)) or one int for all four sides; output
    (H + top + bottom, W + left + right, C)."""

    attrs = {"padding": Attr("padding", n=2, check=_explicit)}

    def infer(self, a, inputs, where):
        x = inputs[0]
        _rank3(self, x, where)
        (t, b), (l, r) = a["padding"]
        return TensorType((x.shape[0] + t + b, x.shape[1] + l + r, x.shape[2]))

    def reference(self, a, p, xs, ctx):
        return np.pad(xs[0], ((0, 0), *a["padding"], (0, 0)))

    def flops(self, a, inputs, out):
        return 0


@register
class UpSampling2D(OpDef):
    """Nearest-neighbour upsampling by integer factors size = (sH, sW):
    y[n, h, w, c] = x[n, floor(h / sH), floor(w / sW), c]; output (H*sH, W*sW, C)."""

    attrs = {
        "size": Attr("ints", n=2, check=positive),
        "interpolation": Attr("str", "nearest", choices=("nearest",)),
    }

    def infer(self, a, inputs, where):
        x = inputs[0]
        _rank3(self, x, where)
        return TensorType((x.shape[0] * a["size"][0], x.shape[1] * a["size"][1], x.shape[2]))

    def reference(self, a, p, xs, ctx):
        return np.repeat(np.repeat(xs[0], a["size"][0], axis=1), a["size"][1], axis=2)

    def flops(self, a, inputs, out):
        return 0


@register
class GlobalMaxPool2D(OpDef):
    """y[n, c] = max_{h, w} x[n, h, w, c]."""

    attrs = {}

    def infer(self, a, inputs, where):
        x = inputs[0]
        _rank3(self, x, where)
        return TensorType((x.shape[2],))

    def reference(self, a, p, xs, ctx):
        return xs[0].max(axis=(1, 2))

    def flops(self, a, inputs, out):
        return int(np.prod(inputs[0].shape))
