"""Lowerings of MultiHeadAttention and PositionEmbedding (merged into ``layers.LOWERINGS``).

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
