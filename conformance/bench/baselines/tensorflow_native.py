"""Hand-written TensorFlow: ``tf.Variable``s in ``tf.Module``s, the forward pass and the update
rule written with ``tf`` ops (``tf.nn.conv2d``, ``tf.nn.moments``, ``tf.scan`` for the
recurrences, ``tf.einsum`` attention), and one ``tf.function(jit_compile=True)`` step (mode
``"function"``: without ``jit_compile``). No rosetta import (see ``__init__``: the contract,
and the families).

Keras is deliberately not used: its Adam adds epsilon before the bias correction and its SGD folds
the learning rate into the momentum buffer, so it would not train to the same numbers; a Keras
user's timing is the separate ``--keras`` column.

Precision (``precision``, ``rosetta bench --precision``) is written the same way, with ``tf.cast``
by hand: ``bfloat16``: every variable, input and optimizer slot in bf16 (the update count and
the bias corrections in float32, cast to bf16 where they meet the slots). ``mixed_bfloat16`` /
``mixed_float16``: float32 variables and slots; each product (matmul, conv, einsum attention)
casts its operands to the low type (``Params.low``); normalisation, the attention's softmax,
pooling means and the loss cast their inputs to float32 (``Params.f32``); the gradients reach
the float32 variables through the casts. ``mixed_float16`` adds a hand-written dynamic loss
scale (initial 2**15, growth interval 2000, factor 2, back-off 0.5; a non-finite gradient skips
the update under ``tf.cond``).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from rosetta.conformance.bench.baselines import from_pairs


class Params(tf.Module):
    """The trainable variables, by canonical path (the order of creation is the update order);
    ``compute``: the type the products run in, ``norm``: the type of normalisation, softmax and
    means (both the variables' own type unless the precision is mixed)."""

    def __init__(self, weights, dtype, compute=None, norm=None):
        super().__init__()
        self.by_path = {k: tf.Variable(v, dtype=dtype, name=k.replace("/", "__"))
                        for k, v in weights.items()}
        self.params = list(self.by_path.values())
        self.compute, self.norm = compute or dtype, norm or dtype

    def __getitem__(self, path):
        return self.by_path[path]

    def low(self, *xs):
        """``xs`` cast to the products' type (no op when it is theirs already)."""
        out = tuple(x if x.dtype == self.compute else tf.cast(x, self.compute) for x in xs)
        return out if len(out) > 1 else out[0]

    def f32(self, *xs):
        """``xs`` cast to the normalisation's type."""
        out = tuple(x if x.dtype == self.norm else tf.cast(x, self.norm) for x in xs)
        return out if len(out) > 1 else out[0]


def dense(p, name, x, relu=False):
    y = tf.matmul(*p.low(x, p[name + "/kernel"])) + p.low(p[name + "/bias"])
    return tf.nn.relu(y) if relu else y


def layer_norm(p, name, x, eps):
    x = p.f32(x)
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return tf.nn.batch_normalization(x, mean, var, *p.f32(p[name + "/bias"], p[name + "/scale"]),
                                     eps)


# --- sequential: linear, mlp, mlp100, mlp784, cnn, lenet, tutorial_cnn ------------------------

class Sequential(tf.Module):
    def __init__(self, arch, p, dtype):
        super().__init__()
        self.layers, self.p = arch["layers"], p

    def __call__(self, x):
        for la in self.layers:
            if la["op"] == "conv":
                x = tf.nn.conv2d(*self.p.low(x, self.p[la["name"] + "/kernel"]), 1,
                                 la["padding"].upper())
                x = x + self.p.low(self.p[la["name"] + "/bias"])
            elif la["op"] == "maxpool":
                x = tf.nn.max_pool2d(x, la["size"], la["size"], "VALID")
            elif la["op"] == "flatten":
                x = tf.reshape(x, [tf.shape(x)[0], -1])
            else:
                x = dense(self.p, la["name"], x)
            if la.get("relu"):
                x = tf.nn.relu(x)
        return x


# --- resnet ----------------------------------------------------------------------------------

class ResNet(tf.Module):
    """conv - BN (batch moments, running averages updated) - ReLU, basic blocks, mean pool."""

    def __init__(self, arch, p, dtype):
        super().__init__()
        self.arch, self.p = arch, p
        names = [arch["stem"]["bn"]] + [b[k] for b in arch["blocks"]
                                        for k in ("bn1", "bn2", "proj_bn") if b[k]]
        self.stats = {n: (tf.Variable(tf.zeros_like(p[n + "/scale"]), trainable=False),
                          tf.Variable(tf.ones_like(p[n + "/scale"]), trainable=False))
                      for n in names}

    def conv_bn(self, x, conv, bn, stride):
        x = self.p.f32(tf.nn.conv2d(*self.p.low(x, self.p[conv + "/kernel"]), stride, "SAME"))
        mean, var = tf.nn.moments(x, axes=[0, 1, 2])
        m = self.arch["momentum"]
        running_mean, running_var = self.stats[bn]
        running_mean.assign(m * running_mean + (1 - m) * mean)
        running_var.assign(m * running_var + (1 - m) * var)
        return tf.nn.batch_normalization(x, mean, var,
                                         *self.p.f32(self.p[bn + "/bias"], self.p[bn + "/scale"]),
                                         self.arch["epsilon"])

    def __call__(self, x):
        a = self.arch
        h = tf.nn.relu(self.conv_bn(x, a["stem"]["conv"], a["stem"]["bn"], 1))
        for b in a["blocks"]:
            y = tf.nn.relu(self.conv_bn(h, b["conv1"], b["bn1"], b["stride"]))
            y = self.conv_bn(y, b["conv2"], b["bn2"], 1)
            short = (self.conv_bn(h, b["proj_conv"], b["proj_bn"], b["stride"])
                     if b["proj_conv"] else h)
            h = tf.nn.relu(y + short)
        return dense(self.p, a["head"], tf.reduce_mean(self.p.f32(h), axis=[1, 2]))


# --- recurrent: lstm, gru --------------------------------------------------------------------

class Recurrent(tf.Module):
    """Embedding, the input projections of every step in one matmul, ``tf.scan`` over time of
    the recurrent part, the state after each example's last real step, Dense. An LSTM in float32
    without XLA runs TensorFlow's fused ``tf.raw_ops.BlockLSTM`` instead (``block_lstm``): it
    has no float64 and no XLA kernel."""

    def __init__(self, arch, p, dtype):
        super().__init__()
        self.arch, self.p = arch, p
        self.fused = False  # the Trainer sets it: float32 and mode "function"

    def lstm(self, carry, z_x):
        h, c = carry
        r = self.p[self.arch["rnn"] + "/recurrent_kernel"]
        i, f, g, o = tf.split(z_x + tf.matmul(h, r), 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c

    def gru(self, carry, a_x):
        (h,) = carry
        name = self.arch["rnn"]
        u = tf.matmul(h, self.p[name + "/recurrent_kernel"]) + self.p[name + "/recurrent_bias"]
        a_r, a_z, a_n = tf.split(a_x, 3, axis=-1)
        u_r, u_z, u_n = tf.split(u, 3, axis=-1)
        r, z = tf.sigmoid(a_r + u_r), tf.sigmoid(a_z + u_z)
        n = tf.tanh(a_n + r * u_n)
        return ((1.0 - z) * n + z * h,)

    def block_lstm(self, x, lengths):
        """BlockLSTM's gate order is [i, g, f, o]; forget bias 0, no clip, no peepholes."""
        def igfo(t):
            i, f, g, o = tf.split(t, 4, axis=-1)
            return tf.concat([i, g, f, o], axis=-1)
        name, units = self.arch["rnn"], self.arch["units"]
        w = tf.concat([self.p[name + "/kernel"], self.p[name + "/recurrent_kernel"]], axis=0)
        zero = tf.zeros([tf.shape(x)[0], units], x.dtype)
        off = tf.zeros([units], x.dtype)
        h = tf.raw_ops.BlockLSTM(
            seq_len_max=tf.cast(tf.shape(x)[1], tf.int64), x=tf.transpose(x, [1, 0, 2]),
            cs_prev=zero, h_prev=zero, w=igfo(w), wci=off, wcf=off, wco=off,
            b=igfo(self.p[name + "/bias"]), forget_bias=0.0, cell_clip=-1.0,
            use_peephole=False).h                                          # (T, N, H)
        return tf.gather(tf.transpose(h, [1, 0, 2]), lengths - 1, batch_dims=1)

    def __call__(self, tokens, lengths):
        a, p = self.arch, self.p
        x = tf.gather(p[a["embed"] + "/embedding"], tokens)             # (N, T, E)
        if self.fused and a["cell"] == "lstm":
            return dense(p, a["head"], self.block_lstm(x, lengths))
        z = tf.einsum("nte,eg->tng", x, p[a["rnn"] + "/kernel"]) + p[a["rnn"] + "/bias"]
        h0 = tf.zeros([tf.shape(tokens)[0], a["units"]], x.dtype)
        cell = self.lstm if a["cell"] == "lstm" else self.gru
        init = (h0, h0) if a["cell"] == "lstm" else (h0,)
        states = tf.scan(cell, z, initializer=init)[0]                  # (T, N, H)
        last = tf.gather(tf.transpose(states, [1, 0, 2]), lengths - 1, batch_dims=1)
        return dense(p, a["head"], last)


def gelu(x):
    """x Phi(x) = x (1 + erf(x / sqrt 2)) / 2. Not ``tf.nn.gelu(approximate=False)``: in float64
    on this CPU build it is off by up to 5e-9 (2e-7 relative; ``tf.math.erf`` is exact to
    4e-16), which moves the losses by 1e-9."""
    return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))


