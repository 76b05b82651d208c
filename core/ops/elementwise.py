"""Elementwise ops: Activation and HardSwish (Add, Multiply and the other broadcasting
binary ops are in ``math``).

Activation functions are one table (``FUNCTIONS``), used by the Activation op and by the fused
``activation`` attribute of Dense and the convolutions. Every parameter is explicit (see
docs/design.md section 3)."""

from __future__ import annotations

import math

import numpy as np

from rosetta.initializers import Initializer
from rosetta.ops.registry import Attr, OpDef, TensorType, register


_erf = np.vectorize(math.erf, otypes=[np.float64])


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


# canonical name -> NumPy float64 reference. Names carry their variant (gelu_exact vs gelu_tanh).
FUNCTIONS = {
    "identity": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    # relu6(x) = min(max(x, 0), 6) (torch ReLU6 = Hardtanh(0, 6))
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    # hard_sigmoid(x) = relu6(x + 3) / 6 (torch Hardsigmoid, Keras 3 and JAX hard_sigmoid; not
    # Keras 2's clip(0.2 x + 0.5, 0, 1))
    "hard_sigmoid": lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    # gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
    "gelu_exact": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    # gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi)
                                                   * (x + 0.044715 * x ** 3))),
    "softmax": softmax,  # over the last axis
}


# names allowed in the fused ``activation`` attribute (parameter-free)
FUSED = tuple(FUNCTIONS)


def fused_attr() -> Attr:
    return Attr("str", "identity", choices=FUSED,
                doc="activation applied to the output; parameter-free names only")


def weighted_layer_attrs() -> dict:
    """The attributes every layer with a kernel and an optional bias shares (Dense and the
    convolutions): ``use_bias``, the fused ``activation`` and the default initializers, kernel
    glorot_uniform and bias zeros."""
    return {"use_bias": Attr("bool", True),
            "activation": fused_attr(),
            "kernel_init": Attr("init", Initializer("glorot_uniform")),
            "bias_init": Attr("init", Initializer("zeros"))}


def bias_and_activation(y, p: dict, a: dict):
    """The end of a weighted layer's reference: y + bias (when the layer has one), then the
    fused activation."""
    if "bias" in p:
        y = y + p["bias"]
    return FUNCTIONS[a["activation"]](y)


@register
class Activation(OpDef):
    """y = f(x), elementwise (softmax: over ``axis``).

    fn: relu max(x, 0); relu6 min(max(x, 0), 6); tanh; sigmoid 1/(1+e^-x);
    hard_sigmoid relu6(x+3)/6 (0 for x <= -3, 1 for x >= 3, x/6 + 1/2 between); silu x*sigmoid(x);
    gelu with ``approximate`` explicit: ``none`` 0.5x(1+erf(x/sqrt2)), ``tanh``
    0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))); leaky_relu with ``slope`` explicit: x if x>0 else
    slope*x; softmax exp(x_i)/sum_j exp(x_j) along ``axis``; identity.
    """

    positional = ("fn",)

    attrs = {
        "fn": Attr("str", choices=("identity", "relu", "relu6", "tanh", "sigmoid",
                                   "hard_sigmoid", "silu", "gelu", "leaky_relu", "softmax")),
        "approximate": Attr("str", None, choices=("none", "tanh"),
                            doc="gelu only, required there: 'none' (erf) or 'tanh'"),
        "slope": Attr("optional_float", None, doc="leaky_relu only, required there"),
        "axis": Attr("int", -1, doc="softmax only"),
    }

    def resolve_attrs(self, given, where):
        a = super().resolve_attrs(given, where)
        fn = a["fn"]
        if fn == "gelu" and a["approximate"] is None:
            raise self.fail(where, "gelu with an explicit approximate='none' or 'tanh' "
                            "(flax defaults to tanh, torch and Keras to none)", "no approximate")
        if fn != "gelu" and a["approximate"] is not None:
            raise self.fail(where, "approximate only with fn='gelu'", f"fn={fn!r}")
        if fn == "leaky_relu" and a["slope"] is None:
            raise self.fail(where, "leaky_relu with an explicit slope (Keras defaults to 0.3, "
                            "torch to 0.01)", "no slope")
        if fn != "leaky_relu" and a["slope"] is not None:
            raise self.fail(where, "slope only with fn='leaky_relu'", f"fn={fn!r}")
        if fn != "softmax" and a["axis"] != -1:
            raise self.fail(where, "axis only with fn='softmax'", f"fn={fn!r}")
        return a

    def infer(self, a, inputs, where):
        x = inputs[0]
        if a["fn"] == "softmax" and not -len(x.shape) <= a["axis"] < len(x.shape):
            raise self.fail(where, f"softmax axis within the {len(x.shape)} per-example axes",
                            a["axis"])
        return x

    def reference(self, a, p, xs, ctx):
        return apply(key(a), xs[0])


def key(a: dict) -> tuple[str, dict]:
    """(canonical function name, keyword arguments) of an Activation op's attributes."""
    fn = a["fn"]
    if fn == "gelu":
        return ("gelu_exact" if a["approximate"] == "none" else "gelu_tanh"), {}
    if fn == "leaky_relu":
        return "leaky_relu", {"slope": a["slope"]}
    if fn == "softmax":
        return "softmax", {"axis": a["axis"]}
    return fn, {}


def apply(fn_key: tuple[str, dict], x: np.ndarray) -> np.ndarray:
    """Reference of an activation key on a batch (a per-example softmax axis shifts by one)."""
    name, kw = fn_key
    if name == "leaky_relu":
        return np.where(x > 0, x, kw["slope"] * x)
    if name == "softmax":
        axis = kw.get("axis", -1)
        # per-example axis -> batch axis: non-negative axes shift by one
        return softmax(x, axis=axis + 1 if axis >= 0 else axis)
    return FUNCTIONS[name](x)


@register
class HardSwish(OpDef):
    """y = x * relu6(x + 3) / 6, relu6(z) = min(max(z, 0), 6), elementwise: 0 for x <= -3,
    x for x >= 3, x (x + 3) / 6 between (MobileNetV3's hard-swish; torch ``Hardswish``, Keras
    ``hard_swish``, JAX ``hard_swish``). dy/dx = 0 for x < -3, (2x + 3) / 6 on (-3, 3), 1 for
    x > 3; at the kinks x = -3 and x = 3 themselves the frameworks pick different one-sided
    derivatives (a set of measure zero; the tests sample inputs off it)."""

    attrs = {}

    def infer(self, a, inputs, where):
        return inputs[0]

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
