"""Layer constructors of the functional API: each configures one registered op.

``Dense(10, activation="relu")(x)``; arguments are the op's attributes (see ``rosetta.ops``).
"""

from __future__ import annotations

from rosetta.graph import Layer


def _layer(op):
    def make(*args, name=None, **attrs):
        positional = _POSITIONAL.get(op, ())
        if len(args) > len(positional):
            raise TypeError(f"{op} takes at most {len(positional)} positional argument(s) "
                            f"({', '.join(positional) or 'none'})")
        attrs.update(zip(positional, args))
        return Layer(op, name=name, **attrs)
    make.__name__ = op
    make.__doc__ = f"A {op} layer. See ``rosetta.ops.REGISTRY[{op!r}]`` for its math."
    return make


_POSITIONAL = {
    "Dense": ("units",),
    "Conv2D": ("filters", "kernel_size"),
    "MaxPool2D": ("kernel_size",),
    "AvgPool2D": ("kernel_size",),
    "Reshape": ("shape",),
    "Dropout": ("rate",),
    "Embedding": ("vocab_size", "dim"),
    "Activation": ("fn",),
    "ZeroPadding2D": ("padding",),
    "UpSampling2D": ("size",),
    "GroupNorm": ("groups",),
    "Conv1D": ("filters", "kernel_size"),
    "MaxPool1D": ("kernel_size",),
    "AvgPool1D": ("kernel_size",),
    "DepthwiseConv2D": ("kernel_size",),
    "SeparableConv2D": ("filters", "kernel_size"),
    "Conv2DTranspose": ("filters", "kernel_size"),
    "LSTM": ("units",),
    "GRU": ("units",),
    "SimpleRNN": ("units",),
    "MultiHeadAttention": ("heads", "head_dim"),
    "PositionEmbedding": ("max_length",),
    "SequencePool": ("mode",),
}

Dense = _layer("Dense")
Conv2D = _layer("Conv2D")
MaxPool2D = _layer("MaxPool2D")
AvgPool2D = _layer("AvgPool2D")
GlobalAvgPool2D = _layer("GlobalAvgPool2D")
Flatten = _layer("Flatten")
Reshape = _layer("Reshape")
Add = _layer("Add")
Concatenate = _layer("Concatenate")
Dropout = _layer("Dropout")
BatchNorm = _layer("BatchNorm")
LayerNorm = _layer("LayerNorm")
Embedding = _layer("Embedding")
Activation = _layer("Activation")
ZeroPadding2D = _layer("ZeroPadding2D")
UpSampling2D = _layer("UpSampling2D")
GlobalMaxPool2D = _layer("GlobalMaxPool2D")
RMSNorm = _layer("RMSNorm")
GroupNorm = _layer("GroupNorm")
Conv1D = _layer("Conv1D")
MaxPool1D = _layer("MaxPool1D")
AvgPool1D = _layer("AvgPool1D")
DepthwiseConv2D = _layer("DepthwiseConv2D")
SeparableConv2D = _layer("SeparableConv2D")
Conv2DTranspose = _layer("Conv2DTranspose")
LSTM = _layer("LSTM")
GRU = _layer("GRU")
SimpleRNN = _layer("SimpleRNN")
MultiHeadAttention = _layer("MultiHeadAttention")
PositionEmbedding = _layer("PositionEmbedding")
SequencePool = _layer("SequencePool")


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


def Softmax(axis: int = -1, name=None):
    return Layer("Activation", name=name, fn="softmax", axis=axis)
