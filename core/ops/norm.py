"""Normalization: BatchNorm and LayerNorm over the last (channel) axis."""

from __future__ import annotations

import numpy as np

from rosetta.initializers import Initializer
from rosetta.ops.registry import Attr, OpDef, ParamDef, register, unit_interval


def scale_and_bias(channels: int) -> dict:
    """The per-channel affine parameters of a normalization: scale (ones) and bias (zeros)."""
    return {"scale": ParamDef((channels,), Initializer("ones")),
            "bias": ParamDef((channels,), Initializer("zeros"))}


def _eps_attr(default):
    return Attr("float", default, check=lambda v: None if v > 0 else "must be > 0")


@register
class BatchNorm(OpDef):
    """Batch normalization over the last (channel) axis, statistics over every other axis.

    training: mu, var = mean and *biased* variance of the batch (per channel);
              y = (x - mu) / sqrt(var + epsilon) * scale + bias;
              mean <- momentum * mean + (1 - momentum) * mu;
              var  <- momentum * var  + (1 - momentum) * var_batch, with the *biased* batch
              variance (the Keras and flax rule; torch stores the unbiased one and is lowered
              by hand to follow this rule).
    eval:     y = (x - mean) / sqrt(var + epsilon) * scale + bias.
    momentum is the weight of the old running value (torch's momentum is 1 - this).
    """

    attrs = {
        "momentum": Attr("float", 0.9, check=unit_interval),
        "epsilon": _eps_attr(1e-5),
    }

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) < 1:
            raise self.fail(where, "an input with a channel axis", f"shape {x.shape}")
        return x

    def params(self, a, inputs):
        return scale_and_bias(inputs[0].shape[-1])

    def state(self, a, inputs):
        c = inputs[0].shape[-1]
        return {"mean": ParamDef((c,), Initializer("zeros"), trainable=False),
                "var": ParamDef((c,), Initializer("ones"), trainable=False)}

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        axes = tuple(range(x.ndim - 1))
        if ctx.training:
            mu = x.mean(axis=axes)
            var = x.var(axis=axes)
            m = a["momentum"]
            ctx.state["mean"] = m * ctx.state["mean"] + (1 - m) * mu
            ctx.state["var"] = m * ctx.state["var"] + (1 - m) * var
        else:
            mu, var = ctx.state["mean"], ctx.state["var"]
        return (x - mu) / np.sqrt(var + a["epsilon"]) * p["scale"] + p["bias"]

    def flops(self, a, inputs, out):
        return 4 * int(np.prod(out.shape))


@register
class LayerNorm(OpDef):
    """y = (x - mean(x)) / sqrt(var(x) + epsilon) * scale + bias, over the last axis, biased
    variance. epsilon is explicit (torch 1e-5, Keras 1e-3, flax 1e-6 by default)."""

    attrs = {"epsilon": _eps_attr(1e-5)}

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) < 1 or x.shape[-1] < 2:
            raise self.fail(where, "a last (feature) axis of size >= 2 (over one feature, "
                            "x - mean(x) = 0 and LayerNorm outputs its bias alone)",
                            f"shape {x.shape}")
        return x

    def params(self, a, inputs):
        return scale_and_bias(inputs[0].shape[-1])

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        mu = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + a["epsilon"]) * p["scale"] + p["bias"]

    def flops(self, a, inputs, out):
        return 5 * int(np.prod(out.shape))


@register
class Dropout(OpDef):
    """training: y = x * mask / (1 - rate), mask ~ Bernoulli(1 - rate) (rate = drop probability,
    inverted scaling); eval: y = x. Masks cannot match across framework RNGs: conformance injects
    them from a neutral RNG or runs with dropout off, and says which."""

    attrs = {"rate": Attr("float", check=unit_interval)}

    def infer(self, a, inputs, where):
        return inputs[0]

    def dropout_mask_shape(self, a, inputs, out):
        return out.shape if a["rate"] > 0 else None

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        if not ctx.training or a["rate"] == 0.0:
            return x
        mask = ctx.dropout_mask
        if mask is None:
            rng = ctx.rng if ctx.rng is not None else np.random.default_rng(0)
            mask = (rng.random(x.shape) >= a["rate"]).astype(np.float64)
        return x * mask / (1.0 - a["rate"])
