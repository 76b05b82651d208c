"""Lowerings of LSTM, GRU and SimpleRNN (merged into ``layers.LOWERINGS``).

One flax module per node (``Recurrent``, named by the node) whose parameters carry the canonical
names and layouts (``kernel`` (C, G*H), ``recurrent_kernel`` (H, G*H), ``bias``, GRU's
``recurrent_bias`` (LSTM's and SimpleRNN's with ``recurrent_bias=True``, added to the input
projection's bias: the same sum, two parameters), ``backward_`` copies), and ``jax.lax.scan`` over time. Not flax's ``nn.RNN``
over its cells: they keep one Dense per gate (``ii``, ``if``, ... / ``hi``, ``hf``, ...) instead
of the canonical fused (C, G*H) kernels, and flax's GRUCell has no recurrent bias on the r and z
gates (only ``hn`` has one), so the canonical ``recurrent_bias`` cannot be loaded into it (and
it is reset-after only: ``GRU(reset_after=False)`` is its own step here). The
math is the same scan: each step does its input projection x_t K + b and its recurrent matmul
h R, all with ``Precision.HIGHEST``. (Projecting every step up front, one (N*T, C) @ K matmul
before the scan, measured 1.2-1.3x slower on this machine's CPU: LSTM train step, N=32, T=32,
C=32, H=64, float32, against flax's ``nn.RNN(nn.OptimizedLSTMCell)``; per step it is on par.)

Masking: mask_t = t < lengths; state = where(mask_t, new, old); output = where(mask_t, h, 0).
The backward direction scans t = T-1 .. 0 (``reverse=True``) with the same mask: the padded steps
come first and leave the zero state as it is, so it visits each example's real steps length-1 ..
0."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta.backends.jax.bias import add_bias
from rosetta.backends.jax.lowering import HIGHEST, lowers
from rosetta.ops.recurrent import param_names


_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


def _cell(op: str, activation: str, reset_after: bool = True):
    """step(xw_t, state, recurrent, recurrent_bias) -> new state tuple (h first);
    ``recurrent_bias`` None where the op has none."""
    if op == "LSTM":
        def step(xw_t, state, r, rb):
            h, c = state
            i, f, g, o = jnp.split(xw_t + jnp.dot(h, r, precision=HIGHEST), 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            return jax.nn.sigmoid(o) * jnp.tanh(c), c
    elif op == "GRU" and not reset_after:   # n = tanh(a_n + (r ⊙ h) R_n + rb_n)
        def step(xw_t, state, r, rb):
            (h,) = state
            hh = 2 * h.shape[-1]
            a_r, a_z, a_n = jnp.split(xw_t, 3, axis=-1)
            u_rz = jnp.dot(h, r[:, :hh], precision=HIGHEST)
            u_r, u_z = jnp.split(u_rz if rb is None else u_rz + rb[:hh], 2, axis=-1)
            rg = jax.nn.sigmoid(a_r + u_r)
            z = jax.nn.sigmoid(a_z + u_z)
            u_n = jnp.dot(rg * h, r[:, hh:], precision=HIGHEST)
            n = jnp.tanh(a_n + (u_n if rb is None else u_n + rb[hh:]))
            return ((1.0 - z) * n + z * h,)
    elif op == "GRU":
        def step(xw_t, state, r, rb):
            (h,) = state
            a_r, a_z, a_n = jnp.split(xw_t, 3, axis=-1)
            u = jnp.dot(h, r, precision=HIGHEST)
            u_r, u_z, u_n = jnp.split(u if rb is None else u + rb, 3, axis=-1)
            rg = jax.nn.sigmoid(a_r + u_r)
            z = jax.nn.sigmoid(a_z + u_z)
            n = jnp.tanh(a_n + rg * u_n)
            return ((1.0 - z) * n + z * h,)
    else:
        act = jnp.tanh if activation == "tanh" else jax.nn.relu

        def step(xw_t, state, r, rb):
            (h,) = state
            return (act(xw_t + jnp.dot(h, r, precision=HIGHEST)),)
    return step


class Recurrent(nn.Module):
    """A canonical LSTM / GRU / SimpleRNN node: call with x (N, T, C) and optional lengths (N,)."""

    op: str
    units: int
    return_sequences: bool
    bidirectional: bool
    activation: str = "tanh"
    recurrent_bias: bool = False
    reset_after: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, lengths=None):
        n, steps, c = x.shape
        g = _GATES[self.op] * self.units
        shapes = {"kernel": (c, g), "recurrent_kernel": (self.units, g), "bias": (g,),
                  "recurrent_bias": (g,)}
        p = {name: self.param(name, nn.initializers.zeros, shapes[name.removeprefix("backward_")],
                              self.dtype)
             for name in param_names(self.op, self.bidirectional, self.recurrent_bias)}
        step = _cell(self.op, self.activation, self.reset_after)
        x = jnp.asarray(x, self.dtype)
        mask = (None if lengths is None
                else (jnp.arange(steps)[:, None] < lengths[None, :])[..., None])  # (T, N, 1)
        xs_t = jnp.swapaxes(x, 0, 1)  # (T, N, C)
        outs = []
        for prefix in ("", "backward_") if self.bidirectional else ("",):
            k, b = p[prefix + "kernel"], p[prefix + "bias"]
            r, rb = p[prefix + "recurrent_kernel"], p.get(prefix + "recurrent_bias")
            if self.op != "GRU" and rb is not None:  # z = x K + h R + b + rb: one step bias
                b = b + rb
            zero = jnp.zeros((n, self.units), self.dtype)
            state = (zero, zero) if self.op == "LSTM" else (zero,)

            def body(state, inputs, k=k, b=b, r=r, rb=rb):
                if mask is None:
                    new = step(add_bias(jnp.dot(inputs, k, precision=HIGHEST), b), state, r, rb)
                    return new, (new[0] if self.return_sequences else None)
                x_t, m = inputs
                new = step(add_bias(jnp.dot(x_t, k, precision=HIGHEST), b), state, r, rb)
                state = tuple(jnp.where(m, s_new, s) for s_new, s in zip(new, state))
                return state, (jnp.where(m, new[0], 0.0) if self.return_sequences else None)

            final, seq = jax.lax.scan(body, state, xs_t if mask is None else (xs_t, mask),
                                      reverse=bool(prefix))
            outs.append(jnp.swapaxes(seq, 0, 1) if self.return_sequences else final[0])
        return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)


@lowers("LSTM", "GRU", "SimpleRNN")
def recurrent(node, xs, ctx):
    a = node.attrs
    module = Recurrent(node.op, a["units"], a["return_sequences"], a["bidirectional"],
                       a.get("activation", "tanh"), a.get("recurrent_bias", False),
                       a.get("reset_after", True), dtype=ctx.dtype, name=node.name)
    return module(xs[0], xs[1] if len(xs) > 1 else None)
