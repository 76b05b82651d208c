"""Lowerings of BatchNorm, LayerNorm, RMSNorm and GroupNorm (explicit epsilon, biased variance)."""

from __future__ import annotations

import tensorflow as tf

from rosetta.backends.tensorflow.lowering import NodeModule, lowers
from rosetta.ops.normalization import unbiased_factor


@lowers("BatchNorm")
class BatchNorm(NodeModule):
    """Statistics over every axis but the last. training: mean and *biased* variance of the batch
    (tf.nn.moments); running <- momentum * running + (1 - momentum) * batch, the variance times
    n / (n - 1) when ``running_var == "unbiased"`` (n values per channel: of the global batch
    under data parallelism, ``global_moments``), assigned only when ``update_state``. eval: the
    running statistics. Both normalise as (x - mean) * (scale / sqrt(var + epsilon)) + bias, with
    the explicit epsilon (Keras: 1e-3): the centred x first, rather than
    tf.nn.batch_normalization's x * inv + (bias - mean * inv), which cancels."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.momentum = node.attrs["momentum"]
        self.epsilon = node.attrs["epsilon"]
        # the batch axis and every per-example axis but the last (channel) one
        self.axes = tuple(range(len(node.in_types[0].shape)))
        self.unbiased = node.attrs["running_var"] == "unbiased"
        # data parallel (distributed.py): (x, axes) -> (mean, var) over every replica's batch;
        # None: this replica's batch alone
        self.global_moments = None

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if training:
            if self.global_moments is not None:
                mean, var = self.global_moments(x, self.axes)
            else:
                mean, var = tf.nn.moments(x, axes=list(self.axes))
            if update_state:
                m = self.momentum
                stored = tf.stop_gradient(var)
                if self.unbiased:
                    stored = stored * self._unbias(x)
                self.mean.assign(m * self.mean + (1 - m) * tf.stop_gradient(mean))
                self.var.assign(m * self.var + (1 - m) * stored)
        else:
            mean, var = self.mean, self.var
        # one factor per channel, so the activation is touched by a subtract, a multiply and an
        # add (dividing it by sqrt(var + eps) and then scaling cost resnet 1.3x its baseline)
        return (x - mean) * (self.scale / tf.sqrt(var + self.epsilon)) + self.bias

    def _unbias(self, x):
        """n / (n - 1) for the n values per channel of the (global) batch: a Python number when
        the batch size is known at trace time (n == 1 refused there), else a tensor."""
        replicas = (tf.distribute.get_replica_context().num_replicas_in_sync
                    if self.global_moments is not None else 1)
        if x.shape.is_fully_defined():
            return unbiased_factor(x.shape.num_elements() // x.shape[-1] * replicas)
        n = tf.cast(tf.size(x) // tf.shape(x)[-1] * replicas, x.dtype)
        return n / (n - 1)


@lowers("InstanceNorm2D")
class InstanceNorm2D(NodeModule):
    """Statistics over H and W of each example. training: mean and *biased* variance per
    (example, channel) (tf.nn.moments over axes 1, 2); running <- momentum * running +
    (1 - momentum) * the batch average of the mean and of the *unbiased* variance, assigned only
    when ``update_state``. eval: the running statistics. Normalises like ``BatchNorm``."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.momentum = node.attrs["momentum"]
        self.epsilon = node.attrs["epsilon"]
        h, w, _ = node.in_types[0].shape
        self.unbias = h * w / (h * w - 1)
        # set by the data-parallel engine (distributed.py); refused: the running statistics
        # would average one replica's batch only
        self.global_moments = None

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if training and self.global_moments is not None:
            raise RuntimeError("InstanceNorm2D: data-parallel training is not supported (its "
                               "running statistics would average one replica's batch only)")
        if training:
            mean, var = tf.nn.moments(x, axes=[1, 2], keepdims=True)
            if update_state:
                m = self.momentum
                batch_mean = tf.reduce_mean(tf.stop_gradient(mean), axis=[0, 1, 2])
                batch_var = tf.reduce_mean(tf.stop_gradient(var), axis=[0, 1, 2]) * self.unbias
                self.mean.assign(m * self.mean + (1 - m) * batch_mean)
                self.var.assign(m * self.var + (1 - m) * batch_var)
        else:
            mean, var = self.mean, self.var
        return (x - mean) * (self.scale / tf.sqrt(var + self.epsilon)) + self.bias


@lowers("LayerNorm")
class LayerNorm(NodeModule):
    """Over the last axis, biased variance (tf.nn.moments), explicit epsilon."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.epsilon = node.attrs["epsilon"]

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) / tf.sqrt(var + self.epsilon) * self.scale + self.bias


@lowers("RMSNorm")
class RMSNorm(NodeModule):
    """y = x / sqrt(mean(x^2) + epsilon) * scale over the last axis, explicit epsilon."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.epsilon = node.attrs["epsilon"]

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        ms = tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)
        return x / tf.sqrt(ms + self.epsilon) * self.scale


@lowers("GroupNorm")
class GroupNorm(NodeModule):
    """Channels split into contiguous groups: x reshaped to (N, ..., G, C/G), mean and biased
    variance (tf.nn.moments) per example and group over every spatial axis and the group's
    channels, explicit epsilon, then the per-channel scale and bias."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        shape = tuple(node.in_types[0].shape)
        g = node.attrs["groups"]
        self.shape = shape
        self.grouped = (*shape[:-1], g, shape[-1] // g)
        self.axes = [*range(1, len(shape)), len(shape) + 1]
        self.epsilon = node.attrs["epsilon"]

    def __call__(self, xs, training=False, update_state=False):
        x = tf.reshape(xs[0], [-1, *self.grouped])
        mean, var = tf.nn.moments(x, axes=self.axes, keepdims=True)
        y = tf.reshape((x - mean) / tf.sqrt(var + self.epsilon), [-1, *self.shape])
        return y * self.scale + self.bias