# --- transformer: transformer, gpt -----------------------------------------------------------

class Transformer(tf.Module):
    """Embedding + positions, pre-norm blocks of einsum attention and a gelu feed-forward."""

    def __init__(self, arch, p, dtype):
        super().__init__()
        self.arch, self.p = arch, p

    def attention(self, name, x, mask):
        p = self.p
        q, k, v = (tf.einsum("nte,ehd->nthd", *p.low(x, p[f"{name}/{n}_kernel"]))
                   + p.low(p[f"{name}/{n}_bias"]) for n in ("query", "key", "value"))
        s = p.f32(tf.einsum("nihd,njhd->nhij", q, k) / math.sqrt(self.arch["head_dim"]))
        w = p.low(tf.nn.softmax(tf.where(mask, s, tf.constant(-np.inf, s.dtype)), axis=-1))
        o = tf.einsum("nhij,njhd->nihd", w, v)
        return (tf.einsum("nihd,hde->nie", *p.low(o, p[name + "/output_kernel"]))
                + p.low(p[name + "/output_bias"]))

    def __call__(self, tokens, lengths=None):
        a, p = self.arch, self.p
        t = tokens.shape[1]
        h = tf.gather(p[a["embed"] + "/embedding"], tokens) + p[a["pos"] + "/embedding"][:t]
        mask = tf.ones([1, 1, t, t], tf.bool)                            # (N, heads, Tq, Tk)
        if a["causal"]:
            mask = tf.linalg.band_part(mask, -1, 0)
        if lengths is not None:
            real = tf.range(t)[None, :] < lengths[:, None]
            mask = mask & real[:, None, None, :]
        eps = a["epsilon"]
        for b in a["blocks"]:
            # the residual stream stays in the variables' type (the wider of the two)
            h = h + tf.cast(self.attention(b["attn"], layer_norm(p, b["ln1"], h, eps), mask),
                            h.dtype)
            f = gelu(dense(p, b["ff1"], layer_norm(p, b["ln2"], h, eps)))
            h = h + tf.cast(dense(p, b["ff2"], f), h.dtype)
        h = layer_norm(p, a["final_norm"], h, eps)
        if a["pool"] == "mean":
            h = p.f32(h)
            w = tf.cast(real, h.dtype)[..., None]
            h = tf.reduce_sum(h * w, axis=1) / tf.cast(lengths, h.dtype)[:, None]
        return dense(p, a["head"], h)


