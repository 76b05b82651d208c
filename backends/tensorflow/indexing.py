"""Lowerings of the indexing ops: Slice (strided slice) and Gather (``tf.gather``, with
``batch_dims=1`` when the indices are an input)."""

from __future__ import annotations

import tensorflow as tf

from rosetta.backends.tensorflow.lowering import NodeModule, lowers
from rosetta.ops import REGISTRY
from rosetta.ops.indexing import constant_indices, slice_bounds
from rosetta.ops.shape import positive_axis


@lowers("Slice")
class Slice(NodeModule):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        shape = node.in_types[0].shape
        bounds = slice_bounds(REGISTRY["Slice"], node.attrs, shape, node.name)
        self.index = (slice(None), *(slice(*bounds[a]) if a in bounds else slice(None)
                                     for a in range(len(shape))))

    def __call__(self, xs, training=False, update_state=False):
        return xs[0][self.index]


@lowers("Gather")
class Gather(NodeModule):
    """Constant indices: tf.gather on the tensor axis. Indices as input: negative ones wrapped
    (idx + size), both sides broadcast to one batch (a batch-broadcast table is shared), then
    tf.gather(batch_dims=1). An index out of range, which only a computed index can be, raises
    on TensorFlow's CPU kernel and is clamped under XLA."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a, shape = node.attrs, node.in_types[0].shape
        self.axis = positive_axis(a["axis"], len(shape))
        self.size = shape[self.axis]
        self.idx = (None if a["indices"] is None else
                    constant_indices(REGISTRY["Gather"], a, self.size, node.name))
        self.padding_idx, self.trailing = a["padding_idx"], len(shape) - 1

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if self.idx is not None:
            return tf.gather(x, tf.constant(self.idx), axis=self.axis + 1)
        idx = xs[1]
        idx = tf.where(idx < 0, idx + self.size, idx)
        n = tf.maximum(tf.shape(x)[0], tf.shape(idx)[0])
        x = tf.broadcast_to(x, tf.concat([[n], tf.shape(x)[1:]], 0))
        idx = tf.broadcast_to(idx, tf.concat([[n], tf.shape(idx)[1:]], 0))
        y = tf.gather(x, idx, axis=self.axis + 1, batch_dims=1)
        if self.padding_idx is None:
            return y
        # padding_idx: the rows read at that id pass no gradient (a where selects: the forward
        # is the gather itself)
        at_pad = tf.equal(idx, tf.cast(self.padding_idx, idx.dtype))
        at_pad = tf.reshape(at_pad, tf.concat([tf.shape(idx), [1] * self.trailing], 0))
        return tf.where(at_pad, tf.stop_gradient(y), y)
