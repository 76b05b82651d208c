"""Hand-written TensorFlow: ``tf.Variable``s in a ``tf.Module``, the update rule written with
``tf`` ops, and one ``tf.function(jit_compile=True)`` step (mode ``"function"``: without
``jit_compile``). No rosetta import (see ``__init__``).

Keras is deliberately not used: its Adam adds epsilon before the bias correction and its SGD folds
the learning rate into the momentum buffer, so it would not train to the same numbers; a Keras
user's timing is a different comparison.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class Model(tf.Module):
    def __init__(self, arch, weights, dtype):
        super().__init__()
        self.arch = arch
        self.kernels = [tf.Variable(k, dtype=dtype) for k, _ in weights]
        self.biases = [tf.Variable(b, dtype=dtype) for _, b in weights]
        self.params = [v for pair in zip(self.kernels, self.biases) for v in pair]

    def __call__(self, x):
        if self.arch == "cnn":
            (k1, k2, kd), (b1, b2, bd) = self.kernels, self.biases
            x = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME") + b1)
            x = tf.nn.max_pool2d(x, 2, 2, "VALID")
            x = tf.nn.relu(tf.nn.conv2d(x, k2, 1, "SAME") + b2)
            return tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), kd) + bd
        if len(x.shape) > 2:
            x = tf.reshape(x, [tf.shape(x)[0], -1])
        last = len(self.kernels) - 1
        for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
            x = tf.matmul(x, k) + b
            if i < last:
                x = tf.nn.relu(x)
        return x


class Adam(tf.Module):
    """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr m_hat / (sqrt(v_hat) + eps)."""

    def __init__(self, params, lr, beta1, beta2, eps):
        super().__init__()
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        self.m = [tf.Variable(tf.zeros_like(p)) for p in params]
        self.v = [tf.Variable(tf.zeros_like(p)) for p in params]
        self.t = tf.Variable(0.0, dtype=params[0].dtype)

    def apply(self, grads, params):
        self.t.assign_add(1.0)
        c1 = 1.0 - tf.pow(tf.constant(self.b1, self.t.dtype), self.t)
        c2 = 1.0 - tf.pow(tf.constant(self.b2, self.t.dtype), self.t)
        for g, p, m, v in zip(grads, params, self.m, self.v):
            m.assign(self.b1 * m + (1.0 - self.b1) * g)
            v.assign(self.b2 * v + (1.0 - self.b2) * tf.square(g))
            p.assign_sub(self.lr * (m / c1) / (tf.sqrt(v / c2) + self.eps))


class SGD(tf.Module):
    """v = mu v + g; p -= lr v (nesterov: p -= lr (g + mu v)); no momentum: p -= lr g."""

    def __init__(self, params, lr, momentum, nesterov):
        super().__init__()
        self.lr, self.mu, self.nesterov = lr, momentum, nesterov
        self.v = [tf.Variable(tf.zeros_like(p)) for p in params] if momentum else None

    def apply(self, grads, params):
        for i, (g, p) in enumerate(zip(grads, params)):
            if self.v is None:
                p.assign_sub(self.lr * g)
                continue
            v = self.v[i]
            v.assign(self.mu * v + g)
            p.assign_sub(self.lr * (g + self.mu * v if self.nesterov else v))


class Trainer:
    def __init__(self, arch, weights, loss, optimizer, dtype, device, mode):
        tf.config.experimental.enable_tensor_float_32_execution(False)
        self.dtype = tf.as_dtype(dtype)
        # placed explicitly only to run on the CPU of a machine that has a GPU (the default
        # placement would pick the GPU); otherwise TensorFlow's own placement is used
        gpus = tf.config.list_physical_devices("GPU")
        self.scope = "/CPU:0" if device == "cpu" and gpus else None
        with tf.device(self.scope or ("/GPU:0" if gpus else "/CPU:0")):
            self.model = Model(arch, weights, self.dtype)
            params = self.model.params
            o = optimizer
            self.opt = (Adam(params, o["lr"], o["beta1"], o["beta2"], o["eps"])
                        if o["name"] == "adam" else
                        SGD(params, o["lr"], o["momentum"], o["nesterov"]))
        self.int_labels = loss == "softmax_cross_entropy"
        model, opt = self.model, self.opt

        def loss_fn(out, y):
            if self.int_labels:
                return tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out))
            return tf.reduce_mean(tf.square(out - y))

        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(model(x), y)
            grads = tape.gradient(loss, model.params)
            opt.apply(grads, model.params)
            return loss

        self.train_step = tf.function(train_step, jit_compile=(mode == "xla"))

    def put(self, x, y):
        with tf.device(self.scope or ("/GPU:0" if tf.config.list_physical_devices("GPU")
                                      else "/CPU:0")):
            x = tf.constant(np.asarray(x), dtype=self.dtype)
            y = tf.constant(np.asarray(y), dtype=tf.int64 if self.int_labels else self.dtype)
            return tf.identity(x), tf.identity(y)

    def step(self, batch):
        if self.scope is None:
            return float(self.train_step(*batch))
        with tf.device(self.scope):
            return float(self.train_step(*batch))


def build(arch, weights, loss, optimizer, *, input_shape, dtype="float32", device="cpu",
          mode="xla"):
    """A trainer (see ``rosetta.conformance.baselines``)."""
    return Trainer(arch, weights, loss, optimizer, dtype, device, mode)
