"""Hand-written JAX: a ``flax.linen`` module, an ``optax`` optimizer in a flax ``TrainState`` and
one ``jax.jit`` step that donates the old state. No rosetta import (see ``__init__``)."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

HIGHEST = jax.lax.Precision.HIGHEST  # full float32 matmuls (no TF32 / bf16 passes on GPU)


class MLP(nn.Module):
    features: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        for i, n in enumerate(self.features):
            x = nn.Dense(n, dtype=self.dtype, param_dtype=self.dtype, precision=HIGHEST)(x)
            if i < len(self.features) - 1:
                x = nn.relu(x)
        return x


class CNN(nn.Module):
    c1: int
    c2: int
    classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding="SAME", dtype=self.dtype,
                                 param_dtype=self.dtype, precision=HIGHEST)
        x = nn.relu(conv(self.c1)(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(conv(self.c2)(x))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.classes, dtype=self.dtype, param_dtype=self.dtype,
                        precision=HIGHEST)(x)


class Trainer:
    def __init__(self, arch, weights, loss, optimizer, dtype, device, mode):
        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.dtype = jnp.dtype(dtype)
        self.device = jax.devices("gpu" if device in ("gpu", "cuda") else "cpu")[0]
        cast = lambda a: jnp.asarray(a, self.dtype)  # noqa: E731
        if arch == "mlp":
            model = MLP([k.shape[-1] for k, _ in weights], self.dtype)
            names = [f"Dense_{i}" for i in range(len(weights))]
        else:
            model = CNN(weights[0][0].shape[-1], weights[1][0].shape[-1],
                        weights[2][0].shape[-1], self.dtype)
            names = ["Conv_0", "Conv_1", "Dense_0"]
        params = {n: {"kernel": cast(k), "bias": cast(b)} for n, (k, b) in zip(names, weights)}
        o = optimizer
        tx = (optax.adam(o["lr"], b1=o["beta1"], b2=o["beta2"], eps=o["eps"])
              if o["name"] == "adam" else
              optax.sgd(o["lr"], momentum=o["momentum"] or None, nesterov=o["nesterov"]))
        state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        self.state = jax.device_put(state, self.device)
        self.int_labels = loss == "softmax_cross_entropy"

        def loss_fn(params, x, y):
            out = model.apply({"params": params}, x)
            if self.int_labels:
                return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
            return jnp.mean((out - y) ** 2)

        @functools.partial(jax.jit, donate_argnums=0)
        def train_step(state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(state.params, x, y)
            return state.apply_gradients(grads=grads), loss

        self.train_step = train_step

    def put(self, x, y):
        y = np.asarray(y, np.int32 if self.int_labels else self.dtype)
        return jax.device_put((np.asarray(x, self.dtype), y), self.device)

    def step(self, batch):
        self.state, loss = self.train_step(self.state, *batch)
        return float(loss)


def build(arch, weights, loss, optimizer, *, input_shape, dtype="float32", device="cpu",
          mode="jit"):
    """A trainer (see ``rosetta.conformance.baselines``)."""
    return Trainer(arch, weights, loss, optimizer, dtype, device, mode)
