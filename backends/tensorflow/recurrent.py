"""Lowerings of LSTM, GRU and SimpleRNN (merged into ``layers.LOWERINGS``).

The TensorFlow backend is a ``tf.Module`` without Keras (Keras 3 cannot be imported next to it,
see ``backends/tensorflow/__init__.py``), so Keras's fused LSTM/GRU layers (and their cuDNN
kernels) are not available. The cell is written here with ``tf`` ops, canonical layouts and gate
orders as they are (no conversion): the input projection of every step is one matmul up front,
x (N*T, C) @ K + b, then ``tf.scan`` over time does one recurrent matmul per step. Measured
under ``tf.function(jit_compile=True)`` on this machine's CPU (LSTM, N=32, T=32, C=32, H=64,
float32, forward + backward + update): ``tf.scan`` compiles in 5 s and steps in 16 ms; a
Python-unrolled loop over the static T took 112 s to compile and 21 ms a step.

TensorFlow's fused recurrent kernels outside Keras, and which one is used:

* ``BlockLSTM`` (one op for the whole sequence, gradient ``BlockLSTMGrad`` registered): the LSTM
  in float32 and float16 when the step is NOT XLA-compiled (mode ``"function"``; not in the
  SavedModel export, see ``portable_graph``). It has kernels for half and float only (no
  float64) and none for XLA (``jit_compile=True`` refuses it: "No registered 'BlockLSTM'
  OpKernel for XLA_CPU_JIT"), so float64 and the XLA steps keep ``tf.scan``. Paired blocks in
  one process, one thread, float32 (``rosetta`` zoo ``lstm``, batch 32, T 16, masked; and the
  sweep point N=32, T=32, C=32, H=64), median step time and median ratio of paired blocks:
  zoo lstm: BlockLSTM under tf.function 3.63 ms, tf.scan under tf.function 13.0 ms, tf.scan
  under XLA 5.84 ms (BlockLSTM / XLA scan 0.66); sweep point: 9.31 ms, 25.3 ms, 21.2 ms (0.43),
  torch's ``nn.LSTM`` 11.1 ms there (BlockLSTM / torch 0.75; XLA scan / torch 1.79). Again
  after every run became unmasked (below), on a less loaded machine: zoo lstm 1.36, 3.63,
  1.65 ms (0.81), torch 5.32 ms; sweep point 3.22, 8.13, 6.70 ms (0.61), torch 4.56 ms (0.93).
  ``BlockLSTMV2`` takes the canonical gate order as it is, but TensorFlow registers V1's
  gradient function for it (``rnn_grad._block_lstm_grad`` calls ``block_lstm_grad``, which
  reads the gates in V1's order): its gradients are wrong (0.15 off on a 3-unit LSTM), so V1
  is used with the gate blocks reordered.
* ``LSTMBlockCell`` / ``GRUBlockCell``: one step each (a loop is still needed) and no gradient
  registered in Python. ``GRUBlockCell`` is reset-before (c = tanh([x, r h] W_c + b_c), the
  canonical ``reset_after=False``) but one step, no gradient, float32 only; the canonical GRU's
  default is reset-after. So the GRU has no fused op here and keeps ``tf.scan`` in every mode.
* ``CudnnRNN*``: GPU kernels only (this backend's tensorflow-cpu has none).

Masking: the canonical rule is mask_t = t < lengths, state = where(mask_t, new, old), output =
where(mask_t, h, 0), the backward direction visiting each example's real steps length-1 .. 0.
Padding is always at the end, so every run here is unmasked over all T steps (tf.scan or
BlockLSTM alike) and the rule is applied around it (``_Recurrent._direction``): the same numbers,
and no per-step ``where``. (The first form, a ``where`` in every scan step, cost 1.6x the
hand-written baseline's GRU under tf.function.)"""

from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

from rosetta.backends.tensorflow import lowering
from rosetta.backends.tensorflow.lowering import NodeModule, lowers


# BlockLSTM's kernels: half and float only (no float64), and none for XLA
_BLOCK_LSTM_DTYPES = (tf.float16, tf.float32)


_portable = threading.local()


