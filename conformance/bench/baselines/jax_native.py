"""Hand-written JAX: ``flax.linen`` modules of flax's own layers (``nn.Conv``, ``nn.BatchNorm``,
``nn.RNN`` over ``nn.OptimizedLSTMCell``, ``nn.MultiHeadDotProductAttention``, ``nn.LayerNorm``),
an ``optax`` optimizer (``optax.adamw`` with ``optax.warmup_cosine_decay_schedule``...) in a flax
``TrainState`` and one ``jax.jit`` step that donates the old state. No rosetta import (see
``__init__``: the contract, and the families).

Flax's modules are named by the canonical node names, so the canonical weights load by path.
Where flax's layers do not fit the canonical math they are not used: flax's ``GRUCell`` folds the
recurrent biases of the r and z gates into the input ones (one trainable bias where the canonical
GRU trains two), so the GRU cell here is written by hand; LayerNorm and BatchNorm are asked for
the two-pass variance (``use_fast_variance=False``), as the canonical rule computes it.

Precision (``precision``, ``rosetta bench --precision``), as a flax user writes it: ``bfloat16``:
every module with ``dtype=param_dtype=jnp.bfloat16`` (optax's state follows the parameters).
``mixed_bfloat16`` / ``mixed_float16``: ``dtype=`` the low type and ``param_dtype=float32`` on
the product layers (Dense, Conv, attention with ``force_fp32_for_softmax``), the normalisation
layers and the embeddings kept at ``dtype=float32``, the loss on ``logits.astype(float32)``;
``mixed_float16`` adds a hand-written dynamic loss scale (the policy's rule: initial 2**15,
growth interval 2000, factor 2, back-off 0.5, the update skipped on a non-finite gradient,
``jnp.where`` over the state as ``jmp.select_tree`` does). Plain ``jax.jit`` (XLA may keep
excess precision; rosetta's own step turns that off, ``xla_allow_excess_precision``).
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

from rosetta.conformance.bench.baselines import from_pairs

HIGHEST = jax.lax.Precision.HIGHEST  # full float32 matmuls (no TF32 / bf16 passes on GPU)


def _layers(prec):
    """flax layer constructors for ``prec`` = (compute, parameter, normalisation dtype) with
    full-precision matmuls: the products, and the keywords of the float32-family layers
    (normalisation, embeddings)."""
    compute, param, norm = prec
    kw = {"dtype": compute, "param_dtype": param}
    return (functools.partial(nn.Dense, precision=HIGHEST, **kw),
            functools.partial(nn.Conv, precision=HIGHEST, **kw),
            {"dtype": norm, "param_dtype": param})


def _f32_stats(prec):
    """flax's float32 promotion of normalisation statistics, off for pure bf16 (the policy runs
    normalisation in bf16 there)."""
    return prec[2] != jnp.bfloat16


# --- sequential: linear, mlp, mlp100, mlp784, cnn, lenet, tutorial_cnn ------------------------

class Sequential(nn.Module):
    arch: Any
    shapes: Any  # {canonical path: shape}
    dtype: Any

    @nn.compact
    def __call__(self, x):
        dense, conv, _ = _layers(self.dtype)
        for la in self.arch["layers"]:
            if la["op"] == "conv":
                k = self.shapes[la["name"] + "/kernel"]
                x = conv(k[-1], k[:2], padding=la["padding"].upper(), name=la["name"])(x)
            elif la["op"] == "maxpool":
                x = nn.max_pool(x, (la["size"],) * 2, strides=(la["size"],) * 2)
            elif la["op"] == "flatten":
                x = x.reshape((x.shape[0], -1))
            else:
                x = dense(self.shapes[la["name"] + "/kernel"][-1], name=la["name"])(x)
            if la.get("relu"):
                x = nn.relu(x)
        return x


# --- resnet ----------------------------------------------------------------------------------

class ResNet(nn.Module):
    arch: Any
    shapes: Any
    dtype: Any

    @nn.compact
    def __call__(self, x):
        a = self.arch
        dense, conv, kw = _layers(self.dtype)

        def conv_bn(x, c, bn, stride):
            k = self.shapes[c + "/kernel"]
            x = conv(k[-1], k[:2], strides=stride, padding="SAME", use_bias=False, name=c)(x)
            return nn.BatchNorm(use_running_average=False, momentum=a["momentum"],
                                epsilon=a["epsilon"], use_fast_variance=False, name=bn,
                                force_float32_reductions=_f32_stats(self.dtype), **kw)(x)

        h = nn.relu(conv_bn(x, a["stem"]["conv"], a["stem"]["bn"], 1))
        for b in a["blocks"]:
            y = nn.relu(conv_bn(h, b["conv1"], b["bn1"], b["stride"]))
            y = conv_bn(y, b["conv2"], b["bn2"], 1)
            short = conv_bn(h, b["proj_conv"], b["proj_bn"], b["stride"]) if b["proj_conv"] else h
            h = nn.relu(y + short)
        return dense(self.shapes[a["head"] + "/kernel"][-1], name=a["head"])(h.mean(axis=(1, 2)))


# --- recurrent: lstm, gru --------------------------------------------------------------------

class GRUCell(nn.RNNCellBase):
    """The canonical reset-after GRU: a = x K + b, u = h R + rb; r = σ(a_r + u_r),
    z = σ(a_z + u_z), n = tanh(a_n + r u_n); h' = (1 - z) n + z h."""
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, x):
        g = 3 * self.features
        zeros = nn.initializers.zeros
        k = self.param("kernel", zeros, (x.shape[-1], g), self.dtype)
        r = self.param("recurrent_kernel", zeros, (self.features, g), self.dtype)
        b = self.param("bias", zeros, (g,), self.dtype)
        rb = self.param("recurrent_bias", zeros, (g,), self.dtype)
        a_r, a_z, a_n = jnp.split(jnp.dot(x, k, precision=HIGHEST) + b, 3, axis=-1)
        u_r, u_z, u_n = jnp.split(jnp.dot(h, r, precision=HIGHEST) + rb, 3, axis=-1)
        reset, update = nn.sigmoid(a_r + u_r), nn.sigmoid(a_z + u_z)
        h = (1.0 - update) * jnp.tanh(a_n + reset * u_n) + update * h
        return h, h

    def initialize_carry(self, rng, input_shape):
        return jnp.zeros(input_shape[:-1] + (self.features,), self.dtype)

    @property
    def num_feature_axes(self):
        return 1