BUILDERS = {"sequential": Sequential, "resnet": ResNet, "recurrent": Recurrent,
            "transformer": Transformer}


# --- optimizer, schedule, trainer ------------------------------------------------------------

def learning_rate(lr, t, dtype):
    """lr(t) as a tensor: a number, or the warm-up cosine schedule at the update count t."""
    if not isinstance(lr, dict):
        return tf.constant(lr, dtype)
    peak, warm, init, final = lr["peak"], lr["warmup_steps"], lr["init"], lr["final"]
    span = lr["decay_steps"] - warm
    u = tf.minimum(tf.maximum(t - warm, 0.0), span) / span
    cosine = final + (peak - final) * 0.5 * (1.0 + tf.cos(math.pi * u))
    return tf.where(t < warm, init + (peak - init) * t / warm, cosine)


def count_dtype(params):
    """The update count's type: the parameters' own, float32 under bf16 (bf16 counts only to
    256 exactly)."""
    return tf.float32 if params[0].dtype == tf.bfloat16 else params[0].dtype


class Adam(tf.Module):
    """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p) (wd > 0: AdamW's decoupled decay)."""

    def __init__(self, params, o):
        super().__init__()
        self.o = o
        self.m = [tf.Variable(tf.zeros_like(p)) for p in params]
        self.v = [tf.Variable(tf.zeros_like(p)) for p in params]
        self.t = tf.Variable(0.0, dtype=count_dtype(params))
        self.dtype = params[0].dtype

    def apply(self, grads, params):
        o = self.o
        lr = learning_rate(o["lr"], self.t, self.t.dtype)
        self.t.assign_add(1.0)
        c1 = 1.0 - tf.pow(tf.constant(o["beta1"], self.t.dtype), self.t)
        c2 = 1.0 - tf.pow(tf.constant(o["beta2"], self.t.dtype), self.t)
        if self.dtype != self.t.dtype:
            lr, c1, c2 = (tf.cast(a, self.dtype) for a in (lr, c1, c2))
        wd = o.get("weight_decay", 0.0)
        for g, p, m, v in zip(grads, params, self.m, self.v):
            g = tf.convert_to_tensor(g)  # the embeddings' IndexedSlices, dense
            m.assign(o["beta1"] * m + (1.0 - o["beta1"]) * g)
            v.assign(o["beta2"] * v + (1.0 - o["beta2"]) * tf.square(g))
            d = (m / c1) / (tf.sqrt(v / c2) + o["eps"])
            p.assign_sub(lr * (d + wd * p) if wd else lr * d)


