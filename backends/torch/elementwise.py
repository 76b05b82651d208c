"""Lowerings of the elementwise ops: Activation (the one activation table of ``lowering.py``)
and Add."""

from __future__ import annotations

from torch import nn

from rosetta.backends.torch.lowering import EITHER, activation, lowers, native_axis
from rosetta.graph import Node
from rosetta.ops.elementwise import key as activation_key


@lowers("Activation", accepts=EITHER)
def activation_op(node: Node, layout: str) -> nn.Module:
    name, kwargs = activation_key(node.attrs)
    dim = native_axis(kwargs.get("axis", -1), len(node.in_types[0].shape), layout)
    return activation(name, kwargs, dim=dim)


class Add(nn.Module):
    """y = x_1 + x_2 + ... + x_k, summed left to right."""

    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@lowers("Add", accepts=EITHER)
def add(node: Node, layout: str) -> nn.Module:
    return Add()


@lowers("HardSwish", accepts=EITHER)
def hard_swish(node: Node, layout: str) -> nn.Module:
    """nn.Hardswish: x * relu6(x + 3) / 6, any layout (elementwise)."""
    return nn.Hardswish()


class Multiply(nn.Module):
    """y = x_1 * x_2 * ... * x_k, multiplied left to right; torch broadcasts size-1 axes (both
    inputs are in the node's layout, so the axes line up) and autograd sums the gradient over
    them."""

    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


@lowers("Multiply", accepts=EITHER)
def multiply(node: Node, layout: str) -> nn.Module:
    return Multiply()