class Recurrent(nn.Module):
    """Embedding -> ``nn.RNN`` (the carry after each example's ``seq_lengths`` steps) -> Dense."""
    arch: Any
    shapes: Any
    dtype: Any

    @nn.compact
    def __call__(self, tokens, lengths):
        a = self.arch
        dense, _, kw = _layers(self.dtype)
        emb = self.shapes[a["embed"] + "/embedding"]
        x = nn.Embed(*emb, name=a["embed"], **kw)(tokens)
        # parent=None: the cell is adopted by nn.RNN (params under the rnn's name, "cell")
        cell = (nn.OptimizedLSTMCell(a["units"], parent=None, dtype=self.dtype[0],
                                     param_dtype=self.dtype[1]) if a["cell"] == "lstm" else
                GRUCell(a["units"], self.dtype[1], parent=None))
        carry = nn.RNN(cell, return_carry=True, name=a["rnn"])(x, seq_lengths=lengths)[0]
        h = carry[1] if a["cell"] == "lstm" else carry  # the LSTM's carry is (c, h)
        return dense(self.shapes[a["head"] + "/kernel"][-1], name=a["head"])(h)


def _lstm_gate(w, node, dense, p, units):
    """flax's per-gate LSTM Dense layers (``ii``..``io`` on the input, no bias; ``hi``..``ho``
    on the state, with the bias) as slices of the canonical [i, f, g, o] blocks."""
    gate = "ifgo".index(dense[1])
    src = (w[f"{node}/kernel"] if dense[0] == "i" else
           w[f"{node}/recurrent_kernel"] if p == "kernel" else w[f"{node}/bias"])
    return src[..., gate * units:(gate + 1) * units]


# --- transformer: transformer, gpt -----------------------------------------------------------

class PositionEmbedding(nn.Module):
    shape: Any
    dtype: Any

    @nn.compact
    def __call__(self, x):
        table = self.param("embedding", nn.initializers.zeros, self.shape, self.dtype)
        return x + table[: x.shape[-2]]


