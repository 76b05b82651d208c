"""Hand-written TensorFlow versions of HuggingFace's GPT-2 (``GPT2LMHeadModel``) and BERT
(``BertForSequenceClassification``) blocks: ``tf.Variable``s, ``tf.GradientTape`` and one
``tf.function`` step (``jit_compile`` in mode "xla"), the AdamW update of ``tensorflow_native``,
to time rosetta's step on TensorFlow against (``rosetta bench --imported``). No rosetta import.

``build(cfg, weights, optimizer, *, seq, mode)``: the same plain values as ``hf_jax.build`` (see
its docstring for the math, which is the same here): HuggingFace ``state_dict`` arrays in torch's
layouts, converted once (``nn.Linear`` kernels transposed to (in, out)). Attention is written
with ``tf.einsum`` and ``tf.nn.softmax`` (TensorFlow has no fused attention op); LayerNorm is
``tf.nn.moments`` + ``tf.nn.batch_normalization``; GELU ``tf.nn.gelu(approximate=True)`` for
GPT-2's ``gelu_new``, and for BERT's erf GELU ``tensorflow_native.gelu`` (``tf.math.erf``
written out: ``tf.nn.gelu(approximate=False)`` is off by 2e-7 relative in float64).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from rosetta.conformance.bench.baselines.tensorflow_native import Adam, gelu


class Weights(tf.Module):
    """The trainable variables by HuggingFace name (Linear kernels as (in, out))."""

    def __init__(self, cfg, weights, dtype="float32"):
        super().__init__()
        self.by_name = {}
        for k, v in weights.items():
            v = np.asarray(v, dtype)
            if cfg["model"] == "bert" and v.ndim == 2 and "embeddings" not in k:
                v = v.T
            self.by_name[k] = tf.Variable(v, name=k.replace(".", "__"))
        self.params = list(self.by_name.values())

    def __getitem__(self, name):
        return self.by_name[name]


def dense(w, prefix, x):
    return tf.matmul(x, w[prefix + ".weight"]) + w[prefix + ".bias"]


def layer_norm(w, prefix, x, eps):
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return tf.nn.batch_normalization(x, mean, var, w[prefix + ".bias"], w[prefix + ".weight"],
                                     eps)


def attention(q, k, v, heads, causal):
    """softmax(q k^T / sqrt(d) [causal mask]) v over (N, T, heads, d) heads."""
    n, t, e = q.shape
    q, k, v = (tf.reshape(a, [n, t, heads, e // heads]) for a in (q, k, v))
    s = tf.einsum("nihd,njhd->nhij", q, k) * (1.0 / math.sqrt(e // heads))
    if causal:
        mask = tf.linalg.band_part(tf.ones([t, t], tf.bool), -1, 0)
        s = tf.where(mask, s, tf.constant(np.finfo(s.dtype.as_numpy_dtype).min, s.dtype))
    o = tf.einsum("nhij,njhd->nihd", tf.nn.softmax(s, axis=-1), v)
    return tf.reshape(o, [n, t, e])


def gpt2(c, w, ids):
    e, t, eps = c["hidden"], ids.shape[1], c["epsilon"]
    wte = w["transformer.wte.weight"]
    h = tf.gather(wte, ids) + w["transformer.wpe.weight"][:t]
    for i in range(c["layers"]):
        p = f"transformer.h.{i}."
        q, k, v = tf.split(dense(w, p + "attn.c_attn", layer_norm(w, p + "ln_1", h, eps)), 3,
                           axis=-1)
        h = h + dense(w, p + "attn.c_proj", attention(q, k, v, c["heads"], True))
        m = dense(w, p + "mlp.c_fc", layer_norm(w, p + "ln_2", h, eps))
        h = h + dense(w, p + "mlp.c_proj", tf.nn.gelu(m, approximate=True))
    h = layer_norm(w, "transformer.ln_f", h, eps)
    return tf.matmul(h, wte, transpose_b=True)


def bert(c, w, ids):
    t, eps = ids.shape[1], c["epsilon"]
    b = "bert.embeddings."
    h = (tf.gather(w[b + "word_embeddings.weight"], ids) + w[b + "position_embeddings.weight"][:t]
         + w[b + "token_type_embeddings.weight"][0])
    h = layer_norm(w, b + "LayerNorm", h, eps)
    for i in range(c["layers"]):
        p = f"bert.encoder.layer.{i}."
        q, k, v = (dense(w, p + "attention.self." + n, h) for n in ("query", "key", "value"))
        o = attention(q, k, v, c["heads"], False)
        h = layer_norm(w, p + "attention.output.LayerNorm",
                       h + dense(w, p + "attention.output.dense", o), eps)
        f = gelu(dense(w, p + "intermediate.dense", h))
        h = layer_norm(w, p + "output.LayerNorm", h + dense(w, p + "output.dense", f), eps)
    pooled = tf.tanh(dense(w, "bert.pooler.dense", h[:, 0]))
    return dense(w, "classifier", pooled)


MODELS = {"gpt2": gpt2, "bert": bert}


class Trainer:
    def __init__(self, cfg, weights, optimizer, mode, dtype="float32"):
        tf.config.experimental.enable_tensor_float_32_execution(False)
        self.w = Weights(cfg, weights, dtype)
        params = self.w.params
        o = optimizer
        self.opt = Adam(params, {"name": "adam", "lr": o["lr"], "beta1": o["beta1"],
                                 "beta2": o["beta2"], "eps": o["eps"],
                                 "weight_decay": o["weight_decay"]})
        forward, w, opt = MODELS[cfg["model"]], self.w, self.opt

        def train_step(ids, y):
            with tf.GradientTape() as tape:
                logits = forward(cfg, w, ids)
                value = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            opt.apply(tape.gradient(value, params), params)
            return value

        self.train_step = tf.function(train_step, jit_compile=(mode == "xla"))

    def put(self, ids, y):
        return (tf.identity(tf.constant(np.asarray(ids), tf.int32)),
                tf.identity(tf.constant(np.asarray(y), tf.int64)))

    def step(self, batch):
        return float(self.train_step(*batch))


def build(cfg, weights, optimizer, *, seq, mode="xla", dtype="float32"):
    """A trainer (see the module docstring); ``dtype`` float32, or float64 (the baselines'
    proof: ``imported.compare_losses``)."""
    return Trainer(cfg, weights, optimizer, mode, dtype)
