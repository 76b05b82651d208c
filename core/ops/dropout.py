"""Dropout and noise: ops whose training forward draws random numbers. Each declares the shape of
the keep-mask it draws (``dropout_mask_shape``), so conformance mode can inject one."""

from __future__ import annotations

import numpy as np

from rosetta.ops.registry import Attr, OpDef, TensorType, register, unit_interval


@register
class Dropout(OpDef):
    """training: y = x * mask / (1 - rate), mask ~ Bernoulli(1 - rate) (rate = drop probability,
    inverted scaling); eval: y = x. Masks cannot match across framework RNGs: conformance injects
    them from a neutral RNG or runs with dropout off, and says which."""

    positional = ("rate",)

    attrs = {"rate": Attr("float", check=unit_interval)}
    batch_broadcast = "refuses"   # one mask per example: a shared example has no batch to draw

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
            shape = (x.shape[0], *self.dropout_mask_shape(a, None, TensorType(x.shape[1:])))
            mask = (rng.random(shape) >= a["rate"]).astype(np.float64)
        return x * mask / (1.0 - a["rate"])


@register
class StochasticDepth(Dropout):
    """Stochastic depth ("drop path", torchvision ``StochasticDepth(p, "row")``, timm
    ``DropPath``): training: y[n] = x[n] * mask[n] / (1 - rate), one keep-mask value per example,
    mask[n] ~ Bernoulli(1 - rate) (the whole residual branch of an example is dropped or kept and
    scaled); eval: y = x. ``mode`` is "row" (one draw per example); torchvision's "batch" mode
    (one draw for the whole batch) is not an op: a mask shared by the examples is not a
    per-example keep-mask. Masks are injected in conformance mode like Dropout's, of per-example
    shape (1, ..., 1)."""

    positional = ("rate",)

    attrs = {"rate": Attr("float", check=unit_interval),
             "mode": Attr("str", default="row", choices=("row",))}

    def dropout_mask_shape(self, a, inputs, out):
        return (1,) * len(out.shape) if a["rate"] > 0 else None
