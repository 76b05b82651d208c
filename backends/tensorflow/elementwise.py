"""Lowerings of the elementwise ops: Activation (the one table of ``lowering.py``) and Add."""

from __future__ import annotations

import tensorflow as tf

from rosetta.backends.tensorflow.lowering import NodeModule, activation, lowers
from rosetta.ops.elementwise import key as activation_key


@lowers("Add")
class Add(NodeModule):
    """x_1 + x_2 + ... summed left to right, as the reference does."""

    def __call__(self, xs, training=False, update_state=False):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y


@lowers("Activation")
class Activation(NodeModule):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        name, kwargs = activation_key(node.attrs)
        self.act = activation(name, **kwargs)

    def __call__(self, xs, training=False, update_state=False):
        return self.act(xs[0])


@lowers("HardSwish")
class HardSwish(NodeModule):
    """x * relu6(x + 3) / 6 (tf.nn.relu6: min(max(z, 0), 6))."""

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        return x * tf.nn.relu6(x + 3.0) / 6.0


@lowers("Multiply")
class Multiply(NodeModule):
    """x_1 * x_2 * ... multiplied left to right; TensorFlow broadcasts size-1 axes and its
    gradient sums over them."""

    def __call__(self, xs, training=False, update_state=False):
        y = xs[0]
        for x in xs[1:]:
            y = y * x
        return y
