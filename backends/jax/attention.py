"""Lowerings of MultiHeadAttention, DotProductAttention and PositionEmbedding (merged into
``layers.LOWERINGS``).

DotProductAttention runs ``jax.nn.dot_product_attention`` (XLA's implementation) where the
program computes in float32 and v is as wide as q and k (it takes one head width): that function computes its logits and softmax in float32 whatever
the inputs (``_dot_product_attention_core``), exact for float32 but not for float64 (its softmax
would round to float32) nor for the bfloat16 policy (softmax in bf16) or a mixed policy (its
score product would return float32, not the low type). Those are written out: s = q k^T * scale,
masks, ``jax.nn.softmax``, w v, at ``Precision.HIGHEST``. Masked scores: XLA's function puts
-0.7 * float32 max where this writes -inf (the same weights: exp underflows to 0 either way),
but a row that keeps no key would get uniform weights there: both paths give such a row every
key (and no float bias) and multiply its output by 0 afterwards, the spec's rule (weights 0, no
gradient, no nan from a softmax of -inf only).

MultiHeadAttention is a flax module of its own (``CanonicalMultiHeadAttention``) with einsum
projections at ``Precision.HIGHEST`` on the canonical kernels (in, h, d) and (h, d, out), the
layout of flax's DenseGeneral. Not ``flax.linen.MultiHeadDotProductAttention``: its kernels have
these shapes but live in sub-modules (``query/kernel``, ``out/bias``), not as the node's own
canonical variables, and its dropout cannot take an injected keep-mask. Masked scores are -inf,
as in the reference (flax uses the dtype's lowest finite value: the same weights here)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta.backends.jax.bias import add_bias
from rosetta.backends.jax.lowering import HIGHEST, lowers


class CanonicalMultiHeadAttention(nn.Module):
    """Canonical multi-head attention (see ``rosetta.ops.attention.MultiHeadAttention``):
    parameters query/key/value_kernel (in, h, d), output_kernel (h, d, out), and with
    ``use_bias`` query/key/value_bias (h, d) and output_bias (out). ``mask`` is an injected
    keep-mask (N, h, Tq, Tk) for the attention weights; otherwise the 'dropout' rng draws one."""

    heads: int
    head_dim: int
    out_dim: int
    causal: bool
    dropout: float
    use_bias: bool
    dtype: Any = jnp.float32
    # a mixed precision policy: the scores are cast to float32 for the softmax and its weights
    # back to the type of v (``rosetta.precision.INNER_SOFTMAX``)
    float32_softmax: bool = False

    @nn.compact
    def __call__(self, xq, xv, lengths=None, train: bool = False, mask=None):
        h, d = self.heads, self.head_dim
        zeros = nn.initializers.zeros  # canonical values are loaded; these only make shapes
        dt = self.dtype

        def proj(name, x):
            k = self.param(f"{name}_kernel", zeros, (x.shape[-1], h, d), dt)
            y = jnp.einsum("nte,ehd->nthd", x, k, precision=HIGHEST)
            if not self.use_bias:
                return y
            b = self.param(f"{name}_bias", zeros, (h, d), dt)
            if name == "key":
                # its gradient is exactly 0 (softmax ignores q.bk, the same for every key);
                # autodiff would return rounding noise, which Adam amplifies (see torch)
                b = jax.lax.stop_gradient(b) + 0.0 * b
            return add_bias(y, b)

        q, k, v = proj("query", xq), proj("key", xv), proj("value", xv)
        tq, tk = xq.shape[1], xv.shape[1]
        keep = jnp.ones((1, 1, tq, tk), bool)
        if lengths is not None:
            keep = keep & (jnp.arange(tk)[None, :] < lengths[:, None])[:, None, None, :]
        if self.causal:
            keep = keep & jnp.tril(jnp.ones((tq, tk), bool))[None, None]
        w = self._weights(q, k, keep)
        if train and self.dropout > 0.0:
            if mask is None:
                mask = jax.random.bernoulli(self.make_rng("dropout"),
                                            dt.type(1.0 - self.dropout), w.shape).astype(dt)
            w = w * mask.astype(w.dtype) / (1.0 - self.dropout)
        o = jnp.einsum("nhij,njhd->nihd", w, v, precision=HIGHEST)
        y = jnp.einsum("nihd,hdo->nio", o,
                       self.param("output_kernel", zeros, (h, d, self.out_dim), dt),
                       precision=HIGHEST)
        if not self.use_bias:
            return y
        return add_bias(y, self.param("output_bias", zeros, (self.out_dim,), dt))

    def _weights(self, q, k, keep):
        """softmax_j(q.k / sqrt(d)) with masked scores at -inf (every row keeps a key), in the
        scope ``softmax`` (the precision trace finds it there)."""
        s = jnp.einsum("nihd,njhd->nhij", q, k, precision=HIGHEST) / math.sqrt(self.head_dim)
        s = jnp.where(keep, s, -jnp.inf)
        with jax.named_scope("softmax"):
            if not self.float32_softmax:
                return jax.nn.softmax(s, axis=-1)
            return jax.nn.softmax(s.astype(jnp.float32), axis=-1).astype(s.dtype)


@lowers("MultiHeadAttention")
def multi_head_attention(node, xs, ctx):
    a = node.attrs
    mask = ctx.masks.get(node.name) if (ctx.train and ctx.masks) else None
    return CanonicalMultiHeadAttention(
        a["heads"], a["head_dim"], node.out_type.shape[-1], a["causal"], a["dropout"],
        a["use_bias"], dtype=ctx.dtype, float32_softmax=ctx.float32_softmax, name=node.name)(
            xs[0], xs[1], xs[2] if len(xs) > 2 else None, train=ctx.train, mask=mask)


def _dpa_masks(node, mask, q):
    """(keep, bias, dead): the boolean keep-mask (causal and an int mask, or None), the float
    mask (or None), and the rows that keep no key (..., Tq, 1), or None when none can."""
    a = node.attrs
    rank, tq, tk = len(node.in_types[0].shape), q.shape[-2], node.in_types[1].shape[-2]
    keep = jnp.tril(jnp.ones((tq, tk), bool)) if a["causal"] else None
    bias = None
    if mask is not None:
        missing = rank + 1 - mask.ndim
        mask = mask.reshape(mask.shape[0], *(1,) * missing, *mask.shape[1:])
        if node.in_types[3].kind == "int":
            keep = (mask != 0) if keep is None else keep & (mask != 0)
        else:
            bias = mask
    if keep is None and bias is None:
        return None, None, None
    alive = jnp.ones((1, 1), bool) if keep is None else keep
    if bias is not None:
        alive = alive & (bias != -jnp.inf)
    return keep, bias, ~jnp.any(alive, axis=-1, keepdims=True)


def dot_product_attention_written(q, k, v, keep, bias, dead, scale, float32_softmax=False):
    """softmax(q k^T * scale (+ bias), -inf where not keep) v, dead rows 0 (see the module doc);
    with ``float32_softmax`` the scores are cast to float32 and the weights back to v's type."""
    s = jnp.matmul(q, jnp.swapaxes(k, -1, -2), precision=HIGHEST) * jnp.asarray(scale, q.dtype)
    if float32_softmax:
        s = s.astype(jnp.float32)
    if bias is not None:
        s = s + jnp.where(dead, 0.0, bias).astype(s.dtype)
    if keep is not None:
        s = jnp.where(keep | dead, s, -jnp.inf)
    with jax.named_scope("softmax"):
        w = jax.nn.softmax(s, axis=-1)
    if dead is not None:
        w = jnp.where(dead, jnp.zeros((), w.dtype), w)
    return jnp.matmul(w.astype(v.dtype), v, precision=HIGHEST)


