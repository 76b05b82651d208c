"""Lowering of Dropout (inverted; an injected keep-mask in conformance mode)."""

from __future__ import annotations

import tensorflow as tf

from rosetta.backends.tensorflow.lowering import NodeModule, lowers


@lowers("Dropout")
class Dropout(NodeModule):
    """training: tf.nn.experimental.stateless_dropout (keep with probability 1 - rate, scale by
    1 / (1 - rate)) with a seed drawn from the model's ``tf.random.Generator`` (seeded from the
    spec's seed; masks differ from other frameworks' RNGs by nature); eval: identity.
    An injected keep-mask (conformance mode) replaces the RNG: y = x * mask / (1 - rate)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.rate = node.attrs["rate"]
        self.rng = ctx.rng

    def __call__(self, xs, training=False, update_state=False, mask=None):
        x = xs[0]
        if not training:
            return x
        if mask is not None:   # the mask in x's type (a mixed policy's bf16 activations)
            return x * tf.cast(mask, x.dtype) / (1.0 - self.rate)
        if self.rate == 0.0:
            return x
        seed = self.rng.make_seeds(1)[:, 0]
        return tf.nn.experimental.stateless_dropout(x, rate=self.rate, seed=seed)


@lowers("StochasticDepth")
class StochasticDepth(Dropout):
    """One keep-mask value per example (y = x * mask / (1 - rate)): the program's drawn or
    injected mask of shape (batch, 1, ..., 1); without one, drawn here per example."""

    def __call__(self, xs, training=False, update_state=False, mask=None):
        x = xs[0]
        if not training or mask is not None or self.rate == 0.0:
            return super().__call__(xs, training, update_state, mask)
        seed = self.rng.make_seeds(1)[:, 0]
        shape = tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], 0)
        u = tf.random.stateless_uniform(shape, seed, dtype=x.dtype)
        return x * tf.cast(u >= self.rate, x.dtype) / (1.0 - self.rate)