class Transformer(nn.Module):
    """Embedding + positions, pre-norm blocks (``nn.MultiHeadDotProductAttention``, a gelu
    feed-forward), final LayerNorm, [mean over the real tokens], Dense."""
    arch: Any
    shapes: Any
    dtype: Any

    @nn.compact
    def __call__(self, tokens, lengths=None):
        a, s = self.arch, self.shapes
        dense, _, kw = _layers(self.dtype)
        norm = functools.partial(nn.LayerNorm, epsilon=a["epsilon"], use_fast_variance=False,
                                 force_float32_reductions=_f32_stats(self.dtype), **kw)
        emb = s[a["embed"] + "/embedding"]
        h = nn.Embed(*emb, name=a["embed"], **kw)(tokens)
        h = PositionEmbedding(s[a["pos"] + "/embedding"], self.dtype[1], name=a["pos"])(h)
        t = tokens.shape[1]
        mask = jnp.ones((1, 1, t, t), bool)
        if a["causal"]:
            mask = nn.make_causal_mask(tokens)
        if lengths is not None:
            real = jnp.arange(t)[None, :] < lengths[:, None]
            mask = mask & real[:, None, None, :]
        for b in a["blocks"]:
            attn = nn.MultiHeadDotProductAttention(
                a["heads"], qkv_features=a["heads"] * a["head_dim"], out_features=emb[1],
                precision=HIGHEST, name=b["attn"], dtype=self.dtype[0],
                param_dtype=self.dtype[1], force_fp32_for_softmax=self.dtype[2] != self.dtype[0])
            h = h + attn(norm(name=b["ln1"])(h), mask=mask)
            f = nn.gelu(dense(s[b["ff1"] + "/kernel"][1], name=b["ff1"])(
                norm(name=b["ln2"])(h)), approximate=False)
            h = h + dense(emb[1], name=b["ff2"])(f)
        h = norm(name=a["final_norm"])(h)
        if a["pool"] == "mean":
            h = (h * real[..., None]).sum(axis=1) / lengths[:, None]
        return dense(s[a["head"] + "/kernel"][-1], name=a["head"])(h)


BUILDERS = {"sequential": Sequential, "resnet": ResNet, "recurrent": Recurrent,
            "transformer": Transformer}
ATTENTION = {"query": "query", "key": "key", "value": "value", "out": "output"}


def canonical(key, w, arch):
    """The canonical array for the flax parameter at ``key`` (a path tuple)."""
    node, *mid, p = key
    if not mid:
        return w[f"{node}/{p}"]
    if mid[0] in ATTENTION:                              # MultiHeadDotProductAttention
        return w[f"{node}/{ATTENTION[mid[0]]}_{p}"]
    if mid == ["cell"]:                                  # the GRU cell: canonical names
        return w[f"{node}/{p}"]
    return _lstm_gate(w, node, mid[1], p, arch["units"])  # ("cell", "ii" .. "ho")


# --- optimizer, trainer ----------------------------------------------------------------------

def learning_rate(lr, dtype):
    """A number, or optax's warm-up cosine schedule evaluated at the update count cast to
    ``dtype``: given optax's int32 count, its schedules compute in float32 even with
    ``jax_enable_x64`` (lr 1e-4 becomes 9.99999975e-5, which moves float64 losses by 2e-8)."""
    if not isinstance(lr, dict):
        return lr
    schedule = optax.warmup_cosine_decay_schedule(lr["init"], lr["peak"], lr["warmup_steps"],
                                                  lr["decay_steps"], end_value=lr["final"])
    return lambda count: schedule(jnp.asarray(count, dtype))


def make_optimizer(o, dtype):
    lr = learning_rate(o["lr"], dtype)
    wd = o.get("weight_decay", 0.0)
    if o["name"] == "adam":
        if wd:
            return optax.adamw(lr, b1=o["beta1"], b2=o["beta2"], eps=o["eps"], weight_decay=wd)
        return optax.adam(lr, b1=o["beta1"], b2=o["beta2"], eps=o["eps"])
    sgd = optax.sgd(lr, momentum=o["momentum"] or None, nesterov=o["nesterov"])
    return optax.chain(optax.add_decayed_weights(wd), sgd) if wd else sgd


class State(train_state.TrainState):
    batch_stats: Any = None
    scale: Any = None  # mixed_float16: the dynamic loss scale and its count of good steps
    good: Any = None


# precision -> (compute, parameter, normalisation) dtypes of the modules
PRECISIONS = {"float32": ("float32",) * 3, "float64": ("float64",) * 3,
              "bfloat16": ("bfloat16",) * 3,
              "mixed_bfloat16": ("bfloat16", "float32", "float32"),
              "mixed_float16": ("float16", "float32", "float32")}
GROWTH_INTERVAL = 2000


def select(keep, new, old):
    """``new`` where ``keep`` else ``old``, leaf by leaf (a skipped update)."""
    return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)


