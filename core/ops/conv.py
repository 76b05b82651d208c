"""Convolution and the padding rule shared by convolution and pooling."""

from __future__ import annotations

import math

import numpy as np

from rosetta.ops.activation import bias_and_activation, weighted_layer_attrs
from rosetta.ops.registry import (Attr, OpDef, ParamDef, TensorType, positive, register)


def resolve_padding(size: int, kernel: int, stride: int, dilation: int, padding, axis: int):
    """(output size, (lo, hi)) for one spatial axis. The one place the padding rule lives.

    valid: no padding, out = floor((size - eff) / stride) + 1, eff = dilation * (kernel - 1) + 1.
    same: out = ceil(size / stride); total = max((out - 1) * stride + eff - size, 0);
          lo = total // 2, hi = total - lo (the extra cell goes after, as in TF and XLA).
    explicit: padding[axis] = (lo, hi); out = floor((size + lo + hi - eff) / stride) + 1.
    """
    eff = dilation * (kernel - 1) + 1
    if padding == "valid":
        lo = hi = 0
    elif padding == "same":
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + eff - size, 0)
        lo, hi = total // 2, total - total // 2
    else:
        lo, hi = padding[axis]
    out = (size + lo + hi - eff) // stride + 1
    return out, (lo, hi)


def windows(xp: np.ndarray, kernel, strides, dilation, out):
    """Yield ((i, j), slice of xp) for each kernel tap: xp[:, i*d0 :: s0, j*d1 :: s1, :] (out long)."""
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            h0, w0 = i * dilation[0], j * dilation[1]
            yield (i, j), xp[:, h0:h0 + strides[0] * (out[0] - 1) + 1:strides[0],
                             w0:w0 + strides[1] * (out[1] - 1) + 1:strides[1], :]


def spatial_plan(a: dict, hw: tuple[int, int], dilation=(1, 1)):
    """Output (H, W) and explicit ((lo, hi), (lo, hi)) pads for a 2-D window op."""
    outs, pads = [], []
    for ax in range(2):
        o, p = resolve_padding(hw[ax], a["kernel_size"][ax], a["strides"][ax], dilation[ax],
                               a["padding"], ax)
        outs.append(o)
        pads.append(p)
    return tuple(outs), tuple(pads)


@register
class Conv2D(OpDef):
    """2-D convolution (cross-correlation), channels last.

    y[n, h, w, o] = bias[o] + sum_{i, j, c} xpad[n, h*s0 + i*d0, w*s1 + j*d1, g*Cg + c]
                    * kernel[i, j, c, o],  g = o // (filters / groups), Cg = C / groups,
    then the fused activation. kernel is (kH, kW, C/groups, filters). Padding per
    ``resolve_padding``; explicit padding is ((top, bottom), (left, right)).
    """

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
