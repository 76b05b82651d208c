"""One lowering per registered op: ``LOWERINGS[op](F, node, xs, p, ctx) -> output``.

``F`` is ``mxnet.symbol`` while a hybridized block is traced (``mxnet.ndarray`` when it runs
imperatively), ``xs`` the node's inputs and ``p`` its parameters, both in canonical layout
(channels last): this backend keeps every parameter in its canonical layout, and a lowering
converts where an MXNet operator wants another (``Convolution`` and ``Pooling`` run NCHW on the
CPU, so a convolution transposes its input, kernel and output).

Where MXNet's operator differs from the canonical rule (DESIGN section 3) the lowering states it:

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
  position cannot be saved, so a resumed run could not replay it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rosetta.ops import elementwise as act_ops
from rosetta.ops.windows import spatial_plan
from rosetta.ops.windows import as_2d
from rosetta.ops.shape import positive_axis

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


# --- ops with parameters -----------------------------------------------------------------------

def dense(F, node, xs, p, ctx):
    """y = x . kernel + bias over the last axis (``dot`` contracts x's last axis)."""
    a = node.attrs
    y = F.dot(xs[0], p["kernel"])
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)


def conv2d(F, node, xs, p, ctx):
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2], a["dilation"])
    y = convolve(F, xs[0], conv_weight(F, p["kernel"]), a, pads, a["groups"])
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)


def conv1d(F, node, xs, p, ctx):
    """The 2-D convolution of a (N, 1, T, C) value with a window of height 1 (``as_2d``)."""
    a = as_2d(node.attrs)
    t = node.in_types[0].shape[0]
    _, pads = spatial_plan(a, (1, t), a["dilation"])
    x = F.expand_dims(xs[0], axis=1)
    kernel = F.expand_dims(p["kernel"], axis=0)          # (1, k, in/groups, out)
    y = convolve(F, x, conv_weight(F, kernel), a, pads, a["groups"])
    y = F.squeeze(y, axis=1)
    if a["use_bias"]:
        y = add_bias(F, y, p["bias"])
    return activate(F, a["activation"], y)


def _moments(F, x, axes):
    """Mean and biased variance mean((x - mean)^2) over ``axes`` (kept)."""
    mean = F.mean(x, axis=axes, keepdims=True)
    centred = F.broadcast_sub(x, mean)
    return mean, F.mean(centred * centred, axis=axes, keepdims=True), centred


def batch_norm(F, node, xs, p, ctx):
    """Training: normalise with the batch mean and biased variance over every axis but the last,
    and hand both to the program (``ctx.stats``) for the running update; eval: the running
    statistics."""
    a = node.attrs
    x = xs[0]
    rank = len(node.in_types[0].shape) + 1
    axes = tuple(range(rank - 1))
    if ctx.training:
        mean, var, centred = _moments(F, x, axes)
        ctx.stats.append((node.name, F.reshape(mean, shape=(-1,)), F.reshape(var, shape=(-1,))))
    else:
        mean, var = p["mean"], p["var"]
        centred = F.broadcast_sub(x, mean)
    y = F.broadcast_div(centred, F.sqrt(var + a["epsilon"]))
    return F.broadcast_add(F.broadcast_mul(y, p["scale"]), p["bias"])


def layer_norm(F, node, xs, p, ctx):
    _, var, centred = _moments(F, xs[0], (-1,))
    y = F.broadcast_div(centred, F.sqrt(var + node.attrs["epsilon"]))
    return F.broadcast_add(F.broadcast_mul(y, p["scale"]), p["bias"])


def rms_norm(F, node, xs, p, ctx):
    """y = x * rsqrt(mean(x^2) + eps) * scale over the last axis."""
    x = xs[0]
    ms = F.mean(x * x, axis=-1, keepdims=True)
    return F.broadcast_mul(F.broadcast_div(x, F.sqrt(ms + node.attrs["epsilon"])), p["scale"])


def group_norm(F, node, xs, p, ctx):
    """Channels last, contiguous groups: statistics over every non-batch axis of a group."""
    a = node.attrs
    shape = node.in_types[0].shape
    c, g = shape[-1], a["groups"]
    x = F.reshape(xs[0], shape=(0, -1, g, c // g))                  # (N, S, G, C/G)
    _, var, centred = _moments(F, x, (1, 3))
    y = F.broadcast_div(centred, F.sqrt(var + a["epsilon"]))
    y = F.reshape(y, shape=(-1, *shape))
    return F.broadcast_add(F.broadcast_mul(y, p["scale"]), p["bias"])


def embedding(F, node, xs, p, ctx):
    a = node.attrs
    return F.Embedding(xs[0], p["embedding"], input_dim=a["vocab_size"], output_dim=a["dim"])


def dropout(F, node, xs, p, ctx):
    """Training: y = x * (keep-mask / (1 - rate)) with the scaled mask the graph takes as an
    input; eval (or rate 0): y = x."""
    if ctx.training and ctx.scale is not None:
        return xs[0] * ctx.scale
    return xs[0]


# --- parameter-free ops --------------------------------------------------------------------------

def activation(F, node, xs, p, ctx):
    name, kwargs = act_ops.key(node.attrs)
    return activate(F, name, xs[0], **kwargs)


def _pool_nchw(F, x, a, kind):
    return F.Pooling(x, kernel=tuple(a["kernel_size"]), stride=tuple(a["strides"]),
                     pool_type=kind, pooling_convention="valid")


def max_pool2d(F, node, xs, p, ctx):
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2])
    return to_nhwc(F, _pool_nchw(F, pad_nchw(F, to_nchw(F, xs[0]), pads, NEG_INF), a, "max"))


