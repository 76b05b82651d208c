"""Lowerings of MultiHeadAttention, DotProductAttention and PositionEmbedding (merged into
``layers.LOWERINGS``).

DotProductAttention is written out (``tf.linalg.matmul``, ``tf.where`` / add for the masks,
``tf.nn.softmax``): TensorFlow has no fused attention kernel of its own on CPU (Keras's
``MultiHeadAttention`` is the same einsum, softmax, einsum chain), so nothing faster exists to
configure. A row that keeps no key gets every key for its softmax and weights 0 after it (the
spec's rule: no nan, no gradient).

MultiHeadAttention is written with ``tf.einsum`` on the canonical kernels (E, h, d) and
(h, d, out), Keras's own EinsumDense layout, so no parameter is transposed. Not
``keras.layers.MultiHeadAttention``: its variables live in sub-layers (``query/kernel``) rather
than as the node's canonical variables, its dropout cannot take an injected keep-mask, and its
boolean ``attention_mask`` is a per-call (N, Tq, Tk) tensor; the math below is the same.
Masked scores are set to -inf, as in the reference (Keras adds -1e9 instead: the same weights,
since exp underflows to 0, unless a whole row is masked, which the canonical rule excludes)."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from rosetta.backends.tensorflow.lowering import NodeModule, lowers


@lowers("MultiHeadAttention")
class MultiHeadAttention(NodeModule):
    """q, k, v = einsum projections (+ bias); s = q k^T / sqrt(d) with key-padding (j >= length)
    and causal (j > i) entries at -inf; w = softmax(s), in training times the keep-mask /
    (1 - dropout) (injected, or drawn from the model's generator with stateless_dropout);
    y = einsum(w v, output_kernel) (+ bias). With ``float32_softmax`` (mixed policies) s is
    cast to float32 before the masks and the softmax, and w back to v's type."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.scale = 1.0 / math.sqrt(a["head_dim"])
        self.use_bias = a["use_bias"]
        self.dropout = a["dropout"]
        self.rng = ctx.rng
        tq, tk = node.in_types[0].shape[0], node.in_types[1].shape[0]
        self.causal = (np.triu(np.ones((tq, tk), bool), 1) if a["causal"] else None)
        # a mixed precision policy: scores cast to float32 for the softmax (and its dropout),
        # the weights cast back to v's type for the product (rosetta.precision.INNER_SOFTMAX)
        self.float32_softmax = False

    def __call__(self, xs, training=False, update_state=False, mask=None):
        xq, xv = xs[0], xs[1]
        q = tf.einsum("nie,ehd->nihd", xq, self.query_kernel)
        k = tf.einsum("nje,ehd->njhd", xv, self.key_kernel)
        v = tf.einsum("nje,ehd->njhd", xv, self.value_kernel)
        if self.use_bias:
            # the key bias's gradient is exactly 0 (softmax ignores q.bk, the same for every
            # key); autodiff would return rounding noise, which Adam amplifies (see torch)
            key_bias = tf.stop_gradient(self.key_bias) + 0.0 * self.key_bias
            q, k, v = q + self.query_bias, k + key_bias, v + self.value_bias
        s = tf.einsum("nihd,njhd->nhij", q, k) * self.scale
        if self.float32_softmax:
            s = tf.cast(s, tf.float32)
        ignore = None
        if len(xs) > 2:
            tk = tf.shape(xv)[1]
            ignore = (tf.range(tk, dtype=xs[2].dtype)[None, :] >= xs[2][:, None])[:, None, None, :]
        if self.causal is not None:
            c = tf.constant(self.causal)[None, None]
            ignore = c if ignore is None else tf.logical_or(ignore, c)
        if ignore is not None:
            s = tf.where(ignore, tf.constant(-np.inf, s.dtype), s)
        w = tf.nn.softmax(s, axis=-1)
        if training and self.dropout > 0.0:
            if mask is not None:
                w = w * tf.cast(mask, w.dtype) / (1.0 - self.dropout)
            else:
                seed = self.rng.make_seeds(1)[:, 0]
                w = tf.nn.experimental.stateless_dropout(w, rate=self.dropout, seed=seed)
        o = tf.einsum("nhij,njhd->nihd", tf.cast(w, v.dtype), v)
        y = tf.einsum("nihd,hdo->nio", o, self.output_kernel)
        return y + self.output_bias if self.use_bias else y


@lowers("DotProductAttention")
class DotProductAttention(NodeModule):
    """w = softmax(q k^T * scale (+ float mask), -inf where the int mask or causal drops a key),
    0 in a row that keeps no key; y = w v. With ``float32_softmax`` (mixed policies) the scores
    are cast to float32 before the masks and the softmax, and w back to v's type."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        from rosetta.ops.attention import DotProductAttention as Op

        q, k = node.in_types[0].shape, node.in_types[1].shape
        self.scale = Op.scale(node.attrs, q[-1])
        self.rank = len(q)
        self.causal = np.tril(np.ones((q[-2], k[-2]), bool)) if node.attrs["causal"] else None
        self.keep_mask = len(node.in_types) > 3 and node.in_types[3].kind == "int"
        self.float32_softmax = False

    def __call__(self, xs, training=False, update_state=False):
        q, k, v = xs[:3]
        s = tf.linalg.matmul(q, k, transpose_b=True) * tf.constant(self.scale, q.dtype)
        if self.float32_softmax:
            s = tf.cast(s, tf.float32)
        keep = None if self.causal is None else tf.constant(self.causal)
        bias = None
        if len(xs) > 3:
            m = xs[3]
            missing = self.rank + 1 - len(m.shape)
            if missing > 0:
                m = tf.reshape(m, tf.concat([tf.shape(m)[:1], [1] * missing, tf.shape(m)[1:]], 0))
            if self.keep_mask:
                m = tf.not_equal(m, tf.constant(0, m.dtype))
                keep = m if keep is None else tf.logical_and(keep, m)
            else:
                bias = tf.cast(m, s.dtype)
        if keep is None and bias is None:
            w = tf.nn.softmax(s, axis=-1)
        else:
            alive = tf.ones((1, 1), tf.bool) if keep is None else keep
            if bias is not None:
                alive = tf.logical_and(alive, tf.not_equal(bias, tf.constant(-np.inf, s.dtype)))
            dead = tf.logical_not(tf.reduce_any(alive, axis=-1, keepdims=True))
            zero = tf.zeros((), s.dtype)
            if bias is not None:
                s = s + tf.where(dead, zero, bias)
            if keep is not None:
                s = tf.where(tf.logical_or(keep, dead), s, tf.constant(-np.inf, s.dtype))
            w = tf.where(dead, zero, tf.nn.softmax(s, axis=-1))
        return tf.linalg.matmul(tf.cast(w, v.dtype), v)


@lowers("PositionEmbedding")
class PositionEmbedding(NodeModule):
    """y = x + embedding[:T] (the canonical (max_length, E) table)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.length = node.in_types[0].shape[0]

    def __call__(self, xs, training=False, update_state=False):
        return xs[0] + self.embedding[: self.length]
