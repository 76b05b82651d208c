"""Attention: MultiHeadAttention and learned position embeddings."""

from __future__ import annotations

import numpy as np

from rosetta.initializers import Initializer
from rosetta.ops.registry import (Attr, OpDef, ParamDef, TensorType, positive, register,
                                  unit_interval)


def _optional_positive(v):
    return None if v is None or v > 0 else "must be positive (or None: the query's width)"


def _softmax(s, axis=-1):
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@register
class MultiHeadAttention(OpDef):
    """Multi-head scaled dot-product attention of a query sequence over a value sequence.

    Inputs: query x_q (Tq, E), value x_v (Tk, Ev) (keys are computed from the values; self-attention
    passes the same tensor twice), optional int key lengths L (shape () per example, in [1, Tk]).
    Parameters (canonical layout): query_kernel (E, h, d), key_kernel and value_kernel (Ev, h, d),
    output_kernel (h, d, out); with ``use_bias`` query_bias, key_bias, value_bias (h, d) and
    output_bias (out,). out = ``output_dim`` (default E).

        q[i,h,:] = x_q[i] . Wq[:,h,:] + bq[h],  k[j,h,:] = x_v[j] . Wk[:,h,:] + bk[h],
        v[j,h,:] = x_v[j] . Wv[:,h,:] + bv[h]
        s[h,i,j] = q[i,h,:] . k[j,h,:] / sqrt(d)
        s[h,i,j] = -inf where j >= L (key padding) or, if ``causal``, j > i
        w[h,i,:] = softmax_j(s[h,i,:]);  training with dropout > 0: w = w * mask / (1 - dropout),
                   mask ~ Bernoulli(1 - dropout) of shape (h, Tq, Tk) per example
        o[i,h,:] = sum_j w[h,i,j] v[j,h,:]
        y[i,:]   = sum_{h,d} o[i,h,d] Wout[h,d,:] + bout        -> (Tq, out)

    ``causal`` needs Tq == Tk. Every row keeps at least one key (L >= 1; causal keeps j = 0).
    The key bias adds q[i,h].bk[h] to every score of row (h, i), which softmax ignores: its
    gradient is exactly 0 (the backends return that 0, not autodiff's rounding noise).
    """

    positional = ("heads", "head_dim")

    arity = (2, None)
    lengths_input = 2
    lengths_measure = 1   # key lengths: T is the keys' axis
    attrs = {
        "heads": Attr("int", check=positive),
        "head_dim": Attr("int", check=positive),
        "output_dim": Attr("int", None, check=_optional_positive),
        "causal": Attr("bool", False),
        "dropout": Attr("float", 0.0, check=unit_interval),
        "use_bias": Attr("bool", True),
        "kernel_init": Attr("init", Initializer("glorot_uniform")),
        "bias_init": Attr("init", Initializer("zeros")),
    }

    def infer(self, a, inputs, where):
        if len(inputs) > 3:
            raise self.fail(where, "2 or 3 inputs (query, value, optional key lengths)",
                            f"{len(inputs)} inputs")
        q, v = inputs[0], inputs[1]
        for what, t in (("query", q), ("value", v)):
            if len(t.shape) != 2:
                raise self.fail(where, f"a {what} of rank 2 per example (T, features)",
                                f"shape {t.shape}")
        if a["causal"] and q.shape[0] != v.shape[0]:
            raise self.fail(where, "a query and a value of the same length with causal=True "
                            "(the causal mask j <= i is square)",
                            f"Tq = {q.shape[0]}, Tk = {v.shape[0]}")
        return TensorType((q.shape[0], self.out_dim(a, inputs)))

    @staticmethod
    def out_dim(a, inputs):
        return a["output_dim"] if a["output_dim"] is not None else inputs[0].shape[-1]

    def params(self, a, inputs):
        e, ev = inputs[0].shape[-1], inputs[1].shape[-1]
        h, d, out = a["heads"], a["head_dim"], self.out_dim(a, inputs)
        k = a["kernel_init"]
        p = {"query_kernel": ParamDef((e, h, d), k), "key_kernel": ParamDef((ev, h, d), k),
             "value_kernel": ParamDef((ev, h, d), k), "output_kernel": ParamDef((h, d, out), k)}
        if a["use_bias"]:
            b = a["bias_init"]
            p.update({"query_bias": ParamDef((h, d), b), "key_bias": ParamDef((h, d), b),
                      "value_bias": ParamDef((h, d), b), "output_bias": ParamDef((out,), b)})
        return p

    def dropout_mask_shape(self, a, inputs, out):
        if a["dropout"] == 0.0:
            return None
        return (a["heads"], inputs[0].shape[0], inputs[1].shape[0])

    def reference(self, a, p, xs, ctx):
        xq, xv = xs[0], xs[1]
        bias = a["use_bias"]
        q = np.einsum("nie,ehd->nihd", xq, p["query_kernel"])
        k = np.einsum("nje,ehd->njhd", xv, p["key_kernel"])
        v = np.einsum("nje,ehd->njhd", xv, p["value_kernel"])
        if bias:
            q, k, v = q + p["query_bias"], k + p["key_bias"], v + p["value_bias"]
        s = np.einsum("nihd,njhd->nhij", q, k) / np.sqrt(a["head_dim"])
        tq, tk = xq.shape[1], xv.shape[1]
        masked = np.zeros((xq.shape[0], 1, tq, tk), bool)
        if len(xs) > 2:
            masked |= (np.arange(tk)[None, :] >= np.asarray(xs[2])[:, None])[:, None, None, :]
        if a["causal"]:
            masked |= np.triu(np.ones((tq, tk), bool), 1)[None, None]
        w = _softmax(np.where(masked, -np.inf, s))
        if ctx.training and a["dropout"] > 0.0:
            mask = ctx.dropout_mask
            if mask is None:
                rng = ctx.rng if ctx.rng is not None else np.random.default_rng(0)
                mask = (rng.random(w.shape) >= a["dropout"]).astype(np.float64)
            w = w * mask / (1.0 - a["dropout"])
        o = np.einsum("nhij,njhd->nihd", w, v)
        y = np.einsum("nihd,hdo->nio", o, p["output_kernel"])
        return y + p["output_bias"] if bias else y

    def flops(self, a, inputs, out):
        (tq, e), (tk, ev) = inputs[0].shape, inputs[1].shape
        hd = a["heads"] * a["head_dim"]
        proj = 2 * hd * (tq * e + 2 * tk * ev) + 2 * tq * hd * out.shape[-1]
        return proj + 4 * tq * tk * hd + 3 * a["heads"] * tq * tk


@register
class PositionEmbedding(OpDef):
    """Learned absolute positions: y[t, :] = x[t, :] + embedding[t, :] for t < T; embedding is
    (max_length, E) and only its first T rows are used (max_length >= T)."""

    positional = ("max_length",)

    attrs = {
        "max_length": Attr("int", check=positive),
        "embedding_init": Attr("init", Initializer("normal", stddev=0.02)),
    }

    def infer(self, a, inputs, where):
        x = inputs[0]
        if len(x.shape) != 2:
            raise self.fail(where, "an input of rank 2 per example (T, E)", f"shape {x.shape}")
        if x.shape[0] > a["max_length"]:
            raise self.fail(where, f"a sequence of at most max_length = {a['max_length']} steps",
                            f"T = {x.shape[0]}")
        return x

    def params(self, a, inputs):
        return {"embedding": ParamDef((a["max_length"], inputs[0].shape[-1]),
                                      a["embedding_init"])}

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        return x + p["embedding"][: x.shape[1]]
