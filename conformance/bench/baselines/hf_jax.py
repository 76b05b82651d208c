"""Hand-written flax + optax versions of HuggingFace's GPT-2 (``GPT2LMHeadModel``) and BERT
(``BertForSequenceClassification``) blocks: what a JAX user porting those two models writes, to
time rosetta's step on JAX against (``rosetta bench --imported``). No rosetta import.

``build(cfg, weights, optimizer, *, mode="jit")``: ``cfg`` a plain dict (``model`` "gpt2" or
"bert", ``vocab``, ``hidden``, ``layers``, ``heads``, ``positions``, ``intermediate``,
``epsilon``, ``labels``), ``weights`` the HuggingFace ``state_dict`` as NumPy arrays in torch's
own layouts (``nn.Linear`` (out, in), GPT-2's ``Conv1D`` (in, out)), ``optimizer``
``{"lr", "beta1", "beta2", "eps", "weight_decay"}`` (AdamW, decay on every parameter, as
``torch.optim.AdamW(model.parameters())``). Returns a trainer with ``put(tokens, labels)`` and
``step(batch) -> float`` (the loss before the update, synchronised by ``float``), one
``jax.jit`` step donating the old state.

The math, as HuggingFace computes it (dropout 0):

* GPT-2 (pre-norm): h = wte[x] + wpe[t]; per block h += c_proj(attn(ln_1 h)),
  h += mlp.c_proj(gelu_tanh(mlp.c_fc(ln_2 h))); logits = ln_f(h) wte^T (the tied head);
  causal attention softmax(q k^T / sqrt(d)) v;
* BERT (post-norm): h = LN(word[x] + position[t] + token_type[0]); per block
  h = LN(h + out(attn(q, k, v))), h = LN(h + out2(gelu_erf(inter h))); logits =
  classifier(tanh(pooler(h[:, 0]))).

Attention is ``jax.nn.dot_product_attention`` (the fused op JAX offers); LayerNorm is flax's
(``use_fast_variance=False``, the two-pass variance torch uses).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from flax.training import train_state

HIGHEST = jax.lax.Precision.HIGHEST
LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


def _name(hf_prefix: str) -> str:
    """A flax module name for a HuggingFace module path ("." is not allowed in flax names)."""
    return hf_prefix.replace(".", "__")


def _dense(units, prefix, dtype):
    return nn.Dense(units, precision=HIGHEST, dtype=dtype, param_dtype=dtype, name=_name(prefix))


def _norm(prefix, eps, dtype):
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=dtype,
                        name=_name(prefix))


def _embed(n, e, prefix, dtype):
    return nn.Embed(n, e, dtype=dtype, param_dtype=dtype, name=_name(prefix))


def _heads(x, heads):
    n, t, e = x.shape
    return x.reshape(n, t, heads, e // heads)


class GPT2(nn.Module):
    cfg: dict
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids):
        c, dt = self.cfg, self.dtype
        e, t = c["hidden"], ids.shape[1]
        wte = _embed(c["vocab"], e, "transformer.wte", dt)
        h = wte(ids) + _embed(c["positions"], e, "transformer.wpe", dt)(jnp.arange(t))
        for i in range(c["layers"]):
            p = f"transformer.h.{i}."
            qkv = _dense(3 * e, p + "attn.c_attn", dt)(_norm(p + "ln_1", c["epsilon"], dt)(h))
            q, k, v = (_heads(a, c["heads"]) for a in jnp.split(qkv, 3, axis=-1))
            o = jax.nn.dot_product_attention(q, k, v, is_causal=True)
            h = h + _dense(e, p + "attn.c_proj", dt)(o.reshape(h.shape))
            m = _dense(c["intermediate"], p + "mlp.c_fc", dt)(
                _norm(p + "ln_2", c["epsilon"], dt)(h))
            h = h + _dense(e, p + "mlp.c_proj", dt)(jax.nn.gelu(m, approximate=True))
        return wte.attend(_norm("transformer.ln_f", c["epsilon"], dt)(h))


class Bert(nn.Module):
    cfg: dict
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids):
        c, dt = self.cfg, self.dtype
        e, t, eps = c["hidden"], ids.shape[1], c["epsilon"]
        b = "bert.embeddings."
        h = (_embed(c["vocab"], e, b + "word_embeddings", dt)(ids)
             + _embed(c["positions"], e, b + "position_embeddings", dt)(jnp.arange(t))
             + _embed(2, e, b + "token_type_embeddings", dt)(jnp.zeros((t,), int)))
        h = _norm(b + "LayerNorm", eps, dt)(h)
        for i in range(c["layers"]):
            p = f"bert.encoder.layer.{i}."
            q, k, v = (_heads(_dense(e, p + "attention.self." + n, dt)(h), c["heads"])
                       for n in ("query", "key", "value"))
            o = jax.nn.dot_product_attention(q, k, v).reshape(h.shape)
            h = _norm(p + "attention.output.LayerNorm", eps, dt)(
                h + _dense(e, p + "attention.output.dense", dt)(o))
            f = jax.nn.gelu(_dense(c["intermediate"], p + "intermediate.dense", dt)(h),
                            approximate=False)
            h = _norm(p + "output.LayerNorm", eps, dt)(h + _dense(e, p + "output.dense", dt)(f))
        pooled = jnp.tanh(_dense(e, "bert.pooler.dense", dt)(h[:, 0]))
        return _dense(c["labels"], "classifier", dt)(pooled)


MODELS = {"gpt2": GPT2, "bert": Bert}


def flax_params(cfg, weights, like, dtype=jnp.float32):
    """The flax parameter tree from the HuggingFace arrays: module path from the flax name,
    ``nn.Linear`` kernels (BERT's) transposed to (in, out); GPT-2's ``Conv1D`` is (in, out)."""
    out = {}
    for key, shape in traverse_util.flatten_dict(like).items():
        module, leaf = key
        value = np.asarray(weights[module.replace("__", ".") + "." + LEAF[leaf]])
        if leaf == "kernel" and cfg["model"] == "bert":
            value = value.T
        if value.shape != shape.shape:
            raise ValueError(f"{module}/{leaf}: HuggingFace {value.shape}, flax {shape.shape}")
        out[key] = jnp.asarray(value, dtype)
    return traverse_util.unflatten_dict(out)


class Trainer:
    def __init__(self, cfg, weights, optimizer, seq, dtype="float32"):
        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        model = MODELS[cfg["model"]](cfg, dtype=jnp.dtype(dtype))
        ids = jnp.zeros((2, seq), jnp.int32)
        like = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids)["params"]
        o = optimizer
        tx = optax.adamw(o["lr"], b1=o["beta1"], b2=o["beta2"], eps=o["eps"],
                         weight_decay=o["weight_decay"])
        self.state = train_state.TrainState.create(
            apply_fn=model.apply, params=flax_params(cfg, weights, like, jnp.dtype(dtype)), tx=tx)

        def loss_fn(params, ids, y):
            logits = model.apply({"params": params}, ids)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        @functools.partial(jax.jit, donate_argnums=0)
        def train_step(state, ids, y):
            value, grads = jax.value_and_grad(loss_fn)(state.params, ids, y)
            return state.apply_gradients(grads=grads), value

        self.train_step = train_step

    def put(self, ids, y):
        return jax.device_put((np.asarray(ids, np.int32), np.asarray(y, np.int32)))

    def step(self, batch):
        self.state, loss = self.train_step(self.state, *batch)
        return float(loss)


def build(cfg, weights, optimizer, *, seq, mode="jit", dtype="float32"):
    """A trainer (see the module docstring); ``dtype`` float32, or float64 (the baselines'
    proof: ``imported.compare_losses``)."""
    return Trainer(cfg, weights, optimizer, seq, dtype)
