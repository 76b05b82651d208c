"""More normalization over the channel (last) axis: RMSNorm and GroupNorm. epsilon is explicit
(torch, Keras and flax defaults differ)."""

from __future__ import annotations

import numpy as np

from rosetta.initializers import Initializer
from rosetta.ops.norm import scale_and_bias
from rosetta.ops.registry import Attr, OpDef, ParamDef, positive, register


def _eps_attr(default):
    return Attr("float", default, check=lambda v: None if v > 0 else "must be > 0")


@register
class RMSNorm(OpDef):
    """y = x / sqrt(mean(x^2) + epsilon) * scale over the last axis (no centring, no bias).
    epsilon is explicit (torch defaults to the dtype's machine epsilon, Keras and flax to 1e-6)."""

    attrs = {"epsilon": _eps_attr(1e-6)}

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) < 1:
            raise self.fail(where, "an input with a last (feature) axis", f"shape {x.shape}")
        return x

    def params(self, a, inputs):
        return {"scale": ParamDef((inputs[0].shape[-1],), Initializer("ones"))}

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(ms + a["epsilon"]) * p["scale"]

    def flops(self, a, inputs, out):
        return 4 * int(np.prod(out.shape))


@register
class GroupNorm(OpDef):
    """Channels last, C split into ``groups`` contiguous groups of C/groups channels. For each
    example n and group g, over every spatial axis and the group's channels:
    mu = mean(x), var = mean((x - mu)^2) (biased); y = (x - mu) / sqrt(var + epsilon) * scale[c]
    + bias[c]. epsilon explicit (torch 1e-5, Keras 1e-3, flax 1e-6)."""

    attrs = {"groups": Attr("int", check=positive), "epsilon": _eps_attr(1e-5)}

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) < 1:
            raise self.fail(where, "an input with a channel (last) axis", f"shape {x.shape}")
        c, g = x.shape[-1], a["groups"]
        if c % g:
            raise self.fail(where, f"channels ({c}) divisible by groups ({g})", "a remainder")
        if int(np.prod(x.shape[:-1])) * (c // g) < 2:
            raise self.fail(where, "at least 2 values per (example, group) (over one value, "
                            "x - mean(x) = 0 and GroupNorm outputs its bias alone)",
                            f"shape {x.shape} with {g} groups")
        return x

    def params(self, a, inputs):
        return scale_and_bias(inputs[0].shape[-1])

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        g = a["groups"]
        xg = x.reshape(*x.shape[:-1], g, x.shape[-1] // g)
        axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
        mu = xg.mean(axis=axes, keepdims=True)
        var = ((xg - mu) ** 2).mean(axis=axes, keepdims=True)
        y = ((xg - mu) / np.sqrt(var + a["epsilon"])).reshape(x.shape)
        return y * p["scale"] + p["bias"]

    def flops(self, a, inputs, out):
        return 5 * int(np.prod(out.shape))
