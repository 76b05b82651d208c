"""Shape and layout ops: Flatten, Reshape, Concatenate, ZeroPadding2D, UpSampling2D (nearest)."""

from __future__ import annotations

import numpy as np

from rosetta.ops.registry import Attr, OpDef, TensorType, positive, register
from rosetta.ops.windows import check_rank3


def _explicit(v):
    return "must be explicit ((top, bottom), (left, right)) pads" if isinstance(v, str) else None


@register
class ZeroPadding2D(OpDef):
    """y[n, h, w, c] = x[n, h - top, w - left, c] where that index is inside x, else 0.

    padding is explicit: ((top, bottom), (left, right)) or one int for all four sides; output
    (H + top + bottom, W + left + right, C)."""

    positional = ("padding",)

    attrs = {"padding": Attr("padding", n=2, check=_explicit)}

    def infer(self, a, inputs, where):
        x = inputs[0]
        check_rank3(self, x, where)
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

    positional = ("size",)

    attrs = {
        "size": Attr("ints", n=2, check=positive),
        "interpolation": Attr("str", "nearest", choices=("nearest",)),
    }

    def infer(self, a, inputs, where):
        x = inputs[0]
        check_rank3(self, x, where)
        return TensorType((x.shape[0] * a["size"][0], x.shape[1] * a["size"][1], x.shape[2]))

    def reference(self, a, p, xs, ctx):
        return np.repeat(np.repeat(xs[0], a["size"][0], axis=1), a["size"][1], axis=2)

    def flops(self, a, inputs, out):
        return 0


@register
class Flatten(OpDef):
    """y[n, :] = x[n].reshape(-1) in canonical (channels-last, row-major) order: an (H, W, C)
    input flattens in H*W*C order on every backend (torch permutes from NCHW first)."""

    attrs = {}
    input_kind = "any"

    def infer(self, a, inputs, where):
        return TensorType((int(np.prod(inputs[0].shape)),), inputs[0].kind)

    def reference(self, a, p, xs, ctx):
        return xs[0].reshape(xs[0].shape[0], -1)

    def flops(self, a, inputs, out):
        return 0


@register
class Reshape(OpDef):
    """y[n] = x[n].reshape(shape), row-major in canonical layout; one entry may be -1."""

    positional = ("shape",)

    attrs = {"shape": Attr("shape")}
    input_kind = "any"

    def infer(self, a, inputs, where):
        target = a["shape"]
        size = int(np.prod(inputs[0].shape))
        if sum(1 for s in target if s == -1) > 1 or any(s == 0 or s < -1 for s in target):
            raise self.fail(where, "positive sizes with at most one -1", f"shape {target}")
        known = int(np.prod([s for s in target if s != -1]))
        if -1 in target:
            if size % known:
                raise self.fail(where, f"a shape whose known sizes divide {size} elements",
                                f"shape {target}")
            target = tuple(size // known if s == -1 else s for s in target)
        elif known != size:
            raise self.fail(where, f"a shape of {size} elements (input {inputs[0].shape})",
                            f"shape {target} of {known}")
        return TensorType(target, inputs[0].kind)

    def reference(self, a, p, xs, ctx):
        return xs[0].reshape(xs[0].shape[0], *a["shape"])

    def flops(self, a, inputs, out):
        return 0


def positive_axis(axis: int, rank: int) -> int:
    """A per-example axis in [0, rank) from a possibly negative one."""
    return axis + rank if axis < 0 else axis


@register
class Concatenate(OpDef):
    """y = concat(x_1, ..., x_k) along per-example ``axis`` (default -1, the channel axis);
    every other axis must match."""

    attrs = {"axis": Attr("int", -1)}
    arity = (2, None)

    def infer(self, a, inputs, where):
        rank = len(inputs[0].shape)
        if any(len(x.shape) != rank for x in inputs):
            raise self.fail(where, "inputs of one rank", f"shapes {[x.shape for x in inputs]}")
        if not -rank <= a["axis"] < rank:
            raise self.fail(where, f"an axis within the {rank} per-example axes", a["axis"])
        ax = positive_axis(a["axis"], rank)
        rest = [x.shape[:ax] + x.shape[ax + 1:] for x in inputs]
        if any(r != rest[0] for r in rest):
            raise self.fail(where, f"shapes equal except on axis {a['axis']}",
                            f"shapes {[x.shape for x in inputs]}")
        shape = list(inputs[0].shape)
        shape[ax] = sum(x.shape[ax] for x in inputs)
        return TensorType(tuple(shape))

    def reference(self, a, p, xs, ctx):
        ax = positive_axis(a["axis"], xs[0].ndim - 1) + 1
        return np.concatenate(xs, axis=ax)

    def flops(self, a, inputs, out):
        return 0
