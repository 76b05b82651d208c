"""Shape and layout ops: Flatten, Reshape, Concatenate, ZeroPadding2D, UpSampling2D (nearest);
the tensor-level Transpose, Squeeze, Unsqueeze, Pad and Cast."""

from __future__ import annotations

from dataclasses import replace

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


# --- tensor-level shape ops (transformers, ONNX): per-example axes, batch axis never addressed ---
# Outputs are ``dataclasses.replace`` of the input type, so whatever else a TensorType records
# about its input (the batch-broadcast mark of a Constant or Parameter) passes through unchanged.

def check_axes(op: OpDef, axes, rank: int, where: str, what: str = "axes") -> tuple:
    """``axes`` (negative allowed) within ``rank`` per-example axes and distinct, as [0, rank)."""
    if any(not -rank <= ax < rank for ax in axes):
        raise op.fail(where, f"{what} within the {rank} per-example axes (batch axis excluded)",
                      tuple(axes))
    out = tuple(positive_axis(ax, rank) for ax in axes)
    if len(set(out)) != len(out):
        raise op.fail(where, f"distinct {what}", tuple(axes))
    return out


@register
class Transpose(OpDef):
    """y[n] = x[n].transpose(perm): output axis i is input axis perm[i] (per-example axes; the
    batch axis stays first). perm is a permutation of range(rank) (negative entries allowed)."""

    positional = ("perm",)

    attrs = {"perm": Attr("shape")}
    input_kind = "any"

    def infer(self, a, inputs, where):
        x = inputs[0]
        perm = check_axes(self, a["perm"], len(x.shape), where, "perm entries")
        if len(perm) != len(x.shape):
            raise self.fail(where, f"a permutation of all {len(x.shape)} per-example axes",
                            f"perm {a['perm']}")
        return replace(x, shape=tuple(x.shape[p] for p in perm))

    def reference(self, a, p, xs, ctx):
        rank = xs[0].ndim - 1
        return np.transpose(xs[0], (0, *(positive_axis(q, rank) + 1 for q in a["perm"])))

    def flops(self, a, inputs, out):
        return 0


def squeezed_axes(op: OpDef, a: dict, shape: tuple, where: str) -> tuple:
    """Squeeze's axes in [0, rank): the listed ones (each of size 1), or every size-1 axis."""
    if a["axes"] is None:
        return tuple(i for i, s in enumerate(shape) if s == 1)
    axes = check_axes(op, a["axes"], len(shape), where)
    wide = [ax for ax in axes if shape[ax] != 1]
    if wide:
        raise op.fail(where, f"axes of size 1 (input {shape})", f"axes {a['axes']}")
    return axes


@register
class Squeeze(OpDef):
    """y[n] = x[n] without the size-1 per-example ``axes`` (ONNX Squeeze; no axes: every
    size-1 per-example axis, never the batch axis). A reshape: the elements keep their order."""

    positional = ("axes",)

    attrs = {"axes": Attr("shape", None)}
    input_kind = "any"

    def infer(self, a, inputs, where):
        x = inputs[0]
        drop = squeezed_axes(self, a, x.shape, where)
        return replace(x, shape=tuple(s for i, s in enumerate(x.shape) if i not in drop))

    def reference(self, a, p, xs, ctx):
        drop = squeezed_axes(self, a, xs[0].shape[1:], "")
        return np.squeeze(xs[0], axis=tuple(ax + 1 for ax in drop))

    def flops(self, a, inputs, out):
        return 0


def unsqueezed_shape(op: OpDef, a: dict, shape: tuple, where: str) -> tuple:
    """Unsqueeze's output shape: ``axes`` index the OUTPUT (rank + len(axes)) per-example axes."""
    rank = len(shape) + len(a["axes"])
    axes = check_axes(op, a["axes"], rank, where)
    rest = iter(shape)
    return tuple(1 if i in axes else next(rest) for i in range(rank))


@register
class Unsqueeze(OpDef):
    """y[n] = x[n] with new size-1 axes at ``axes`` (ONNX Unsqueeze: the axes index the output,
    of rank + len(axes) per-example axes; negative ones count from its end). A reshape."""

    positional = ("axes",)

    attrs = {"axes": Attr("shape", check=lambda v: None if v else "must name at least one axis")}
    input_kind = "any"

    def infer(self, a, inputs, where):
        return replace(inputs[0], shape=unsqueezed_shape(self, a, inputs[0].shape, where))

    def reference(self, a, p, xs, ctx):
        shape = unsqueezed_shape(self, a, xs[0].shape[1:], "")
        return xs[0].reshape(xs[0].shape[0], *shape)

    def flops(self, a, inputs, out):
        return 0


@register
class Pad(OpDef):
    """Constant padding of per-example axes: pads = ((lo_0, hi_0), ..., (lo_{r-1}, hi_{r-1})),
    one pair per per-example axis, each >= 0;
    y[n, i_0, ..., i_{r-1}] = x[n, i_0 - lo_0, ..., i_{r-1} - lo_{r-1}] where that index is
    inside x, else ``value``; output size on axis k: S_k + lo_k + hi_k. An int tensor takes an
    integral value only. Gradient: dL/dx is dL/dy on the inner window (nothing reaches value)."""

    positional = ("pads",)

    attrs = {"pads": Attr("pairs"), "value": Attr("float", 0.0)}
    input_kind = "any"

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(a["pads"]) != len(x.shape):
            raise self.fail(where, f"one (lo, hi) pair per per-example axis ({len(x.shape)})",
                            f"pads {a['pads']}")
        if x.kind == "int" and a["value"] != int(a["value"]):
            raise self.fail(where, "an integral value to pad an int tensor", a["value"])
        return replace(x, shape=tuple(s + lo + hi for s, (lo, hi) in zip(x.shape, a["pads"])))

    def reference(self, a, p, xs, ctx):
        value = a["value"] if np.issubdtype(xs[0].dtype, np.floating) else int(a["value"])
        return np.pad(xs[0], ((0, 0), *a["pads"]), constant_values=value)

    def flops(self, a, inputs, out):
        return 0


@register
class Cast(OpDef):
    """y = x converted to kind ``to``: ``float`` (the program's float dtype) or ``int``.
    float -> int truncates toward zero (C's rule, what every framework's cast does: 2.7 -> 2,
    -2.7 -> -2); NaN, infinities and values beyond the int range are undefined (each framework
    returns its own garbage), so keep them out. The same kind in and out is the identity.
    No gradient flows through a cast to int (an int tensor carries none)."""

    positional = ("to",)

    attrs = {"to": Attr("str", choices=("float", "int"))}
    input_kind = "any"

    def infer(self, a, inputs, where):
        return replace(inputs[0], kind=a["to"])

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        if a["to"] == "int":
            return x if np.issubdtype(x.dtype, np.integer) else np.trunc(x).astype(np.int64)
        return x.astype(np.float64)

    def flops(self, a, inputs, out):
        return 0
