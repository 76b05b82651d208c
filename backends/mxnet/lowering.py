"""One lowering per registered op: ``LOWERINGS[op](F, node, xs, p, ctx) -> output``.

``F`` is ``mxnet.symbol`` while a hybridized block is traced (``mxnet.ndarray`` when it runs
imperatively), ``xs`` the node's inputs and ``p`` its parameters, both in canonical layout
(channels last): this backend keeps every parameter in its canonical layout, and a lowering
converts where an MXNet operator wants another (``Convolution`` and ``Pooling`` run NCHW on the
CPU, so a convolution transposes its input, kernel and output).

Where MXNet's operator differs from the canonical rule (docs/design.md section 3) the lowering states it:

* padding: ``Convolution`` and ``Pooling`` pad symmetrically; the canonical ``same`` pads the
  extra cell after, so asymmetric pads (``rosetta.ops.windows.spatial_plan``, the one rule) are an
  explicit ``pad`` (zeros; -inf before a max pool) and the operator runs unpadded;
* average pooling excludes padded cells: window sum of the zero-padded input / window sum of a
  zero-padded ones map (``Pooling(pool_type="sum")`` twice), exact for any padding;
* BatchNorm, LayerNorm, GroupNorm, RMSNorm are written out (mean, then the biased variance
  mean((x - mean)^2)): MXNet's ``BatchNorm`` operator updates its running statistics only inside
  its own (float32) kernels, so the batch statistics leave the graph as outputs and the program
  applies running = m * running + (1 - m) * batch (the canonical rule, m = ``momentum``);
* gelu is written out (erf form or tanh form, as asked), leaky_relu with its slope;
* Dropout multiplies by a keep-mask scaled by 1 / (1 - rate), given to the graph as an input
  (injected, or drawn by the program): MXNet's own ``Dropout`` draws from a global RNG whose
  position cannot be saved, so a resumed run could not replay it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rosetta.ops.registry import LoweringTable
from rosetta.ops import elementwise as act_ops


NEG_INF = float("-inf")


@dataclass
class Context:
    """What a lowering needs beyond the node: the mode the graph is traced in (fixed per traced
    graph), the program dtype, this node's dropout scale (keep-mask / (1 - rate)) if it draws
    one, and the list the normalisations append their batch statistics to."""

    training: bool
    dtype: str = "float32"
    scale: object = None
    stats: list = field(default_factory=list)


# --- activations: ONE table, for the Activation op and the fused ``activation`` attribute ------
def _erf(F, z):
    """erf(z) with its derivative 2 / sqrt(pi) * exp(-z^2) computed in the program's dtype.

    MXNet 1.9's ``erf`` backward is off by about 1e-8 relative in float64 (measured: every
    gradient of the zoo transformer, whose feed-forward uses exact gelu, 0.5e-8 to 2.6e-8 from
    torch's; its forward agrees to 1e-15), so the forward value is MXNet's ``erf`` (gradient
    blocked) and the gradient comes from a term whose value is exactly 0:
    (z - stop(z)) * stop(2 / sqrt(pi) * exp(-z^2))."""
    slope = F.BlockGrad((2.0 / math.sqrt(math.pi)) * F.exp(-(z * z)))
    return F.BlockGrad(F.erf(z)) + (z - F.BlockGrad(z)) * slope


def _gelu_exact(F, x):
    return 0.5 * x * (1.0 + _erf(F, x / math.sqrt(2.0)))


def _gelu_tanh(F, x):
    return 0.5 * x * (1.0 + F.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _softmax(F, x, axis=-1):
    # ``axis`` is per-example (rosetta); the batch axis shifts non-negative axes by one
    return F.softmax(x, axis=axis + 1 if axis >= 0 else axis)


ACTIVATIONS = {
    "identity": lambda F, x: x,
    "relu": lambda F, x: F.relu(x),
    "tanh": lambda F, x: F.tanh(x),
    "sigmoid": lambda F, x: F.sigmoid(x),
    "silu": lambda F, x: x * F.sigmoid(x),
    "relu6": lambda F, x: F.clip(x, 0.0, 6.0),
    "hard_sigmoid": lambda F, x: F.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "gelu_exact": _gelu_exact,
    "gelu_tanh": _gelu_tanh,
    # LeakyReLU's ``slope`` is a float32 attribute: 0.3 would be 0.30000001192092896
    "leaky_relu": lambda F, x, slope: F.where(x > 0, x, x * slope),
    "softmax": _softmax,
}


assert set(act_ops.FUSED) <= set(ACTIVATIONS), "an activation name has no MXNet lowering"


def activate(F, name: str, x, **kwargs):
    return ACTIVATIONS[name](F, x, **kwargs)


# --- layout helpers ----------------------------------------------------------------------------
def to_nchw(F, x):
    return F.transpose(x, axes=(0, 3, 1, 2))


def to_nhwc(F, x):
    return F.transpose(x, axes=(0, 2, 3, 1))


def conv_weight(F, kernel):
    """(kH, kW, in/groups, out) -> Convolution's (out, in/groups, kH, kW)."""
    return F.transpose(kernel, axes=(3, 2, 0, 1))


def pad_nchw(F, x, pads, value=0.0):
    """Explicit ((top, bottom), (left, right)) pads of an NCHW value; no-op when all zero."""
    (t, b), (l, r) = pads
    if not (t or b or l or r):
        return x
    return F.pad(x, mode="constant", pad_width=(0, 0, 0, 0, t, b, l, r), constant_value=value)


def add_bias(F, y, bias, axis=-1):
    """y + bias over the channel axis (the last, or 1 for NCHW)."""
    if axis == 1:
        return F.broadcast_add(y, F.reshape(bias, shape=(1, -1, 1, 1)))
    return F.broadcast_add(y, bias)


def convolve(F, x_nhwc, weight, a, pads, groups):
    """Convolution (NCHW inside) of a channels-last value, explicit pads; NHWC out, no bias."""
    x = pad_nchw(F, to_nchw(F, x_nhwc), pads)
    y = F.Convolution(x, weight, kernel=tuple(a["kernel_size"]), stride=tuple(a["strides"]),
                      dilate=tuple(a["dilation"]), num_filter=a["filters"], num_group=groups,
                      no_bias=True)
    return to_nhwc(F, y)


def step_mask(F, lengths, t_len: int):
    """(N, T) 1.0 where t < length, else 0.0, in the lengths' dtype."""
    steps = F.reshape(F.arange(t_len), shape=(1, -1))
    return F.broadcast_lesser(F.cast(steps, dtype="float64"),
                              F.reshape(F.cast(lengths, dtype="float64"), shape=(-1, 1)))


# --- the table: every lowering registers itself ------------------------------------------------

LOWERINGS = LoweringTable("the mxnet backend")


def lowers(*ops: str):
    """Decorator: register ``lower(F, node, xs, p, ctx) -> output`` (F the symbol or ndarray
    namespace, p the node's parameters and state) as the MXNet lowering of ``ops``::

        @lowers("HardSwish")
        def hard_swish(F, node, xs, p, ctx):
            return xs[0] * F.clip(xs[0] + 3.0, 0.0, 6.0) / 6.0
    """
    return LOWERINGS.register(ops)
