"""Lowerings of the tensor-math ops (``rosetta.ops.math``): Constant, Parameter, Expand, MatMul,
the broadcasting binary ops, the comparisons, Where and Unary.

Batch-broadcast values are tensors whose batch axis has size 1; torch's own broadcasting over
the full shape is the canonical rule, so the binary ops are the plain operators. They run in
either 4-D layout when every input is 4-D (``plan_layout``: the inputs are permuted alike);
inputs of mixed ranks run channels-last. A scalar ``constant`` stays a Python float: torch
applies it in the tensor's dtype (no float32 rounding in float64). Comparisons return int64, the
backend's int dtype. Expand of a batch-broadcast input takes the batch size of the run from the
graph walk (``GraphModule``)."""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import nn

from rosetta.backends.torch.lowering import (CHANNELS_LAST, EITHER, lowers, native_params,
                                             same)
from rosetta.graph import Node
from rosetta.ops.math import Expand as ExpandOp


class Constant(nn.Module):
    """The value as a (1, *shape) buffer: float values follow the model dtype (``model.to``),
    integer values stay int64."""

    def __init__(self, value: np.ndarray):
        super().__init__()
        self.register_buffer("value", torch.from_numpy(np.array(value))[None])

    def forward(self):
        return self.value


@lowers("Constant", accepts=CHANNELS_LAST)
def constant(node: Node, layout: str) -> nn.Module:
    return Constant(node.attrs["value"])


class Parameter(nn.Module):
    """A trainable (*shape) tensor, returned as (1, *shape); autograd sums its gradient over
    the batch it is broadcast to."""

    def __init__(self, shape: tuple):
        super().__init__()
        self.value = nn.Parameter(torch.empty(shape))

    def forward(self):
        return self.value.unsqueeze(0)


@lowers("Parameter", accepts=CHANNELS_LAST)
def parameter(node: Node, layout: str) -> nn.Module:
    return Parameter(tuple(node.attrs["shape"]))


native_params({"Parameter": {"value": (Parameter, "value", same, same)}})


def full_rank(x: torch.Tensor, rank: int) -> torch.Tensor:
    """x with size-1 axes inserted after the batch axis up to ``rank`` per-example axes (the
    per-example right-alignment of NumPy broadcasting)."""
    missing = rank + 1 - x.dim()
    return x if missing <= 0 else x.reshape(x.shape[0], *(1,) * missing, *x.shape[1:])


class Expand(nn.Module):
    """x (right-aligned) broadcast to (batch, *target); ``batch`` (the run's) is given for a
    batch-broadcast x. A contiguous copy, as ``broadcast_to`` in the reference."""

    def __init__(self, target: tuple):
        super().__init__()
        self.target = target

    def forward(self, x, batch=None):
        x = full_rank(x, len(self.target))
        return x.expand(batch if batch is not None else x.shape[0], *self.target).contiguous()


@lowers("Expand", accepts=CHANNELS_LAST)
def expand(node: Node, layout: str) -> nn.Module:
    return Expand(ExpandOp().target(node.attrs, node.in_types[0], node.name))


class MatMul(nn.Module):
    """torch.matmul per example: 1-D operands made a row / column, leading axes padded to one
    rank after the batch axis (torch would right-align a batched lower-rank operand's batch
    axis against a per-example one), the added axes removed."""

    def __init__(self, a_rank: int, b_rank: int):
        super().__init__()
        self.a1, self.b1 = a_rank == 1, b_rank == 1

    def forward(self, a, b):
        if self.a1:
            a = a.unsqueeze(-2)
        if self.b1:
            b = b.unsqueeze(-1)
        rank = max(a.dim(), b.dim()) - 1
        y = torch.matmul(full_rank(a, rank), full_rank(b, rank))
        if self.b1:
            y = y.squeeze(-1)
        if self.a1:
            y = y.squeeze(-1 if self.b1 else -2)
        return y


@lowers("MatMul", accepts=CHANNELS_LAST)
def matmul(node: Node, layout: str) -> nn.Module:
    return MatMul(len(node.in_types[0].shape), len(node.in_types[1].shape))


def _max_scalar(x, c):
    return torch.clamp_min(x, c)


def _min_scalar(x, c):
    return torch.clamp_max(x, c)


# op -> (tensor-tensor function, tensor-scalar function: called as f(x, c) or, reversed, f(c, x))
BINARY = {
    "Add": (operator.add, operator.add),
    "Subtract": (operator.sub, operator.sub),
    "Multiply": (operator.mul, operator.mul),
    "Divide": (operator.truediv, operator.truediv),
    "Power": (torch.pow, operator.pow),
    "Maximum": (torch.maximum, _max_scalar),
    "Minimum": (torch.minimum, _min_scalar),
    "Equal": (operator.eq, operator.eq),
    "Less": (operator.lt, operator.lt),
    "Greater": (operator.gt, operator.gt),
}


class Binary(nn.Module):
    """y = x_1 op x_2 (op ...) folded left to right, or x op c / c op x with a scalar."""

    def __init__(self, fn, constant=None, reverse=False, to_int=False):
        super().__init__()
        self.fn, self.constant, self.reverse, self.to_int = fn, constant, reverse, to_int

    def forward(self, *xs):
        if self.constant is not None:
            x, c = xs[0], self.constant
            y = self.fn(c, x) if self.reverse else self.fn(x, c)
        else:
            y = xs[0]
            for x in xs[1:]:
                y = self.fn(y, x)
        return y.to(torch.int64) if self.to_int else y


@lowers(*BINARY, accepts=EITHER)
def binary(node: Node, layout: str) -> nn.Module:
    pair, c = BINARY[node.op], node.attrs["constant"]
    if c is not None and node.in_types[0].kind == "int":
        c = int(c)
    to_int = node.op in ("Equal", "Less", "Greater")
    if c is not None and node.op in ("Maximum", "Minimum"):
        return Binary(pair[1], c, False, to_int)   # symmetric: reverse changes nothing
    return Binary(pair[1] if c is not None else pair[0], c, node.attrs["reverse"], to_int)


class Where(nn.Module):
    """torch.where(cond != 0, x, y); a scalar side (+-inf included) is passed as a Python
    float, which torch.where takes in the tensor's dtype."""

    def __init__(self, x=None, y=None):
        super().__init__()
        self.x, self.y = x, y

    def forward(self, cond, *vals):
        c = cond != 0
        if self.x is not None:
            return torch.where(c, self.x, vals[0])
        if self.y is not None:
            return torch.where(c, vals[0], self.y)
        return torch.where(c, vals[0], vals[1])


@lowers("Where", accepts=EITHER)
def where(node: Node, layout: str) -> nn.Module:
    return Where(node.attrs["x"], node.attrs["y"])


UNARY = {
    "neg": torch.neg, "abs": torch.abs, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
    "exp": torch.exp, "log": torch.log, "erf": torch.erf, "reciprocal": torch.reciprocal,
    "square": torch.square, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "sin": torch.sin,
    "cos": torch.cos,
}


class Unary(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@lowers("Unary", accepts=EITHER)
def unary(node: Node, layout: str) -> nn.Module:
    return Unary(UNARY[node.attrs["fn"]])
