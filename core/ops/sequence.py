"""Reductions over the time axis of (T, C) sequences, with optional lengths."""

from __future__ import annotations

import numpy as np

from rosetta.ops.registry import Attr, OpDef, TensorType, register


@register
class SequencePool(OpDef):
    """Pool a sequence (T, C) to (C,) over its real steps t < length (every step without a
    ``lengths`` input; lengths are in [1, T]).

    mean: y[c] = sum_{t < length} x[t, c] / length;  max: y[c] = max_{t < length} x[t, c].
    Padded steps never count, so a model's output does not depend on what the padding holds.
    """

    arity = (1, 2)
    lengths_input = 1
    attrs = {"mode": Attr("str", "mean", choices=("mean", "max"))}

    def infer(self, a, inputs, where):
        if len(inputs) > 2:
            raise self.fail(where, "a sequence and optional lengths (2 inputs at most)",
                            f"{len(inputs)} inputs")
        x = inputs[0]
        if len(x.shape) != 2:
            raise self.fail(where, "a sequence input of rank 2 per example (T, C)",
                            f"shape {x.shape}")
        return TensorType((x.shape[1],))

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        n, t = x.shape[:2]
        lengths = np.asarray(xs[1]) if len(xs) > 1 else np.full(n, t)
        real = np.arange(t)[None, :] < lengths[:, None]          # (N, T)
        if a["mode"] == "mean":
            return (x * real[..., None]).sum(axis=1) / lengths[:, None]
        return np.where(real[..., None], x, -np.inf).max(axis=1)

    def flops(self, a, inputs, out):
        return int(np.prod(inputs[0].shape))
