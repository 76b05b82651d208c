"""The bias add of the product ops, with its gradient accumulated in float32.

y = p + b, b along p's last axis: the bias gradient db = Σ_{leading axes} ∂L/∂y is a reduction,
and a reduction accumulates in float32 (``rosetta.precision``), rounded once to the bias's
type: the one rule of every backend (torch's reduced-type sums accumulate in float32; the JAX
lowering, ``rosetta.backends.jax.bias``). TensorFlow's XLA step already does (tf2xla sums bf16
and float16 in float32), but the graph runtime's ``BiasAddGrad`` kernel (mode ``"function"``)
accumulates a bf16 gradient in bf16: 1024 rows of a Dense bias gradient of -3.37 came out
-1.0. So a low-type bias add has its own gradient, the same in both modes; float32 and
float64 keep ``tf.nn.bias_add``."""

from __future__ import annotations

import tensorflow as tf

LOW = (tf.bfloat16, tf.float16)


@tf.custom_gradient
def _low_bias_add(p, b):
    def grad(g):
        axes = list(range(g.shape.rank - 1))
        return g, tf.cast(tf.reduce_sum(tf.cast(g, tf.float32), axes), b.dtype)
    return tf.nn.bias_add(p, b), grad


def add_bias(p, b):
    """p + b (b along p's last axis); a low-type bias gradient accumulated in float32."""
    if p.dtype in LOW:
        return _low_bias_add(p, tf.cast(b, p.dtype))
    return tf.nn.bias_add(p, b)
