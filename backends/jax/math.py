"""Lowerings of the tensor-math ops (``rosetta.ops.math``): Constant, Parameter, Expand, MatMul,
the broadcasting binary ops, the comparisons, Where and Unary.

``jax.numpy`` broadcasting over the full shape is the canonical rule (a batch-broadcast value is
a (1, ...) array). A scalar ``constant`` is a Python float (weakly typed: applied in the array's
dtype). Comparisons return int32, the backend's int dtype. Expand of a batch-broadcast input
takes the batch size of the run from the context (``Context.batch``)."""

from __future__ import annotations

import operator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rosetta.backends.jax.lowering import HIGHEST, lowers
from rosetta.ops.math import Expand as ExpandOp


@lowers("Constant")
def constant(node, xs, ctx):
    """The value as a (1, *shape) array: floats in the program dtype, integers int32."""
    v = np.array(node.attrs["value"])[None]
    return jnp.asarray(v, ctx.dtype if v.dtype.kind == "f" else jnp.int32)


class Parameter(nn.Module):
    """The trainable ``value`` (*shape), returned as (1, *shape)."""

    shape: tuple
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self):
        return self.param("value", nn.initializers.zeros, self.shape, self.dtype)[None]


@lowers("Parameter")
def parameter(node, xs, ctx):
    return Parameter(tuple(node.attrs["shape"]), dtype=ctx.dtype, name=node.name)()


def full_rank(x, rank: int):
    """x with size-1 axes inserted after the batch axis up to ``rank`` per-example axes."""
    missing = rank + 1 - x.ndim
    return x if missing <= 0 else x.reshape(x.shape[0], *(1,) * missing, *x.shape[1:])


@lowers("Expand")
def expand(node, xs, ctx):
    """jnp.broadcast_to(x, (N, *target)); N the run's batch for a batch-broadcast x."""
    target = ExpandOp().target(node.attrs, node.in_types[0], node.name)
    x = full_rank(xs[0], len(target))
    n = ctx.batch if node.in_types[0].batch_broadcast else x.shape[0]
    return jnp.broadcast_to(x, (n, *target))


@lowers("MatMul")
def matmul(node, xs, ctx):
    """jnp.matmul at Precision.HIGHEST per example (1-D operands a row / column; leading axes
    padded to one rank after the batch axis)."""
    a, b = xs
    a1, b1 = len(node.in_types[0].shape) == 1, len(node.in_types[1].shape) == 1
    if a1:
        a = a[..., None, :]
    if b1:
        b = b[..., None]
    rank = max(a.ndim, b.ndim) - 1
    y = jnp.matmul(full_rank(a, rank), full_rank(b, rank), precision=HIGHEST)
    if b1:
        y = y[..., 0]
    if a1:
        y = y[..., 0] if b1 else y[..., 0, :]
    return y


BINARY = {
    "Add": operator.add, "Subtract": operator.sub, "Multiply": operator.mul,
    "Divide": operator.truediv, "Power": jnp.power, "Maximum": jnp.maximum,
    "Minimum": jnp.minimum, "Equal": jnp.equal, "Less": jnp.less, "Greater": jnp.greater,
}


@lowers(*BINARY)
def binary(node, xs, ctx):
    """x_1 op x_2 (op ...) left to right, or x op c / c op x with a scalar constant."""
    fn, c = BINARY[node.op], node.attrs["constant"]
    if c is not None:
        if node.in_types[0].kind == "int":
            c = int(c)
        y = fn(c, xs[0]) if node.attrs["reverse"] else fn(xs[0], c)
    else:
        y = xs[0]
        for x in xs[1:]:
            y = fn(y, x)
    return y.astype(jnp.int32) if node.op in ("Equal", "Less", "Greater") else y


@lowers("Where")
def where(node, xs, ctx):
    """jnp.where(cond != 0, x, y); a scalar side (+-inf included) is a Python float."""
    c, a = xs[0] != 0, node.attrs
    if a["x"] is not None:
        return jnp.where(c, jnp.asarray(a["x"], xs[1].dtype), xs[1])
    if a["y"] is not None:
        return jnp.where(c, xs[1], jnp.asarray(a["y"], xs[1].dtype))
    return jnp.where(c, xs[1], xs[2])


UNARY = {
    "neg": jnp.negative, "abs": jnp.abs, "sqrt": jnp.sqrt, "rsqrt": jax.lax.rsqrt,
    "exp": jnp.exp, "log": jnp.log, "erf": jax.scipy.special.erf,
    "reciprocal": jnp.reciprocal, "square": jnp.square, "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid, "sin": jnp.sin, "cos": jnp.cos,
}


@lowers("Unary")
def unary(node, xs, ctx):
    return UNARY[node.attrs["fn"]](xs[0])
