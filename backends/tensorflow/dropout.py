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
        if mask is not None:
            return x * mask / (1.0 - self.rate)
        if self.rate == 0.0:
            return x
        seed = self.rng.make_seeds(1)[:, 0]
        return tf.nn.experimental.stateless_dropout(x, rate=self.rate, seed=seed)