@contextlib.contextmanager
def portable_graph():
    """Trace every LSTM as ``tf.scan`` inside (``export.py``'s SavedModel): the TFLite converter
    refuses ``BlockLSTM`` even with ``SELECT_TF_OPS`` ("'tf.BlockLSTM' op is neither a custom op
    nor a flex op"), and converts the ``tf.scan`` form with them."""
    before = getattr(_portable, "on", False)
    _portable.on = True
    try:
        yield
    finally:
        _portable.on = before


def _maybe_xla() -> bool:
    """True when the step being traced is XLA-compiled, or when TensorFlow cannot tell."""
    return lowering.graph_in_xla is None or lowering.in_xla_context()


class _Recurrent(NodeModule):
    """Shared driver; subclasses define ``gates``, ``zero_state`` and ``cell``."""

    gates = 1
    recurrent_bias_in_cell = False   # GRU: rb inside r ⊙ (h R_n + rb_n); else added to b

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.units = a["units"]
        self.return_sequences = a["return_sequences"]
        self.directions = ("", "backward_") if a["bidirectional"] else ("",)
        self.steps, self.channels = node.in_types[0].shape

    def zero_state(self, n):
        return (tf.zeros([n, self.units], self.kernel.dtype),)

    def step_bias(self, prefix):
        """The bias added to every step's input projection: ``bias``, plus ``recurrent_bias``
        where the op has one outside its cell (LSTM, SimpleRNN with ``recurrent_bias=True``:
        the same sum as b + rb in the cell, two trained parameters)."""
        b = getattr(self, prefix + "bias")
        rb = getattr(self, prefix + "recurrent_bias", None)
        return b if rb is None or self.recurrent_bias_in_cell else b + rb

    def _direction(self, prefix, x, lengths):
        """One direction as the canonical masked recurrence computes it, from an unmasked run:
        the backward direction reverses each example within its length (``reverse_sequence``),
        runs forward and reverses back, which is the canonical visit order length-1 .. 0 from
        the zero state. Steps t >= length then come after every real step, so they touch only
        outputs that are masked to 0, and the final state is h at step length-1: the same
        numbers as where(mask_t, new, old) at every step, with no per-step mask."""
        n = tf.shape(x)[0]
        lens = (tf.fill([n], tf.constant(self.steps, tf.int64)) if lengths is None
                else tf.reshape(lengths, [-1]))
        if prefix:
            x = tf.reverse_sequence(x, lens, seq_axis=1, batch_axis=0)
        h = self._run(prefix, x)  # (N, T, H): h after every step
        if not self.return_sequences:
            return tf.gather(h, lens - 1, axis=1, batch_dims=1)
        if prefix:
            h = tf.reverse_sequence(h, lens, seq_axis=1, batch_axis=0)
        if lengths is None:
            return h
        mask = tf.range(self.steps, dtype=tf.int64)[None, :] < lengths  # (N, T)
        return tf.where(mask[:, :, None], h, tf.zeros_like(h))

    def _run(self, prefix, x):
        """h after every step t = 0 .. T-1 from the zero state: the input projections in one
        matmul, then ``tf.scan`` of ``cell`` over time."""
        recurrent = getattr(self, prefix + "recurrent_kernel")
        recurrent_bias = getattr(self, prefix + "recurrent_bias", None)
        n = tf.shape(x)[0]
        xw = (tf.matmul(tf.reshape(x, [-1, self.channels]), getattr(self, prefix + "kernel"))
              + self.step_bias(prefix))
        xw = tf.transpose(tf.reshape(xw, [n, self.steps, self.gates * self.units]), [1, 0, 2])
        states = tf.scan(lambda state, xw_t: self.cell(xw_t, state, recurrent, recurrent_bias),
                         xw, initializer=self.zero_state(n))
        return tf.transpose(states[0], [1, 0, 2])

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        lengths = tf.reshape(xs[1], [-1, 1]) if len(xs) > 1 else None
        outs = [self._direction(p, x, lengths) for p in self.directions]
        return outs[0] if len(outs) == 1 else tf.concat(outs, axis=-1)