class Trainer:
    def __init__(self, arch, weights, loss, optimizer, dtype, device, mode, input_shape,
                 precision=None):
        precision = precision or dtype
        if precision == "float64":
            jax.config.update("jax_enable_x64", True)
        prec = tuple(jnp.dtype(d) for d in PRECISIONS[precision])
        self.dtype = prec[1]  # the parameters', the inputs' and the optimizer's
        mixed = prec[0] != prec[1]
        scaled = prec[0] == jnp.float16
        self.device = jax.devices("gpu" if device in ("gpu", "cuda") else "cpu")[0]
        arch, weights = from_pairs(arch, weights, input_shape)
        self.lengths = bool(arch.get("lengths"))
        shapes = {k: tuple(v.shape) for k, v in weights.items()}
        model = BUILDERS[arch["model"]](arch, shapes, prec)
        n = 2
        example = ((jnp.zeros((n,) + tuple(input_shape), jnp.int32), jnp.ones((n,), jnp.int32))
                   if self.lengths else
                   (jnp.zeros((n,) + tuple(input_shape),
                              jnp.int32 if arch["model"] == "transformer" else self.dtype),))
        variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), *example)
        flat = traverse_util.flatten_dict(variables["params"])
        params = {}
        for key, like in flat.items():
            value = np.asarray(canonical(key, weights, arch))
            if value.shape != like.shape:
                raise ValueError(f"{'/'.join(key)}: canonical {value.shape}, flax {like.shape}")
            params[key] = jnp.asarray(value, self.dtype)
        params = traverse_util.unflatten_dict(params)
        stats = variables.get("batch_stats")
        if stats is not None:  # BatchNorm's running statistics: mean 0, var 1, as flax's init
            stats = {bn: {"mean": jnp.zeros(v["mean"].shape, self.dtype),
                          "var": jnp.ones(v["var"].shape, self.dtype)} for bn, v in stats.items()}
        state = State.create(apply_fn=model.apply, params=params,
                             tx=make_optimizer(optimizer, self.dtype), batch_stats=stats,
                             scale=jnp.float32(2.0 ** 15) if scaled else None,
                             good=jnp.int32(0) if scaled else None)
        self.state = jax.device_put(state, self.device)
        self.loss = loss

        def loss_fn(params, stats, xs, y):
            if stats is None:
                out, new_stats = model.apply({"params": params}, *xs), None
            else:
                out, upd = model.apply({"params": params, "batch_stats": stats}, *xs,
                                       mutable=["batch_stats"])
                new_stats = upd["batch_stats"]
            if mixed:  # the loss in float32: the logits cast up
                out = out.astype(jnp.float32)
            if loss == "mse":
                value = jnp.mean((out - y) ** 2)
            elif loss == "sequence_cross_entropy":
                real = y != -1
                per = optax.softmax_cross_entropy_with_integer_labels(out, jnp.where(real, y, 0))
                value = jnp.sum(jnp.where(real, per, 0.0)) / jnp.maximum(real.sum(), 1)
            else:
                value = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
            return value, new_stats

        @functools.partial(jax.jit, donate_argnums=0)
        def train_step(state, xs, y):
            (value, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                state.params, state.batch_stats, xs, y)
            return state.apply_gradients(grads=grads, batch_stats=stats), value

        @functools.partial(jax.jit, donate_argnums=0)
        def scaled_step(state, xs, y):
            def scaled_loss(params, stats):
                value, new_stats = loss_fn(params, stats, xs, y)
                return value * state.scale, (value, new_stats)
            (_, (value, stats)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(
                state.params, state.batch_stats)
            grads = jax.tree.map(lambda g: g / state.scale, grads)
            finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g))
                                        for g in jax.tree.leaves(grads)]))
            new = select(finite, state.apply_gradients(grads=grads, batch_stats=stats), state)
            good = jnp.where(finite, state.good + 1, 0)
            grow = good == GROWTH_INTERVAL
            scale = jnp.where(finite, jnp.where(grow, state.scale * 2.0, state.scale),
                              state.scale * 0.5)
            return new.replace(scale=scale, good=jnp.where(grow, 0, good)), value

        self.train_step = scaled_step if scaled else train_step

    def put(self, x, y):
        if self.lengths:
            xs = tuple(np.asarray(a, np.int32) for a in x)
        elif np.asarray(x).dtype.kind in "iu":
            xs = (np.asarray(x, np.int32),)
        else:
            xs = (np.asarray(x, self.dtype),)
        y = np.asarray(y, self.dtype if self.loss == "mse" else np.int32)
        return jax.device_put((xs, y), self.device)

    def step(self, batch):
        self.state, loss = self.train_step(self.state, *batch)
        return float(loss)


def build(arch, weights, loss, optimizer, *, input_shape, dtype="float32", device="cpu",
          mode="jit", precision=None):
    """A trainer (see ``rosetta.conformance.bench.baselines``)."""
    return Trainer(arch, weights, loss, optimizer, dtype, device, mode, input_shape, precision)