class SGD(tf.Module):
    """g += wd p; v = mu v + g; p -= lr v (nesterov: p -= lr (g + mu v)); no momentum: p -= lr g."""

    def __init__(self, params, o):
        super().__init__()
        self.o = o
        self.v = [tf.Variable(tf.zeros_like(p)) for p in params] if o["momentum"] else None
        self.t = tf.Variable(0.0, dtype=count_dtype(params))
        self.dtype = params[0].dtype

    def apply(self, grads, params):
        o, mu = self.o, self.o["momentum"]
        lr = tf.cast(learning_rate(o["lr"], self.t, self.t.dtype), self.dtype)
        self.t.assign_add(1.0)
        wd = o.get("weight_decay", 0.0)
        for i, (g, p) in enumerate(zip(grads, params)):
            g = tf.convert_to_tensor(g)
            if wd:
                g = g + wd * p
            if self.v is None:
                p.assign_sub(lr * g)
                continue
            v = self.v[i]
            v.assign(mu * v + g)
            p.assign_sub(lr * (g + mu * v if o["nesterov"] else v))


# precision -> (variables, products, normalisation) types
PRECISIONS = {"float32": ("float32",) * 3, "float64": ("float64",) * 3,
              "bfloat16": ("bfloat16",) * 3,
              "mixed_bfloat16": ("float32", "bfloat16", "float32"),
              "mixed_float16": ("float32", "float16", "float32")}
GROWTH_INTERVAL = 2000


