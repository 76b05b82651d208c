"""Lowerings of Reduce, Softmax and LogSoftmax (``rosetta.ops.reduction``)."""

from __future__ import annotations

import tensorflow as tf

from rosetta.backends.tensorflow.lowering import NodeModule, lowers
from rosetta.ops.reduction import normalize_axes
from rosetta.ops.registry import REGISTRY


@lowers("Reduce")
class Reduce(NodeModule):
    """tf.reduce_sum / mean / max / min; var written out as sum((x - mean)^2) / (n - c)
    (tf.math.reduce_variance has no correction)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        rank = len(node.in_types[0].shape)
        axes = normalize_axes(REGISTRY["Reduce"], a["axes"], rank, node.name)
        self.axes = [i + 1 for i in axes]
        self.fn, self.keep, self.correction = a["fn"], a["keepdims"], a["correction"]
        n = 1
        for i in axes:
            n *= node.in_types[0].shape[i]
        self.n = n

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if self.fn == "var":
            d = x - tf.reduce_mean(x, axis=self.axes, keepdims=True)
            return tf.reduce_sum(d * d, axis=self.axes, keepdims=self.keep) / float(
                self.n - self.correction)
        f = {"sum": tf.reduce_sum, "mean": tf.reduce_mean, "max": tf.reduce_max,
             "min": tf.reduce_min}[self.fn]
        return f(x, axis=self.axes, keepdims=self.keep)


@lowers("Softmax", "LogSoftmax")
class AxisSoftmax(NodeModule):
    """tf.nn.softmax / log_softmax over the tensor axis of the per-example ``axis``."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.axis = normalize_axes(REGISTRY[node.op], (node.attrs["axis"],),
                                   len(node.in_types[0].shape), node.name)[0] + 1
        self.fn = tf.nn.softmax if node.op == "Softmax" else tf.nn.log_softmax

    def __call__(self, xs, training=False, update_state=False):
        return self.fn(xs[0], axis=self.axis)


@lowers("Cumsum")
class Cumsum(NodeModule):
    """tf.math.cumsum over the tensor axis of the per-example ``axis``."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.axis = normalize_axes(REGISTRY[node.op], (node.attrs["axis"],),
                                   len(node.in_types[0].shape), node.name)[0] + 1

    def __call__(self, xs, training=False, update_state=False):
        return tf.math.cumsum(xs[0], axis=self.axis)
