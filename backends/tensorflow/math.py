"""Lowerings of the tensor-math ops (``rosetta.ops.math``): Constant, Parameter, Expand, MatMul,
the broadcasting binary ops, the comparisons, Where and Unary.

TensorFlow's broadcasting over the full shape is the canonical rule (a batch-broadcast value is a
(1, ...) tensor). A scalar ``constant`` is a Python float, converted in the tensor's dtype.
Comparisons return int64, the backend's int dtype. ``tf.math.maximum``'s gradient goes to x at
ties (x >= y), torch's is split: ties have probability zero for random floats. Expand of a
batch-broadcast input takes the batch size of the run (``batch``, from the graph walk)."""

from __future__ import annotations

import operator

import numpy as np
import tensorflow as tf

from rosetta.backends.tensorflow.lowering import NodeModule, lowers
from rosetta.ops.math import Expand as ExpandOp


@lowers("Constant")
class Constant(NodeModule):
    """The value as a (1, *shape) tensor: floats in the model dtype, integers int64."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        v = np.array(node.attrs["value"])[None]
        self.value = tf.constant(v, ctx.dtype if v.dtype.kind == "f" else tf.int64)

    def __call__(self, xs, training=False, update_state=False):
        return self.value


@lowers("Parameter")
class Parameter(NodeModule):
    """The variable ``value`` (*shape) as a (1, *shape) tensor."""

    def __call__(self, xs, training=False, update_state=False):
        return self.value[None]


def full_rank(x, rank: int):
    """x with size-1 axes inserted after the batch axis up to ``rank`` per-example axes."""
    missing = rank + 1 - len(x.shape)
    if missing <= 0:
        return x
    return tf.reshape(x, tf.concat([tf.shape(x)[:1], [1] * missing, tf.shape(x)[1:]], 0))


@lowers("Expand")
class Expand(NodeModule):
    """tf.broadcast_to(x, (batch, *target)); ``batch`` is the run's for a batch-broadcast x."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.target = ExpandOp().target(node.attrs, node.in_types[0], node.name)

    def __call__(self, xs, training=False, update_state=False, batch=None):
        x = full_rank(xs[0], len(self.target))
        n = batch if batch is not None else tf.shape(x)[0]
        return tf.broadcast_to(x, tf.concat([[n], list(self.target)], 0))


@lowers("MatMul")
class MatMul(NodeModule):
    """tf.linalg.matmul per example (1-D operands a row / column; leading axes padded to one
    rank after the batch axis, then broadcast by matmul)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.a1 = len(node.in_types[0].shape) == 1
        self.b1 = len(node.in_types[1].shape) == 1

    def __call__(self, xs, training=False, update_state=False):
        a, b = xs
        if self.a1:
            a = a[..., None, :]
        if self.b1:
            b = b[..., None]
        rank = max(len(a.shape), len(b.shape)) - 1
        y = tf.linalg.matmul(full_rank(a, rank), full_rank(b, rank))
        if self.b1:
            y = y[..., 0]
        if self.a1:
            y = y[..., 0] if self.b1 else y[..., 0, :]
        return y


BINARY = {
    "Add": operator.add, "Subtract": operator.sub, "Multiply": operator.mul,
    "Divide": operator.truediv, "Power": tf.math.pow, "Maximum": tf.math.maximum,
    "Minimum": tf.math.minimum, "Equal": tf.math.equal, "Less": tf.math.less,
    "Greater": tf.math.greater,
}


@lowers(*BINARY)
class Binary(NodeModule):
    """x_1 op x_2 (op ...) left to right, or x op c / c op x with a scalar constant (converted
    to x's dtype first: tf.math functions take no Python float for a float64 tensor)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.fn = BINARY[node.op]
        self.constant, self.reverse = node.attrs["constant"], node.attrs["reverse"]
        self.int_constant = node.in_types[0].kind == "int"
        self.to_int = node.op in ("Equal", "Less", "Greater")

    def __call__(self, xs, training=False, update_state=False):
        if self.constant is not None:
            x = xs[0]
            c = tf.constant(int(self.constant) if self.int_constant else self.constant, x.dtype)
            y = self.fn(c, x) if self.reverse else self.fn(x, c)
        else:
            y = xs[0]
            for x in xs[1:]:
                y = self.fn(y, x)
        return tf.cast(y, tf.int64) if self.to_int else y


@lowers("Where")
class Where(NodeModule):
    """tf.where(cond != 0, x, y) (broadcasting); a scalar side (+-inf included) is a constant
    of the values' dtype."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.x, self.y = node.attrs["x"], node.attrs["y"]

    def __call__(self, xs, training=False, update_state=False):
        c = tf.not_equal(xs[0], tf.constant(0, xs[0].dtype))
        if self.x is not None:
            return tf.where(c, tf.constant(self.x, xs[1].dtype), xs[1])
        if self.y is not None:
            return tf.where(c, xs[1], tf.constant(self.y, xs[1].dtype))
        return tf.where(c, xs[1], xs[2])


UNARY = {
    "neg": tf.math.negative, "abs": tf.math.abs, "sqrt": tf.math.sqrt, "rsqrt": tf.math.rsqrt,
    "exp": tf.math.exp, "log": tf.math.log, "erf": tf.math.erf,
    "reciprocal": tf.math.reciprocal, "square": tf.math.square, "tanh": tf.math.tanh,
    "sigmoid": tf.math.sigmoid, "sin": tf.math.sin, "cos": tf.math.cos,
}


@lowers("Unary")
class Unary(NodeModule):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.fn = UNARY[node.attrs["fn"]]

    def __call__(self, xs, training=False, update_state=False):
        return self.fn(xs[0])
