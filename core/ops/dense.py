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


def _padding_idx_in_range(v):
    return None if v is None or v >= 0 else "must be >= 0 (an index into the table) or null"


@register
class Embedding(OpDef):
    """y[..., :] = embedding[x[...], :] for integer x in [0, vocab_size); embedding is
    (vocab_size, dim). Indices outside the range are an error on every backend's CPU path.

    ``padding_idx`` (torch's ``nn.Embedding(padding_idx=p)``): the forward is unchanged (row p
    is read like any other), but dL/d embedding[p, :] = 0 exactly: the gradient is
    sum over positions with x != p of dL/dy, and the rows of p are dropped. An optimizer
    without weight decay never moves row p (Adam's moments stay 0); decoupled weight decay
    (AdamW) still shrinks it and L2 decay (Adam's weight_decay) gives it the gradient
    wd * row, as in torch."""

    positional = ("vocab_size", "dim")

    input_kind = "int"
    attrs = {
        "vocab_size": Attr("int", check=positive),
        "dim": Attr("int", check=positive),
        "embedding_init": Attr("init", Initializer("normal", stddev=0.05)),
        "padding_idx": Attr("int", None, check=_padding_idx_in_range,
                            doc="a row whose gradient is zero (torch's padding_idx), or null"),
    }

    def infer(self, a, inputs, where):
        if a["padding_idx"] is not None and a["padding_idx"] >= a["vocab_size"]:
            raise self.fail(where, f"padding_idx in [0, vocab_size={a['vocab_size']})",
                            a["padding_idx"])
        return TensorType((*inputs[0].shape, a["dim"]))

    def params(self, a, inputs):
        rows = () if a["padding_idx"] is None else (a["padding_idx"],)
        return {"embedding": ParamDef((a["vocab_size"], a["dim"]), a["embedding_init"],
                                      zero_grad_rows=rows)}

    def reference(self, a, p, xs, ctx):
        idx = np.asarray(xs[0])
        if idx.size and (idx.min() < 0 or idx.max() >= a["vocab_size"]):
            raise IndexError(f"Embedding index outside [0, {a['vocab_size']})")
        return p["embedding"][idx]

    def flops(self, a, inputs, out):
        return 0
