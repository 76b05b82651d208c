"""Convolution and pooling over the time axis of (T, C) inputs, channels last (N, T, C).

The padding rule is ``rosetta.ops.conv.resolve_padding``, the one Conv2D and the 2-D pools use;
explicit padding is one (lo, hi) pair (or ``((lo, hi),)``, or one int for both sides). The NumPy
references run the 2-D references on (N, 1, T, C) with a window of height 1.
"""

from __future__ import annotations

import numpy as np

from rosetta.ops.activation import weighted_layer_attrs
from rosetta.ops.conv import resolve_padding
from rosetta.ops.registry import REGISTRY, Attr, OpDef, ParamDef, TensorType, positive, register
from rosetta.ops.pool import resolve_window_strides


def _pair_as_list(given: dict) -> dict:
    """Accept a bare (lo, hi) pair for the one time axis."""
    pad = given.get("padding")
    if (isinstance(pad, (list, tuple)) and len(pad) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pad)):
        given = {**given, "padding": (tuple(pad),)}
    return given


def time_plan(a: dict, size: int, dilation: int = 1):
    """(output length, (lo, hi)) of a 1-D window op, by the shared padding rule."""
    return resolve_padding(size, a["kernel_size"][0], a["strides"][0], dilation, a["padding"], 0)


def as_2d(a: dict) -> dict:
    """The attributes of the equivalent 2-D op on (N, 1, T, C): a window of height 1."""
    b = dict(a)
    for k in ("kernel_size", "strides", "dilation"):
        if k in a:
            b[k] = (1, a[k][0])
    if not isinstance(a["padding"], str):
        b["padding"] = ((0, 0), a["padding"][0])
    return b


def _rank2(op, x, where):
    if len(x.shape) != 2:
        raise op.fail(where, "an input of rank 2 per example (T, C)", f"shape {x.shape}")


@register
class Conv1D(OpDef):
    """1-D convolution (cross-correlation), channels last (N, T, C).

    y[n, t, o] = bias[o] + sum_{i, c} xpad[n, t*s + i*d, g*Cg + c] * kernel[i, c, o],
    g = o // (filters / groups), Cg = C / groups, then the fused activation. kernel is
    (k, C/groups, filters). Padding per ``resolve_padding`` (valid, same, or explicit (lo, hi)).
    """

    attrs = {
        "filters": Attr("int", check=positive),
        "kernel_size": Attr("ints", n=1, check=positive),
        "strides": Attr("ints", (1,), n=1, check=positive),
        "padding": Attr("padding", "valid", n=1),
        "dilation": Attr("ints", (1,), n=1, check=positive),
        "groups": Attr("int", 1, check=positive),
        **weighted_layer_attrs(),
    }

    def resolve_attrs(self, given, where):
        return super().resolve_attrs(_pair_as_list(given), where)

    def infer(self, a, inputs, where):
        x = inputs[0]
        _rank2(self, x, where)
        t, c = x.shape
        if c % a["groups"] or a["filters"] % a["groups"]:
            raise self.fail(where, f"channels ({c}) and filters ({a['filters']}) divisible by "
                            f"groups ({a['groups']})", "a remainder")
        out, (lo, hi) = time_plan(a, t, a["dilation"][0])
        if (t + lo + hi) * c > 2 ** 31 - 1:
            raise self.fail(where, "a padded input within 2**31 - 1 elements per example",
                            f"padded length {t + lo + hi} x {c}")
        if out < 1:
            raise self.fail(where, f"a window of {a['kernel_size'][0]} (dilation "
                            f"{a['dilation'][0]}) that fits in the padded input ({t + lo + hi})",
                            f"output length {out}")
        return TensorType((out, a["filters"]))

    def params(self, a, inputs):
        c = inputs[0].shape[1]
        p = {"kernel": ParamDef((a["kernel_size"][0], c // a["groups"], a["filters"]),
                                a["kernel_init"])}
        if a["use_bias"]:
            p["bias"] = ParamDef((a["filters"],), a["bias_init"])
        return p

    def reference(self, a, p, xs, ctx):
        p2 = dict(p, kernel=p["kernel"][None])
        return REGISTRY["Conv2D"].reference(as_2d(a), p2, [xs[0][:, None]], ctx)[:, 0]

    def flops(self, a, inputs, out):
        cin_g = inputs[0].shape[1] // a["groups"]
        return 2 * int(np.prod(out.shape)) * a["kernel_size"][0] * cin_g


class _Pool1D(OpDef):
    attrs = {
        "kernel_size": Attr("ints", n=1, check=positive),
        "strides": Attr("ints", None, n=1, check=positive, doc="defaults to kernel_size"),
        "padding": Attr("padding", "valid", n=1),
    }
    ref2d = ""

    def resolve_attrs(self, given, where):
        return resolve_window_strides(super().resolve_attrs, _pair_as_list(given), where)

    def infer(self, a, inputs, where):
        x = inputs[0]
        _rank2(self, x, where)
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

    ref2d = "MaxPool2D"


@register
class AvgPool1D(_Pool1D):
    """y[n, t, c] = sum over the window of real cells / number of real cells in the window
    (padded cells excluded from both). strides default to kernel_size."""

    ref2d = "AvgPool2D"
