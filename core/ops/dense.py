"""Dense and Embedding."""

from __future__ import annotations

import numpy as np

from rosetta.initializers import Initializer
from rosetta.ops.elementwise import bias_and_activation, weighted_layer_attrs
from rosetta.ops.registry import Attr, OpDef, ParamDef, TensorType, positive, register


@register
class Dense(OpDef):
    """y = f(x @ kernel + bias) over the last axis; kernel is (in, units) (torch stores (out, in)).

    Inputs of rank > 1 per example are transformed position-wise, as in Keras and flax.
    """

    positional = ("units",)

    attrs = {
        "units": Attr("int", check=positive),
        **weighted_layer_attrs(),
    }

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) < 1:
            raise self.fail(where, "an input with a feature axis", f"shape {x.shape}")
        return TensorType((*x.shape[:-1], a["units"]))

    def params(self, a, inputs):
        p = {"kernel": ParamDef((inputs[0].shape[-1], a["units"]), a["kernel_init"])}
        if a["use_bias"]:
            p["bias"] = ParamDef((a["units"],), a["bias_init"])
        return p

    def reference(self, a, p, xs, ctx):
        y = xs[0] @ p["kernel"]
        return bias_and_activation(y, p, a)

    def flops(self, a, inputs, out):
        return 2 * int(np.prod(inputs[0].shape)) * a["units"]


@register
class Embedding(OpDef):
    """y[..., :] = embedding[x[...], :] for integer x in [0, vocab_size); embedding is
    (vocab_size, dim). Indices outside the range are an error on every backend's CPU path."""

    positional = ("vocab_size", "dim")

    input_kind = "int"
    attrs = {
        "vocab_size": Attr("int", check=positive),
        "dim": Attr("int", check=positive),
        "embedding_init": Attr("init", Initializer("normal", stddev=0.05)),
    }

    def infer(self, a, inputs, where):
        return TensorType((*inputs[0].shape, a["dim"]))

    def params(self, a, inputs):
        return {"embedding": ParamDef((a["vocab_size"], a["dim"]), a["embedding_init"])}

    def reference(self, a, p, xs, ctx):
        idx = np.asarray(xs[0])
        if idx.size and (idx.min() < 0 or idx.max() >= a["vocab_size"]):
            raise IndexError(f"Embedding index outside [0, {a['vocab_size']})")
        return p["embedding"][idx]

    def flops(self, a, inputs, out):
        return 0