def avg_pool2d(F, node, xs, p, ctx):
    """Window sum of the real cells / their number (padded cells excluded)."""
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2])
    x = pad_nchw(F, to_nchw(F, xs[0]), pads)
    total = _pool_nchw(F, x, a, "sum")
    if any(lo or hi for lo, hi in pads):
        ones = pad_nchw(F, F.ones_like(F.slice_axis(to_nchw(F, xs[0]), axis=1, begin=0,
                                                   end=1)), pads)
        return to_nhwc(F, F.broadcast_div(total, _pool_nchw(F, ones, a, "sum")))
    return to_nhwc(F, total / float(a["kernel_size"][0] * a["kernel_size"][1]))


def _pool1d(lower):
    def pool(F, node, xs, p, ctx):
        """The 2-D pool of (N, 1, T, C) with a window of height 1."""
        a2 = as_2d(node.attrs)
        view = _View(node, a2, (1, *node.in_types[0].shape))
        return F.squeeze(lower(F, view, [F.expand_dims(xs[0], axis=1)], p, ctx), axis=1)
    pool.__doc__ = f"{lower.__name__} over the time axis (window of height 1)."
    return pool


@dataclass
class _View:
    """A node seen as its 2-D equivalent (attributes, input type): what a 1-D lowering hands to
    the 2-D one."""

    node: object
    attrs: dict
    shape: tuple

    @property
    def in_types(self):
        return [type("T", (), {"shape": self.shape})]


def zero_padding2d(F, node, xs, p, ctx):
    return to_nhwc(F, pad_nchw(F, to_nchw(F, xs[0]), node.attrs["padding"]))


def upsampling2d(F, node, xs, p, ctx):
    """Nearest, integer factors: repeat along H then W (exact)."""
    x = xs[0]
    for axis, f in zip((1, 2), node.attrs["size"]):
        if f != 1:
            x = F.repeat(x, repeats=f, axis=axis)
    return x


def global_max_pool2d(F, node, xs, p, ctx):
    return F.max(xs[0], axis=(1, 2))


def global_avg_pool2d(F, node, xs, p, ctx):
    return F.mean(xs[0], axis=(1, 2))


def step_mask(F, lengths, t_len: int):
    """(N, T) 1.0 where t < length, else 0.0, in the lengths' dtype."""
    steps = F.reshape(F.arange(t_len), shape=(1, -1))
    return F.broadcast_lesser(F.cast(steps, dtype="float64"),
                              F.reshape(F.cast(lengths, dtype="float64"), shape=(-1, 1)))


def sequence_pool(F, node, xs, p, ctx):
    """Mean or max over the real steps t < length of (N, T, C) (every step without lengths)."""
    x = xs[0]
    mean = node.attrs["mode"] == "mean"
    if len(xs) == 1:
        return F.mean(x, axis=1) if mean else F.max(x, axis=1)
    t_len = node.in_types[0].shape[0]
    real = F.expand_dims(F.cast(step_mask(F, xs[1], t_len), dtype=ctx.dtype), axis=2)
    if mean:
        total = F.sum(F.broadcast_mul(x, real), axis=1)
        return F.broadcast_div(total, F.reshape(F.cast(xs[1], dtype=ctx.dtype), shape=(-1, 1)))
    floor = F.broadcast_like(real, x) * 0.0 + NEG_INF
    return F.max(F.where(F.broadcast_like(real, x), x, floor), axis=1)


def flatten(F, node, xs, p, ctx):
    """Channels-last row-major, as canonical: (H, W, C) -> H*W*C."""
    return F.reshape(xs[0], shape=(0, -1))


def reshape(F, node, xs, p, ctx):
    return F.reshape(xs[0], shape=(-1, *node.attrs["shape"]))


def add(F, node, xs, p, ctx):
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


def concatenate(F, node, xs, p, ctx):
    axis = positive_axis(node.attrs["axis"], len(node.in_types[0].shape)) + 1
    return F.concat(*xs, dim=axis)


LOWERINGS = {
    "Dense": dense,
    "Conv2D": conv2d,
    "MaxPool2D": max_pool2d,
    "AvgPool2D": avg_pool2d,
    "GlobalAvgPool2D": global_avg_pool2d,
    "Flatten": flatten,
    "Reshape": reshape,
    "Add": add,
    "Concatenate": concatenate,
    "Activation": activation,
    "Dropout": dropout,
    "BatchNorm": batch_norm,
    "LayerNorm": layer_norm,
    "Embedding": embedding,
    "ZeroPadding2D": zero_padding2d,
    "UpSampling2D": upsampling2d,
    "GlobalMaxPool2D": global_max_pool2d,
    "RMSNorm": rms_norm,
    "GroupNorm": group_norm,
    "Conv1D": conv1d,
    "MaxPool1D": _pool1d(max_pool2d),
    "AvgPool1D": _pool1d(avg_pool2d),
    "SequencePool": sequence_pool,
}

# The op families kept in their own modules (same file names in every backend) join the table here;
# they may import from this module, whose names above are defined by now.
from rosetta.backends.mxnet import attention as _attention  # noqa: E402
from rosetta.backends.mxnet import conv_variants as _conv_variants  # noqa: E402
from rosetta.backends.mxnet import recurrent as _recurrent  # noqa: E402

for _family in (_attention, _conv_variants, _recurrent):
    LOWERINGS.update(_family.LOWERINGS)