def _dot_product_attention_xla(q, k, v, keep, bias, dead, scale, out_shape):
    """``jax.nn.dot_product_attention`` on (B, T, N, H) views of (B, *lead, T, D)."""
    n, lead = q.shape[0], q.shape[1:-2]
    heads = math.prod(lead)

    def bthd(x):
        return jnp.swapaxes(x.reshape(n, heads, *x.shape[-2:]), 1, 2)

    def bhts(m):
        m = jnp.broadcast_to(m, (n, *lead, q.shape[-2], k.shape[-2]))
        return m.reshape(n, heads, *m.shape[-2:])

    if dead is not None:
        keep = None if keep is None else bhts(keep | dead)
        bias = None if bias is None else bhts(jnp.where(dead, 0.0, bias).astype(q.dtype))
    o = jax.nn.dot_product_attention(bthd(q), bthd(k), bthd(v), bias=bias, mask=keep,
                                     scale=scale, implementation="xla")
    o = jnp.swapaxes(o, 1, 2).reshape(n, *out_shape)
    return o if dead is None else jnp.where(dead, jnp.zeros((), o.dtype), o)


@lowers("DotProductAttention")
def dot_product_attention(node, xs, ctx):
    from rosetta.ops.attention import DotProductAttention as Op

    q, k, v = xs[:3]
    scale = Op.scale(node.attrs, node.in_types[0].shape[-1])
    keep, bias, dead = _dpa_masks(node, xs[3] if len(xs) > 3 else None, q)
    if (jnp.dtype(ctx.dtype) == jnp.float32 and not ctx.float32_softmax
            and v.shape[-1] == q.shape[-1]):
        return _dot_product_attention_xla(q, k, v, keep, bias, dead, scale, node.out_type.shape)
    return dot_product_attention_written(q, k, v, keep, bias, dead, scale, ctx.float32_softmax)


class PositionEmbedding(nn.Module):
    """y = x + embedding[:T] (the canonical (max_length, E) table)."""

    max_length: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        table = self.param("embedding", nn.initializers.zeros, (self.max_length, x.shape[-1]),
                           self.dtype)
        return x + table[: x.shape[1]]


@lowers("PositionEmbedding")
def position_embedding(node, xs, ctx):
    return PositionEmbedding(node.attrs["max_length"], dtype=ctx.dtype, name=node.name)(xs[0])
