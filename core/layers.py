"""Layer constructors of the functional API: ``Dense(10, activation="relu")(x)``.

One constructor per registered op is generated from the registry (``rosetta.constructors``, by
``python -m rosetta.ops.codegen``): its arguments are the op's attributes (see ``rosetta.ops``).
The convenience constructors below fix the ``fn`` of an ``Activation``.
"""

from __future__ import annotations

from rosetta import constructors
from rosetta.constructors import *  # noqa: F401,F403  (every registered op)
from rosetta.graph import Layer

# Softmax is an op of its own (rosetta.ops.reduction), not a convenience Activation
CONVENIENCE = ["ReLU", "Tanh", "Sigmoid", "SiLU", "GELU", "LeakyReLU"]

__all__ = [*constructors.__all__, *CONVENIENCE]


def ReLU(name=None):
    return Layer("Activation", name=name, fn="relu")


def Tanh(name=None):
    return Layer("Activation", name=name, fn="tanh")


def Sigmoid(name=None):
    return Layer("Activation", name=name, fn="sigmoid")


def SiLU(name=None):
    return Layer("Activation", name=name, fn="silu")


def GELU(approximate: str, name=None):
    """``approximate`` is required: 'none' (erf) or 'tanh'."""
    return Layer("Activation", name=name, fn="gelu", approximate=approximate)


def LeakyReLU(slope: float, name=None):
    """``slope`` is required (Keras defaults to 0.3, torch to 0.01)."""
    return Layer("Activation", name=name, fn="leaky_relu", slope=slope)

