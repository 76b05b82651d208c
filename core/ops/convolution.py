"""Convolutions, channels last: Conv2D, Conv1D, DepthwiseConv2D, SeparableConv2D,
Conv2DTranspose.

Every convolution but the transposed one pads by the one rule of ``rosetta.ops.windows``. The
transposed convolution has its own output rule, ``transpose_plan``, stated in scatter form (the
adjoint of a strided convolution)."""

from __future__ import annotations

import numpy as np

from rosetta.initializers import Initializer
from rosetta.ops.elementwise import bias_and_activation, fused_attr, weighted_layer_attrs
from rosetta.ops.registry import Attr, OpDef, ParamDef, REGISTRY, TensorType, positive, register
from rosetta.ops.windows import pair_as_list, check_rank2, as_2d, spatial_plan, time_plan, windows


@register
class Conv2D(OpDef):
    """2-D convolution (cross-correlation), channels last.

    y[n, h, w, o] = bias[o] + sum_{i, j, c} xpad[n, h*s0 + i*d0, w*s1 + j*d1, g*Cg + c]
                    * kernel[i, j, c, o],  g = o // (filters / groups), Cg = C / groups,
    then the fused activation. kernel is (kH, kW, C/groups, filters). Padding per
    ``resolve_padding``; explicit padding is ((top, bottom), (left, right)).
    """

    positional = ("filters", "kernel_size")

    attrs = {
        "filters": Attr("int", check=positive),
        "kernel_size": Attr("ints", n=2, check=positive),
        "strides": Attr("ints", (1, 1), n=2, check=positive),
        "padding": Attr("padding", "valid", n=2),
        "dilation": Attr("ints", (1, 1), n=2, check=positive),
        "groups": Attr("int", 1, check=positive),
        **weighted_layer_attrs(),
    }

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) != 3:
            raise self.fail(where, "an input of rank 3 per example (H, W, C)", f"shape {x.shape}")
        c = x.shape[2]
        if c % a["groups"] or a["filters"] % a["groups"]:
            raise self.fail(where, f"channels ({c}) and filters ({a['filters']}) divisible by "
                            f"groups ({a['groups']})", "a remainder")
        out, pads = spatial_plan(a, x.shape[:2], a["dilation"])
        padded = [x.shape[ax] + sum(pads[ax]) for ax in range(2)]
        if padded[0] * padded[1] * c > 2 ** 31 - 1:
            raise self.fail(where, "a padded input within 2**31 - 1 elements per example",
                            f"padded size {tuple(padded)} x {c} (dilation {a['dilation']})")
        if min(out) < 1:
            raise self.fail(where, f"a {a['kernel_size']} window (dilation {a['dilation']}) that "
                            f"fits in the padded input {x.shape[:2]}", f"output size {out}")
        return TensorType((*out, a["filters"]))

    def params(self, a, inputs):
        c = inputs[0].shape[2]
        p = {"kernel": ParamDef((*a["kernel_size"], c // a["groups"], a["filters"]),
                                a["kernel_init"])}
        if a["use_bias"]:
            p["bias"] = ParamDef((a["filters"],), a["bias_init"])
        return p

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        out, pads = spatial_plan(a, x.shape[1:3], a["dilation"])
        xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        k = p["kernel"]
        g = a["groups"]
        cin_g, cout_g = k.shape[2], k.shape[3] // g
        y = np.zeros((x.shape[0], *out, k.shape[3]))
        for (i, j), patch in windows(xp, a["kernel_size"], a["strides"], a["dilation"], out):
            for gi in range(g):
                y[..., gi * cout_g:(gi + 1) * cout_g] += np.einsum(
                    "nhwc,co->nhwo", patch[..., gi * cin_g:(gi + 1) * cin_g],
                    k[i, j, :, gi * cout_g:(gi + 1) * cout_g])
        return bias_and_activation(y, p, a)

    def flops(self, a, inputs, out):
        kh, kw = a["kernel_size"]
        cin_g = inputs[0].shape[2] // a["groups"]
        return 2 * int(np.prod(out.shape)) * kh * kw * cin_g


@register
class Conv1D(OpDef):
    """1-D convolution (cross-correlation), channels last (N, T, C).

    y[n, t, o] = bias[o] + sum_{i, c} xpad[n, t*s + i*d, g*Cg + c] * kernel[i, c, o],
    g = o // (filters / groups), Cg = C / groups, then the fused activation. kernel is
    (k, C/groups, filters). Padding per ``resolve_padding`` (valid, same, or explicit (lo, hi)).
    """

    positional = ("filters", "kernel_size")

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
        return super().resolve_attrs(pair_as_list(given), where)

    def infer(self, a, inputs, where):
        x = inputs[0]
        check_rank2(self, x, where)
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


def _window_attrs() -> dict:
    """The window attributes of Conv2D (kernel_size, strides, padding, dilation)."""
    return {
        "kernel_size": Attr("ints", n=2, check=positive),
        "strides": Attr("ints", (1, 1), n=2, check=positive),
        "padding": Attr("padding", "valid", n=2),
        "dilation": Attr("ints", (1, 1), n=2, check=positive),
    }


def _window_infer(op: OpDef, a: dict, x: TensorType, where: str):
    """Check a rank-3 input and that the window fits; the output (H, W) of the padding rule."""
    if len(x.shape) != 3:
        raise op.fail(where, "an input of rank 3 per example (H, W, C)", f"shape {x.shape}")
    out, pads = spatial_plan(a, x.shape[:2], a["dilation"])
    if min(out) < 1:
        padded = tuple(x.shape[ax] + sum(pads[ax]) for ax in range(2))
        raise op.fail(where, f"a {a['kernel_size']} window (dilation {a['dilation']}) that fits "
                      f"in the padded input {padded}", f"output size {out}")
    return out


def depthwise_reference(x: np.ndarray, kernel: np.ndarray, a: dict) -> np.ndarray:
    """y[n, h, w, c·M + m] = Σ_{i, j} xpad[n, h·s0 + i·d0, w·s1 + j·d1, c] · kernel[i, j, c, m]
    (no bias, no activation), with the padding of ``spatial_plan``."""
    out, pads = spatial_plan(a, x.shape[1:3], a["dilation"])
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    c, m = kernel.shape[2:]
    y = np.zeros((x.shape[0], *out, c, m))
    for (i, j), patch in windows(xp, a["kernel_size"], a["strides"], a["dilation"], out):
        y += patch[..., :, None] * kernel[i, j]
    return y.reshape(x.shape[0], *out, c * m)


@register
class DepthwiseConv2D(OpDef):
    """Depthwise 2-D convolution, channels last, depth multiplier M.

    y[n, h, w, c·M + m] = bias[c·M + m]
        + Σ_{i, j} xpad[n, h·s0 + i·d0, w·s1 + j·d1, c] · kernel[i, j, c, m],
    then the fused activation. kernel is (kH, kW, C, M) (Keras' layout), bias (C·M); the output
    has C·M channels, those of input channel c contiguous. Padding per ``resolve_padding`` (the
    Conv2D rule: valid, same, explicit ((top, bottom), (left, right))).
    """

    positional = ("kernel_size",)

    attrs = {
        **_window_attrs(),
        "depth_multiplier": Attr("int", 1, check=positive),
        **weighted_layer_attrs(),
    }

    def infer(self, a, inputs, where):
        x = inputs[0]
        out = _window_infer(self, a, x, where)
        return TensorType((*out, x.shape[2] * a["depth_multiplier"]))

    def params(self, a, inputs):
        c = inputs[0].shape[2]
        p = {"kernel": ParamDef((*a["kernel_size"], c, a["depth_multiplier"]), a["kernel_init"])}
        if a["use_bias"]:
            p["bias"] = ParamDef((c * a["depth_multiplier"],), a["bias_init"])
        return p

    def reference(self, a, p, xs, ctx):
        y = depthwise_reference(xs[0], p["kernel"], a)
        return bias_and_activation(y, p, a)

    def flops(self, a, inputs, out):
        kh, kw = a["kernel_size"]
        return 2 * int(np.prod(out.shape)) * kh * kw


@register
class SeparableConv2D(OpDef):
    """Depthwise-separable 2-D convolution, channels last: a depthwise convolution (depth
    multiplier M, no bias) followed by a 1x1 pointwise convolution with bias, then the fused
    activation.

    d[n, h, w, c·M + m] = Σ_{i, j} xpad[n, h·s0 + i·d0, w·s1 + j·d1, c]
                          · depthwise_kernel[i, j, c, m]
    y[n, h, w, o] = bias[o] + Σ_k d[n, h, w, k] · pointwise_kernel[0, 0, k, o]

    depthwise_kernel (kH, kW, C, M), pointwise_kernel (1, 1, C·M, filters), bias (filters): the
    Keras layouts. The window attributes and padding rule are Conv2D's, applied to the depthwise
    step.
    """

    positional = ("filters", "kernel_size")

    attrs = {
        "filters": Attr("int", check=positive),
        **_window_attrs(),
        "depth_multiplier": Attr("int", 1, check=positive),
        "use_bias": Attr("bool", True),
        "activation": fused_attr(),
        "depthwise_init": Attr("init", Initializer("glorot_uniform")),
        "pointwise_init": Attr("init", Initializer("glorot_uniform")),
        "bias_init": Attr("init", Initializer("zeros")),
    }

    def infer(self, a, inputs, where):
        out = _window_infer(self, a, inputs[0], where)
        return TensorType((*out, a["filters"]))

    def params(self, a, inputs):
        c, m = inputs[0].shape[2], a["depth_multiplier"]
        p = {"depthwise_kernel": ParamDef((*a["kernel_size"], c, m), a["depthwise_init"]),
             "pointwise_kernel": ParamDef((1, 1, c * m, a["filters"]), a["pointwise_init"])}
        if a["use_bias"]:
            p["bias"] = ParamDef((a["filters"],), a["bias_init"])
        return p

    def reference(self, a, p, xs, ctx):
        d = depthwise_reference(xs[0], p["depthwise_kernel"], a)
        y = np.einsum("nhwk,ko->nhwo", d, p["pointwise_kernel"][0, 0])
        return bias_and_activation(y, p, a)

    def flops(self, a, inputs, out):
        kh, kw = a["kernel_size"]
        cm = inputs[0].shape[2] * a["depth_multiplier"]
        h, w = out.shape[:2]
        return 2 * h * w * cm * (kh * kw + a["filters"])


def transpose_plan(size: int, kernel: int, stride: int, dilation: int, padding: str):
    """(output size, crop before) of a transposed convolution along one axis.

    The full (scatter) output has L = (size - 1)·stride + k_eff cells, k_eff =
    dilation·(kernel - 1) + 1. valid: the output is the full one (out = L, crop 0). same:
    out = size·stride, cropped by lo = max(k_eff - stride, 0) // 2 before and the rest after;
    when k_eff < stride the full output is shorter than out and is extended with zeros after.
    This is the adjoint of a 'same' Conv2D (extra pad after) from out cells down to size, i.e.
    TensorFlow/Keras ``padding="same"``.
    """
    eff = dilation * (kernel - 1) + 1
    if padding == "valid":
        return (size - 1) * stride + eff, 0
    return size * stride, max(eff - stride, 0) // 2


@register
class Conv2DTranspose(OpDef):
    """Transposed 2-D convolution (the adjoint of a strided Conv2D), channels last.

    Scatter form: for every input cell (i, j) and tap (a, b),
        full[n, i·s0 + a·d0, j·s1 + b·d1, o] += x[n, i, j, c] · kernel[a, b, c, o],
    full has L = (in - 1)·s + d·(k - 1) + 1 cells per axis. y = full[lo : lo + out] per axis
    (cells past L are zero), out and lo from ``transpose_plan`` (valid: y = full; same: out =
    in·s, lo = max(k_eff - s, 0) // 2), then + bias[o] and the fused activation.

    kernel is (kH, kW, in, out), the Conv2D order read as (tap, input channel, output channel).
    Keras stores (kH, kW, out, in) (the kernel of the forward convolution it transposes), torch
    ConvTranspose2d (in, out, kH, kW); the backends convert.
    """

    positional = ("filters", "kernel_size")

    attrs = {
        "filters": Attr("int", check=positive),
        "kernel_size": Attr("ints", n=2, check=positive),
        "strides": Attr("ints", (1, 1), n=2, check=positive),
        "padding": Attr("str", "valid", choices=("valid", "same")),
        "dilation": Attr("ints", (1, 1), n=2, check=positive),
        **weighted_layer_attrs(),
    }

    @staticmethod
    def plan(a: dict, hw) -> tuple[tuple, tuple]:
        """((out H, out W), (crop before H, crop before W))."""
        plans = [transpose_plan(hw[ax], a["kernel_size"][ax], a["strides"][ax],
                                a["dilation"][ax], a["padding"]) for ax in range(2)]
        return tuple(p[0] for p in plans), tuple(p[1] for p in plans)

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) != 3:
            raise self.fail(where, "an input of rank 3 per example (H, W, C)", f"shape {x.shape}")
        out, _ = self.plan(a, x.shape[:2])
        if out[0] * out[1] * max(a["filters"], x.shape[2]) > 2 ** 31 - 1:
            raise self.fail(where, "an output within 2**31 - 1 elements per example",
                            f"output size {out} x {a['filters']}")
        return TensorType((*out, a["filters"]))

    def params(self, a, inputs):
        c = inputs[0].shape[2]
        p = {"kernel": ParamDef((*a["kernel_size"], c, a["filters"]), a["kernel_init"])}
        if a["use_bias"]:
            p["bias"] = ParamDef((a["filters"],), a["bias_init"])
        return p

    def reference(self, a, p, xs, ctx):
        x, k = xs[0], p["kernel"]
        n, h, w, _ = x.shape
        (s0, s1), (d0, d1) = a["strides"], a["dilation"]
        out, lo = self.plan(a, (h, w))
        full_h = max((h - 1) * s0 + d0 * (k.shape[0] - 1) + 1, lo[0] + out[0])
        full_w = max((w - 1) * s1 + d1 * (k.shape[1] - 1) + 1, lo[1] + out[1])
        full = np.zeros((n, full_h, full_w, k.shape[3]))
        for ta in range(k.shape[0]):
            for tb in range(k.shape[1]):
                full[:, ta * d0:ta * d0 + (h - 1) * s0 + 1:s0,
                     tb * d1:tb * d1 + (w - 1) * s1 + 1:s1] += np.einsum(
                         "nhwc,co->nhwo", x, k[ta, tb])
        y = full[:, lo[0]:lo[0] + out[0], lo[1]:lo[1] + out[1]]
        return bias_and_activation(y, p, a)

    def flops(self, a, inputs, out):
        h, w, c = inputs[0].shape
        kh, kw = a["kernel_size"]
        return 2 * h * w * c * kh * kw * a["filters"]
