"""Lowerings of Dense and Embedding."""

from __future__ import annotations

import tensorflow as tf

from rosetta.backends.tensorflow.bias import add_bias
from rosetta.backends.tensorflow.lowering import NodeModule, activation, lowers


@lowers("Dense")
class Dense(NodeModule):
    """y = f(x @ kernel + bias); inputs of rank > 2 are flattened to 2-D around one matmul."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.out_shape = tuple(node.out_type.shape)  # per example
        self.act = activation(node.attrs["activation"])

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if x.shape.rank > 2:
            y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), self.kernel)
            y = tf.reshape(y, [-1, *self.out_shape])
        else:
            y = tf.matmul(x, self.kernel)
        if "bias" in self.param_names:
            y = add_bias(y, self.bias)
        return self.act(y)


@lowers("Embedding")
class Embedding(NodeModule):
    """tf.gather rows of the (vocab, dim) table. Out-of-range ids raise on TensorFlow's CPU kernel
    but are clamped under XLA, so ``Program`` checks the ids on the host before its XLA steps.
    ``padding_idx`` p: the rows read at ids == p pass through ``tf.stop_gradient`` (a ``where``
    selects, so the forward is exactly the gather), so row p's gradient is exactly 0."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.padding_idx = node.attrs["padding_idx"]

    def __call__(self, xs, training=False, update_state=False):
        y = tf.gather(self.embedding, xs[0])
        pad = self.padding_idx
        if pad is None:
            return y
        at_pad = tf.expand_dims(tf.equal(xs[0], tf.cast(pad, xs[0].dtype)), -1)
        return tf.where(at_pad, tf.stop_gradient(y), y)
