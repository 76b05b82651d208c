"""Lowerings of the pools: explicit pads of the one padding rule; average pools exclude padded
cells."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from rosetta.backends.tensorflow.lowering import NodeModule, lowers, nhwc_pads, pads_as_list
from rosetta.ops.windows import spatial_plan, time_plan, windows


@lowers("MaxPool1D")
class MaxPool1D(NodeModule):
    """tf.pad with -inf from the shared padding rule, then a VALID max pool (padded cells are
    never chosen)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        _, pads = time_plan(a, node.in_types[0].shape[0])
        self.pads = ((0, 0), tuple(pads), (0, 0))
        self.k, self.s = a["kernel_size"][0], a["strides"][0]

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if any(self.pads[1]):
            x = tf.pad(x, pads_as_list(self.pads), constant_values=float("-inf"))
        return tf.nn.max_pool1d(x, self.k, self.s, "VALID")


@lowers("AvgPool1D")
class AvgPool1D(NodeModule):
    """As AvgPool2D: a VALID average pool of the zero-padded input (sum / k) times the constant
    k / count, count = real cells per window (padded cells excluded)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        t = node.in_types[0].shape[0]
        out, pads = time_plan(a, t)
        self.pads = ((0, 0), tuple(pads), (0, 0))
        self.k, self.s = a["kernel_size"][0], a["strides"][0]
        ones = np.pad(np.ones(t), pads)
        count = np.array([ones[i * self.s:i * self.s + self.k].sum() for i in range(out)])
        self.rescale = (self.k / count)[None, :, None]  # (1, T', 1) float64

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if not any(self.pads[1]):
            return tf.nn.avg_pool1d(x, self.k, self.s, "VALID")
        x = tf.pad(x, pads_as_list(self.pads))
        y = tf.nn.avg_pool1d(x, self.k, self.s, "VALID")
        return y * tf.constant(self.rescale, dtype=x.dtype)


@lowers("MaxPool2D")
class MaxPool2D(NodeModule):
    """Padded cells are -inf (never chosen): tf.pad with -inf from the ``spatial_plan`` pads, then
    a VALID max pool (XLA has no pooling with explicit padding)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        _, pads = spatial_plan(a, node.in_types[0].shape[:2])
        self.pads = nhwc_pads(pads)
        self.ksize = tuple(a["kernel_size"])
        self.strides = tuple(a["strides"])

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if any(any(p) for p in self.pads):
            x = tf.pad(x, pads_as_list(self.pads), constant_values=float("-inf"))
        return tf.nn.max_pool2d(x, list(self.ksize), list(self.strides), "VALID")


@lowers("AvgPool2D")
class AvgPool2D(NodeModule):
    """Average over the real cells only: a VALID average pool of the zero-padded input (sum / K,
    K = kH * kW) times the constant K / count, count = real cells per window, counted once here in
    NumPy from the same padding plan (the sum / count rule; 'SAME' would also exclude padding but
    explicit pads cannot)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        hw = node.in_types[0].shape[:2]
        out, pads = spatial_plan(a, hw)
        self.pads = nhwc_pads(pads)
        self.ksize = tuple(a["kernel_size"])
        self.strides = tuple(a["strides"])
        ones = np.pad(np.ones((1, *hw, 1)), self.pads)
        count = sum(patch for _, patch in windows(ones, self.ksize, self.strides, (1, 1), out))
        self.rescale = (self.ksize[0] * self.ksize[1]) / count  # (1, H', W', 1) float64

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if not any(any(p) for p in self.pads):
            return tf.nn.avg_pool2d(x, list(self.ksize), list(self.strides), "VALID")
        x = tf.pad(x, pads_as_list(self.pads))
        y = tf.nn.avg_pool2d(x, list(self.ksize), list(self.strides), "VALID")
        return y * tf.constant(self.rescale, dtype=x.dtype)


@lowers("GlobalAvgPool2D")
class GlobalAvgPool2D(NodeModule):
    def __call__(self, xs, training=False, update_state=False):
        return tf.reduce_mean(xs[0], axis=[1, 2])


@lowers("GlobalMaxPool2D")
class GlobalMaxPool2D(NodeModule):
    def __call__(self, xs, training=False, update_state=False):
        return tf.reduce_max(xs[0], axis=[1, 2])


@lowers("SequencePool")
class SequencePool(NodeModule):
    """Mean or max over the real steps t < length of (N, T, C) (every step without lengths):
    a 0/1 step mask from ``tf.sequence_mask``; max puts -inf on padded steps."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.mode = node.attrs["mode"]
        self.steps = node.in_types[0].shape[0]

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if len(xs) == 1:
            return tf.reduce_mean(x, 1) if self.mode == "mean" else tf.reduce_max(x, 1)
        real = tf.sequence_mask(xs[1], self.steps, dtype=x.dtype)[..., None]     # (N, T, 1)
        if self.mode == "mean":
            return tf.reduce_sum(x * real, 1) / tf.cast(xs[1], x.dtype)[:, None]
        return tf.reduce_max(tf.where(real > 0, x, tf.constant(-math.inf, x.dtype)), 1)
