"""Lowerings of the elementwise ops: Activation (the one table of ``lowering.py``) and HardSwish
(Add and Multiply are in ``math.py``)."""

from __future__ import annotations

import tensorflow as tf

from rosetta.backends.tensorflow.lowering import NodeModule, activation, lowers
from rosetta.ops.elementwise import key as activation_key


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
