"""Normalization over the channel (last) axis: BatchNorm, LayerNorm, RMSNorm, GroupNorm. epsilon
is explicit (torch, Keras and flax defaults differ)."""

from __future__ import annotations

import numpy as np

from rosetta.errors import DataError
from rosetta.initializers import Initializer
from rosetta.ops.registry import Attr, OpDef, ParamDef, positive, register, unit_interval


def scale_and_bias(channels: int) -> dict:
    """The per-channel affine parameters of a normalization: scale (ones) and bias (zeros)."""
    return {"scale": ParamDef((channels,), Initializer("ones")),
            "bias": ParamDef((channels,), Initializer("zeros"))}


def _eps_attr(default):
    return Attr("float", default, check=lambda v: None if v > 0 else "must be > 0")


def unbiased_factor(n: int, where: str = "BatchNorm") -> float:
    """n / (n - 1), Bessel's correction of a biased variance over n values. n == 1 is refused
    (torch's BatchNorm raises "Expected more than 1 value per channel when training"; the factor
    would be infinite)."""
    if n < 2:
        raise DataError(f"{where}: running_var='unbiased' needs more than 1 value per channel "
                         f"in a training batch, found {n} (use a larger batch)")
    return n / (n - 1)


def unbiased_cells(graph) -> dict:
    """{node name: values per channel in one example} of the BatchNorm nodes with
    running_var="unbiased" (for ``check_unbiased_batch``)."""
    return {n.name: int(np.prod(n.in_types[0].shape[:-1])) for n in graph.nodes
            if n.op == "BatchNorm" and n.attrs["running_var"] == "unbiased"}


def check_unbiased_batch(cells: dict, batch: int) -> None:
    """DataError before a training step of ``batch`` examples that would give one of
    ``cells``' BatchNorms a single value per channel (for backends whose compiled step does not
    know the batch size when it is built)."""
    for name, c in cells.items():
        unbiased_factor(batch * c, where=name)


@register
class BatchNorm(OpDef):
    """Batch normalization over the last (channel) axis, statistics over every other axis.

    training: mu, var = mean and *biased* variance of the batch (per channel), over its
              n = (batch size) x (every axis but the last and the batch) values per channel;
              y = (x - mu) / sqrt(var + epsilon) * scale + bias;
              mean <- momentum * mean + (1 - momentum) * mu;
              var  <- momentum * var  + (1 - momentum) * var_batch, where var_batch is
                      var                   if running_var == "biased"   (Keras, flax; default)
                      var * n / (n - 1)     if running_var == "unbiased" (torch's BatchNorm*d).
              In data-parallel training mu, var and n are those of the *global* batch.
              "unbiased" with n == 1 is refused, as torch refuses it.
    eval:     y = (x - mean) / sqrt(var + epsilon) * scale + bias.
    momentum is the weight of the old running value (torch's momentum is 1 - this).
    The normalisation itself always uses the biased batch variance (as every framework does).
    """

    attrs = {
        "momentum": Attr("float", 0.9, check=unit_interval),
        "epsilon": _eps_attr(1e-5),
        "running_var": Attr("str", "biased", choices=("biased", "unbiased")),
    }
    running_stats = True

    def attrs_to_json(self, a: dict) -> dict:
        """The default running_var ("biased") is left out, so the JSON (and the spec hash a
        checkpoint records) of every BatchNorm written before the attribute is unchanged."""
        out = super().attrs_to_json(a)
        if out.get("running_var") == "biased":
            del out["running_var"]
        return out

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
            stored = var
            if a["running_var"] == "unbiased":
                stored = var * unbiased_factor(x.size // x.shape[-1])
            ctx.state["mean"] = m * ctx.state["mean"] + (1 - m) * mu
            ctx.state["var"] = m * ctx.state["var"] + (1 - m) * stored
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

    positional = ("groups",)

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


@register
class InstanceNorm2D(OpDef):
    """Instance normalization of (H, W, C) images, channels last, with running statistics
    (torch's ``InstanceNorm2d(affine=True, track_running_stats=True)``).

    training: mu[n, c], var[n, c] = mean and *biased* variance over H, W of example n;
              y = (x - mu[n, c]) / sqrt(var[n, c] + epsilon) * scale[c] + bias[c];
              mean <- momentum * mean + (1 - momentum) * mean_n(mu[n, c]);
              var  <- momentum * var  + (1 - momentum) * mean_n(var[n, c] * HW / (HW - 1)),
              the *unbiased* per-example variance averaged over the batch (torch's rule).
    eval:     y = (x - mean) / sqrt(var + epsilon) * scale + bias.
    momentum is the weight of the old running value (torch's momentum is 1 - this).
    """

    attrs = {
        "momentum": Attr("float", 0.9, check=unit_interval),
        "epsilon": _eps_attr(1e-5),
    }
    running_stats = True

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) != 3:
            raise self.fail(where, "an input of rank 3 per example (H, W, C)", f"shape {x.shape}")
        if x.shape[0] * x.shape[1] < 2:
            raise self.fail(where, "at least 2 cells per channel (the running variance is "
                            "unbiased)", f"shape {x.shape}")
        return x

    def params(self, a, inputs):
        return scale_and_bias(inputs[0].shape[-1])

    def state(self, a, inputs):
        c = inputs[0].shape[-1]
        return {"mean": ParamDef((c,), Initializer("zeros"), trainable=False),
                "var": ParamDef((c,), Initializer("ones"), trainable=False)}

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        if ctx.training:
            mu = x.mean(axis=(1, 2), keepdims=True)
            var = x.var(axis=(1, 2), keepdims=True)
            cells = x.shape[1] * x.shape[2]
            m = a["momentum"]
            ctx.state["mean"] = m * ctx.state["mean"] + (1 - m) * mu.mean(axis=(0, 1, 2))
            ctx.state["var"] = (m * ctx.state["var"]
                                + (1 - m) * (var * cells / (cells - 1)).mean(axis=(0, 1, 2)))
        else:
            mu, var = ctx.state["mean"], ctx.state["var"]
        return (x - mu) / np.sqrt(var + a["epsilon"]) * p["scale"] + p["bias"]

    def flops(self, a, inputs, out):
        return 4 * int(np.prod(out.shape))
