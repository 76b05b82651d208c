"""Lowerings of MultiHeadAttention, DotProductAttention and PositionEmbedding (merged into
``layers.LOWERINGS``).

DotProductAttention is written out: s = q k^T * scale, the masks, ``jax.nn.softmax``, w v, at
``Precision.HIGHEST``, on the canonical (N, ..., T, D) arrays. Not ``jax.nn.dot_product_attention``:
its ``xla`` implementation (the one for float32 and float64 on any device; cuDNN's takes fp16 /
bf16 only) is this same chain behind a transpose to (B, T, heads, D) and back, measured 1.7-1.8x
the written-out forward + backward at the imported GPT-2 bench's shapes (N 8, 4 heads, T 64, D 32,
float32, jit, CPU; ``rosetta bench --imported gpt2`` JAX step 1.03x -> 1.08x of the flax
baseline with it); it computes its logits and softmax in float32 whatever the inputs (not exact
for float64, not the bf16 policy's bf16 softmax, not a mixed policy's low-type score product);
it takes one head width for q, k and v; and it masks with -0.7 * float32 max, so a row that keeps
no key gets uniform weights. Here a row that keeps no key gets every key (and no float bias) for
its softmax and weights 0 after it, the spec's rule (no nan, no gradient).
"""

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


@lowers("DotProductAttention")
def dot_product_attention(node, xs, ctx):
    from rosetta.ops.attention import DotProductAttention as Op

    q, k, v = xs[:3]
    scale = Op.scale(node.attrs, node.in_types[0].shape[-1])
    keep, bias, dead = _dpa_masks(node, xs[3] if len(xs) > 3 else None, q)
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