class Trainer:
    def __init__(self, arch, weights, loss, optimizer, dtype, device, mode, input_shape,
                 precision=None):
        tf.config.experimental.enable_tensor_float_32_execution(False)
        precision = precision or dtype
        var, compute, norm = (tf.as_dtype(d) for d in PRECISIONS[precision])
        self.dtype = var
        mixed, scaled = compute != var, compute == tf.float16
        arch, weights = from_pairs(arch, weights, input_shape)
        self.lengths = bool(arch.get("lengths"))
        # placed explicitly only to run on the CPU of a machine that has a GPU (the default
        # placement would pick the GPU); otherwise TensorFlow's own placement is used
        gpus = tf.config.list_physical_devices("GPU")
        self.scope = "/CPU:0" if device == "cpu" and gpus else None
        self.place = self.scope or ("/GPU:0" if gpus else "/CPU:0")
        with tf.device(self.place):
            self.params = Params(weights, self.dtype, compute, norm)
            self.model = BUILDERS[arch["model"]](arch, self.params, self.dtype)
            if isinstance(self.model, Recurrent):
                self.model.fused = mode != "xla" and precision == "float32"
            params = self.params.params
            self.opt = (Adam(params, optimizer) if optimizer["name"] == "adam" else
                        SGD(params, optimizer))
            if scaled:  # the dynamic loss scale and its count of good steps
                self.scale = tf.Variable(2.0 ** 15, dtype=tf.float32, trainable=False)
                self.good = tf.Variable(0, dtype=tf.int32, trainable=False)
        self.loss = loss
        model, opt = self.model, self.opt

        def loss_fn(out, y):
            if mixed:  # the loss in float32: the logits cast up
                out = tf.cast(out, tf.float32)
            if loss == "mse":
                return tf.reduce_mean(tf.square(out - y))
            if loss == "sequence_cross_entropy":
                real = tf.cast(y != -1, out.dtype)
                per = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=tf.maximum(y, 0), logits=out)
                return tf.reduce_sum(per * real) / tf.maximum(tf.reduce_sum(real), 1.0)
            return tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out))

        def train_step(xs, y):
            with tf.GradientTape() as tape:
                value = loss_fn(model(*xs), y)
            grads = tape.gradient(value, params)
            opt.apply(grads, params)
            return value

        def scaled_step(xs, y):
            scale = self.scale.read_value()
            with tf.GradientTape() as tape:
                value = loss_fn(model(*xs), y)
                scaled_value = value * scale
            grads = [tf.convert_to_tensor(g) / scale
                     for g in tape.gradient(scaled_value, params)]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

            def update():
                opt.apply(grads, params)
                return tf.constant(True)

            tf.cond(finite, update, lambda: tf.constant(False))
            good = tf.where(finite, self.good + 1, 0)
            grow = good == GROWTH_INTERVAL
            self.scale.assign(tf.where(finite, tf.where(grow, scale * 2.0, scale),
                                       scale * 0.5))
            self.good.assign(tf.where(grow, 0, good))
            return value

        self.train_step = tf.function(scaled_step if scaled else train_step,
                                      jit_compile=(mode == "xla"))

    def put(self, x, y):
        with tf.device(self.place):
            if self.lengths:
                xs = tuple(tf.constant(np.asarray(a), dtype=tf.int32) for a in x)
            elif np.asarray(x).dtype.kind in "iu":
                xs = (tf.constant(np.asarray(x), dtype=tf.int32),)
            else:
                xs = (tf.constant(np.asarray(x), dtype=self.dtype),)
            y = tf.constant(np.asarray(y), dtype=self.dtype if self.loss == "mse" else tf.int64)
            return tuple(tf.identity(a) for a in xs), tf.identity(y)

    def step(self, batch):
        if self.scope is None:
            return float(self.train_step(*batch))
        with tf.device(self.scope):
            return float(self.train_step(*batch))


def build(arch, weights, loss, optimizer, *, input_shape, dtype="float32", device="cpu",
          mode="xla", precision=None):
    """A trainer (see ``rosetta.conformance.bench.baselines``)."""
    return Trainer(arch, weights, loss, optimizer, dtype, device, mode, input_shape, precision)
