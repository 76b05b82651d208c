"""Attention: MultiHeadAttention, DotProductAttention (over computed q, k, v) and learned
position embeddings."""

from __future__ import annotations

import numpy as np

from rosetta.initializers import Initializer
from rosetta.ops.math import broadcast_types
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


def _finite(v):
    return None if v is None or np.isfinite(v) else "must be finite (or None: 1/sqrt(D))"


def attention_masks(a, q_shape, k_shape, mask, mask_is_keep):
    """(keep, bias, dead) of DotProductAttention in NumPy (the reference): ``keep`` a boolean
    array broadcastable to the scores (None: every key), ``bias`` the float mask (None), and
    ``dead`` the rows (..., Tq, 1) that keep no key (every score -inf)."""
    tq, tk = q_shape[-2], k_shape[-2]
    keep = None
    if a["causal"]:
        keep = np.tril(np.ones((tq, tk), bool))
    bias = None
    if mask is not None:
        if mask_is_keep:
            keep = (mask != 0) if keep is None else (keep & (mask != 0))
        else:
            bias = mask
    alive = np.ones((1, 1), bool) if keep is None else keep
    if bias is not None:
        alive = alive & (bias != -np.inf)
    dead = ~np.any(alive, axis=-1, keepdims=True)
    return keep, bias, dead


@register
class DotProductAttention(OpDef):
    """Scaled dot-product attention over computed queries, keys and values (torch's
    ``F.scaled_dot_product_attention``; no parameters).

    Inputs: q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv) with the same leading axes (rank >= 2
    per example, batched), and an optional mask M that broadcasts to the scores (..., Tq, Tk)
    (NumPy rule over the full shape: a Constant mask may be batch-broadcast and of lower rank).
    An int mask is a keep-mask (torch's boolean ``attn_mask``: key j is attended where M != 0);
    a float mask is added to the scores (torch's float ``attn_mask``; -inf masks a key).

        s[..., i, j] = scale * sum_d q[..., i, d] k[..., j, d]        scale = 1/sqrt(D) if unset
        float mask:  s = s + M;   int mask:  s = -inf where M == 0
        causal:      s = -inf where j > i   (top-left aligned, torch's ``is_causal``; Tq != Tk
                                             allowed)
        w[..., i, :] = softmax_j(s[..., i, :]), or 0 for a row whose every score is -inf
        y[..., i, :] = sum_j w[..., i, j] v[..., j, :]                  -> (..., Tq, Dv)

    Fully masked rows: a row that keeps no key (every key masked by the int mask, the causal
    rule or a float mask of -inf) has weights 0, so y = 0 there and no gradient flows through
    it. That is what torch's SDPA computes (``_safe_softmax``, torch >= 2.5; earlier releases and
    a written-out ``softmax(masked_fill(-inf))`` give nan): the spec takes the finite rule. A
    float mask with finite large negatives (HuggingFace's ``finfo.min``) masks nothing away in
    this sense: its row is an ordinary softmax.

    Gradients: dL/dv = w^T dL/dy; dL/dw = dL/dy v^T; dL/ds = w * (dL/dw - sum_j w dL/dw);
    dL/dq = scale dL/ds k, dL/dk = scale dL/ds^T q; dL/dM = dL/ds for a float mask (none for
    an int mask)."""

    arity = (3, 4)
    input_kind = "any"
    batch_broadcast = "broadcasts"
    attrs = {
        "scale": Attr("optional_float", None, check=_finite,
                      doc="the score factor; None: 1/sqrt(D), D the width of q and k"),
        "causal": Attr("bool", False, doc="mask keys j > i (top-left aligned)"),
    }

    def infer(self, a, inputs, where):
        q, k, v = inputs[:3]
        for what, t in (("q", q), ("k", k), ("v", v)):
            if t.kind != "float" or len(t.shape) < 2:
                raise self.fail(where, f"a float {what} of rank >= 2 per example (..., T, D)",
                                f"a {t.kind} {what} of shape {t.shape}")
            if t.batch_broadcast:
                raise self.fail(where, f"a batched {what} (Expand a shared value first)",
                                f"a batch-broadcast {what}")
        if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
            raise self.fail(where, "q, k and v with the same leading axes",
                            f"shapes {q.shape}, {k.shape}, {v.shape}")
        if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
            raise self.fail(where, "q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv)",
                            f"shapes {q.shape}, {k.shape}, {v.shape}")
        scores = q.shape[:-1] + (k.shape[-2],)
        if len(inputs) > 3:
            m = inputs[3]
            if broadcast_types([m, TensorType(scores)]) != scores:
                raise self.fail(where, f"a mask that broadcasts to the scores {scores} (NumPy "
                                "rule; a lower rank only for a batch-broadcast mask)",
                                f"shape {m.shape}" + (" (batch-broadcast)"
                                                      if m.batch_broadcast else ""))
        return TensorType(q.shape[:-1] + (v.shape[-1],))

    @staticmethod
    def scale(a, d: int) -> float:
        return 1.0 / float(np.sqrt(d)) if a["scale"] is None else a["scale"]

    def reference(self, a, p, xs, ctx):
        q, k, v = xs[:3]
        mask = None
        if len(xs) > 3:
            mask = np.asarray(xs[3])
            mask = mask.reshape(mask.shape[0], *(1,) * (q.ndim - mask.ndim), *mask.shape[1:])
        keep, bias, dead = attention_masks(a, q.shape, k.shape, mask,
                                           mask is not None and mask.dtype.kind in "biu")
        s = np.matmul(q, np.swapaxes(k, -1, -2)) * self.scale(a, q.shape[-1])
        if bias is not None:
            s = s + bias
        if keep is not None:
            s = np.where(keep, s, -np.inf)
        s = np.where(dead, 0.0, s)               # a dead row: any finite scores, weights 0
        w = np.where(dead, 0.0, _softmax(s))
        return np.matmul(w, v)

    def flops(self, a, inputs, out):
        q, k, v = inputs[:3]
        lead = int(np.prod(q.shape[:-2]))
        tq, tk = q.shape[-2], k.shape[-2]
        return lead * (2 * tq * tk * (q.shape[-1] + v.shape[-1]) + 3 * tq * tk)


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
