"""Lowerings of the elementwise ops: Activation (the one activation table of ``lowering.py``)
and HardSwish (Add and Multiply are in ``math.py``)."""

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


@lowers("HardSwish", accepts=EITHER)
def hard_swish(node: Node, layout: str) -> nn.Module:
    """nn.Hardswish: x * relu6(x + 3) / 6, any layout (elementwise)."""
    return nn.Hardswish()