@lowers("LSTM")
class LSTM(_Recurrent):
    """z = x_t K + b + h R (gates [i, f, g, o], one bias); c' = σ(f) c + σ(i) tanh(g),
    h' = σ(o) tanh(c').

    In float32 / float16 outside XLA the whole direction is TensorFlow's fused ``BlockLSTM``
    (see the module docstring); otherwise the ``tf.scan`` of ``_Recurrent``."""

    gates = 4

    def zero_state(self, n):
        z = tf.zeros([n, self.units], self.kernel.dtype)
        return (z, z)

    def cell(self, xw_t, state, recurrent, recurrent_bias):
        h, c = state
        i, f, g, o = tf.split(xw_t + tf.matmul(h, recurrent), 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c

    def _run(self, prefix, x):
        if (self.kernel.dtype not in _BLOCK_LSTM_DTYPES or _maybe_xla()
                or getattr(_portable, "on", False)):
            return super()._run(prefix, x)
        return self._block_run(prefix, x)

    def _block_run(self, prefix, x):
        """The whole run as one ``BlockLSTM``, on w = [K; R] (x_t and h concatenated) and b
        with the gate blocks reordered to its layout [i, g, f, o], ``forget_bias`` 0,
        ``cell_clip`` -1 (off), no peepholes. (``BlockLSTMV2`` takes the canonical order as it
        is, but TensorFlow registers V1's gradient for it, which reads V2's gates in V1's order:
        its gradients are wrong.)"""
        zero = tf.zeros([tf.shape(x)[0], self.units], self.kernel.dtype)
        no_peephole = tf.zeros([self.units], self.kernel.dtype)
        w = tf.concat([getattr(self, prefix + "kernel"),
                       getattr(self, prefix + "recurrent_kernel")], axis=0)
        h = tf.raw_ops.BlockLSTM(
            seq_len_max=tf.constant(self.steps, tf.int64), x=tf.transpose(x, [1, 0, 2]),
            cs_prev=zero, h_prev=zero, w=_ifgo_to_igfo(w), wci=no_peephole, wcf=no_peephole,
            wco=no_peephole, b=_ifgo_to_igfo(self.step_bias(prefix)), forget_bias=0.0,
            cell_clip=-1.0, use_peephole=False).h
        return tf.transpose(h, [1, 0, 2])


def _ifgo_to_igfo(t):
    """The last axis's four gate blocks from the canonical [i, f, g, o] to BlockLSTM's order."""
    i, f, g, o = tf.split(t, 4, axis=-1)
    return tf.concat([i, g, f, o], axis=-1)


@lowers("GRU")
class GRU(_Recurrent):
    """Gates [r, z, n], a = x_t K + b; r = σ(a_r + h R_r + rb_r), z = σ(a_z + h R_z + rb_z),
    h' = (1 - z) n + z h, with n = tanh(a_n + r (h R_n + rb_n)) (reset-after) or
    n = tanh(a_n + (r h) R_n + rb_n) (``reset_after=False``; rb = 0 without
    ``recurrent_bias``)."""

    gates = 3
    recurrent_bias_in_cell = True

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.reset_after = node.attrs["reset_after"]

    def cell(self, xw_t, state, recurrent, recurrent_bias):
        (h,) = state
        a_r, a_z, a_n = tf.split(xw_t, 3, axis=-1)
        if self.reset_after:
            u = tf.matmul(h, recurrent)
            u_r, u_z, u_n = tf.split(u if recurrent_bias is None else u + recurrent_bias, 3,
                                     axis=-1)
            r = tf.sigmoid(a_r + u_r)
            n_pre = a_n + r * u_n
        else:
            r_rz, r_n = recurrent[:, :2 * self.units], recurrent[:, 2 * self.units:]
            u_rz = tf.matmul(h, r_rz)
            if recurrent_bias is not None:
                u_rz = u_rz + recurrent_bias[:2 * self.units]
            u_r, u_z = tf.split(u_rz, 2, axis=-1)
            r = tf.sigmoid(a_r + u_r)
            n_pre = a_n + tf.matmul(r * h, r_n)
            if recurrent_bias is not None:
                n_pre = n_pre + recurrent_bias[2 * self.units:]
        z = tf.sigmoid(a_z + u_z)
        n = tf.tanh(n_pre)
        return ((1.0 - z) * n + z * h,)


@lowers("SimpleRNN")
class SimpleRNN(_Recurrent):
    """h' = act(x_t K + b + h R), act tanh or relu."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.act = tf.tanh if node.attrs["activation"] == "tanh" else tf.nn.relu

    def cell(self, xw_t, state, recurrent, recurrent_bias):
        (h,) = state
        return (self.act(xw_t + tf.matmul(h, recurrent)),)
