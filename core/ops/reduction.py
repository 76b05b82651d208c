"""Reductions over per-example axes: Reduce(fn, axes), Softmax(axis), LogSoftmax(axis),
Cumsum(axis)."""

from __future__ import annotations

import numpy as np

from rosetta.ops.registry import Attr, OpDef, TensorType, register


def normalize_axes(op: OpDef, axes, rank: int, where: str) -> tuple:
    """Per-example axes (negative allowed) as sorted non-negative ones; empty, repeated or out of
    range axes refused."""
    if not axes:
        raise op.fail(where, "at least one axis", "axes ()")
    out = []
    for ax in axes:
        if not -rank <= ax < rank:
            raise op.fail(where, f"axes within the {rank} per-example axes (the batch axis is "
                          f"never addressed)", f"axis {ax}")
        out.append(ax % rank)
    if len(set(out)) != len(out):
        raise op.fail(where, "distinct axes", f"axes {tuple(axes)}")
    return tuple(sorted(out))


def _one_axis(op: OpDef, axis: int, rank: int, where: str) -> int:
    return normalize_axes(op, (axis,), rank, where)[0]


@register
class Reduce(OpDef):
    """y = f over the per-example ``axes`` of x (kept as size 1 with ``keepdims``):
    sum; mean = sum / n; max; min; var = sum (x - mean)^2 / (n - correction), ``correction``
    explicit (0: population, NumPy/TensorFlow/JAX default; 1: sample, torch's default), only with
    var. n = the number of elements reduced (> correction). Gradients: sum 1, mean 1/n,
    var 2 (x - mean) / (n - correction); max/min to the extreme element (ties, probability zero
    for random floats: torch amax, TensorFlow and JAX share the gradient evenly among them)."""

    positional = ("fn", "axes")
    attrs = {"fn": Attr("str", choices=("sum", "mean", "max", "min", "var")),
             "axes": Attr("shape", doc="per-example axes, negative allowed"),
             "keepdims": Attr("bool", False),
             "correction": Attr("optional_float", None,
                                doc="var only, required there: 0 or 1")}

    def resolve_attrs(self, given, where):
        a = super().resolve_attrs(given, where)
        c = a["correction"]
        if a["fn"] == "var":
            if c is None or c not in (0.0, 1.0):
                raise self.fail(where, "var with an explicit correction=0 (population) or 1 "
                                "(sample; torch's default)", f"correction={c!r}")
            a["correction"] = int(c)
        elif c is not None:
            raise self.fail(where, "correction only with fn='var'", f"fn={a['fn']!r}")
        return a

    def infer(self, a, inputs, where):
        x = inputs[0]
        axes = normalize_axes(self, a["axes"], len(x.shape), where)
        n = int(np.prod([x.shape[i] for i in axes]))
        if a["fn"] == "var" and n <= a["correction"]:
            raise self.fail(where, f"more than correction = {a['correction']} elements to "
                            f"reduce", f"n = {n}")
        shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape)
                      if a["keepdims"] or i not in axes)
        return TensorType(shape)

    def batch_axes(self, a, rank: int) -> tuple:
        return tuple(i + 1 for i in normalize_axes(self, a["axes"], rank, "reference"))

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        axes, keep = self.batch_axes(a, x.ndim - 1), a["keepdims"]
        fn = a["fn"]
        if fn == "var":
            return np.var(x, axis=axes, keepdims=keep, ddof=a["correction"])
        return getattr(np, {"sum": "sum", "mean": "mean", "max": "max", "min": "min"}[fn])(
            x, axis=axes, keepdims=keep)


class _AxisOp(OpDef):
    positional = ("axis",)
    attrs = {"axis": Attr("int", -1, doc="per-example axis, negative allowed")}

    def infer(self, a, inputs, where):
        _one_axis(self, a["axis"], len(inputs[0].shape), where)
        return inputs[0]

    def batch_axis(self, a, rank: int) -> int:
        return _one_axis(self, a["axis"], rank, "reference") + 1


@register
class Softmax(_AxisOp):
    """y_i = exp(x_i - m) / sum_j exp(x_j - m) along ``axis``, m = max_j x_j (numerically
    stable; -inf entries give 0, a row of all -inf gives nan on every backend)."""

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        ax = self.batch_axis(a, x.ndim - 1)
        e = np.exp(x - x.max(axis=ax, keepdims=True))
        return e / e.sum(axis=ax, keepdims=True)


@register
class LogSoftmax(_AxisOp):
    """y_i = x_i - m - log sum_j exp(x_j - m) along ``axis``, m = max_j x_j (numerically
    stable). dL/dx = dL/dy - softmax(x) sum_j dL/dy_j."""

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        ax = self.batch_axis(a, x.ndim - 1)
        z = x - x.max(axis=ax, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=ax, keepdims=True))


@register
class Cumsum(_AxisOp):
    """y[..., i, ...] = sum_{j <= i} x[..., j, ...] along the per-example ``axis`` (torch.cumsum,
    np.cumsum), int or float: the kind is kept (an int cumsum is exact on every backend: the
    position ids RoBERTa computes from its input ids). dL/dx_j = sum_{i >= j} dL/dy_i (the
    reversed cumulative sum); an int input carries no gradient."""

    attrs = {"axis": Attr("int", doc="per-example axis, negative allowed")}
    input_kind = "any"

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        return np.cumsum(x, axis=self.batch_axis(a, x.ndim - 1))

    def flops(self, a, inputs, out):
        return int(np.prod(out.shape))
