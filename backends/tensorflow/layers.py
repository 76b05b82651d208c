"""One lowering per registered op: a small ``tf.Module`` per graph node (the table ``LOWERINGS``).

Each node module owns its variables as attributes named like the canonical parameters
(``dense.kernel``, ``bn.mean``), with the variable named by canonical path (``dense/kernel``), and
computes its op with ``tf`` / ``tf.nn`` functions in canonical layout (NHWC, TensorFlow's own
layout: no parameter is transposed). Configuration is resolved once, at lowering time, into plain
tuples.

Where TensorFlow's default differs from the canonical rule (DESIGN section 3) the rule is lowered
explicitly, as each class says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from rosetta.ops.elementwise import key as activation_key
from rosetta.ops.windows import spatial_plan, windows
from rosetta.ops.windows import time_plan
from rosetta.ops.shape import positive_axis


def batch_axis(axis: int) -> int:
    """A per-example axis (no batch axis) as an axis of the batched tensor."""
    return axis + 1 if axis >= 0 else axis


def gelu_exact(x):
    """0.5 x (1 + erf(x / sqrt 2)). Written out because tf.nn.gelu builds its constants with
    ``cast(python float, dtype)``, which rounds them through float32: ~1e-10 off in float64."""
    return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), constants in the input's dtype (see
    ``gelu_exact`` for why not tf.nn.gelu(approximate=True))."""
    return 0.5 * x * (1.0 + tf.math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def leaky_relu(x, slope):
    """x if x > 0 else slope * x. Not tf.nn.leaky_relu: its ``alpha`` is a float32 op attribute,
    so a slope such as 0.2 is rounded (1.5e-8 relative) in float64."""
    return tf.where(x > 0, x, slope * x)


# The one activation table, used by the Activation op and by the fused ``activation`` attribute of
# Dense and Conv2D. Every parameter is explicit: gelu's variant, leaky_relu's slope (Keras would
# default to 0.3), softmax's per-example axis.
ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": tf.nn.relu,
    "tanh": tf.math.tanh,
    "sigmoid": tf.math.sigmoid,
    "silu": tf.nn.silu,
    "gelu_exact": gelu_exact,
    "gelu_tanh": gelu_tanh,
    "leaky_relu": leaky_relu,
    "softmax": lambda x, axis=-1: tf.nn.softmax(x, axis=batch_axis(axis)),
}


def activation(name: str, **kwargs):
    """The lowered activation ``name`` with its keyword arguments bound."""
    fn = ACTIVATIONS[name]
    return (lambda x: fn(x, **kwargs)) if kwargs else fn


@dataclass(frozen=True)
class LoweringContext:
    """What every node lowering needs: the variable dtype and the dropout generator."""

    dtype: tf.DType
    rng: tf.random.Generator


class NodeModule(tf.Module):
    """A lowered node. Parameters and state become ``tf.Variable`` attributes named like the
    canonical parameter (created as zeros; ``params.load`` sets them). Call with the list of input
    tensors (batch first); ``update_state`` says whether training-mode calls may assign state.

    Subclasses define ``__call__(self, xs, training=False, update_state=False)``.
    """

    def __init__(self, node, ctx: LoweringContext):
        super().__init__(name=node.name)
        self.param_names = tuple(node.params)
        self.state_names = tuple(node.state)
        for defs, trainable in ((node.params, True), (node.state, False)):
            for name, d in defs.items():
                setattr(self, name, tf.Variable(tf.zeros(d.shape, ctx.dtype), trainable=trainable,
                                                name=f"{node.name}/{name}"))


def _nhwc_pads(pads) -> tuple:
    """((top, bottom), (left, right)) -> the 4-axis NHWC padding list of tf.nn / tf.pad."""
    return ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0))


def _as_list(pads) -> list:
    return [list(p) for p in pads]


class Dense(NodeModule):
    """y = f(x @ kernel + bias); inputs of rank > 2 are flattened to 2-D around one matmul."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.out_shape = tuple(node.out_type.shape)  # per example
        self.act = activation(node.attrs["activation"])

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if x.shape.rank > 2:
            y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), self.kernel)
            y = tf.reshape(y, [-1, *self.out_shape])
        else:
            y = tf.matmul(x, self.kernel)
        if "bias" in self.param_names:
            y = tf.nn.bias_add(y, self.bias)
        return self.act(y)


class Conv2D(NodeModule):
    """tf.nn.conv2d with the canonical padding lowered as explicit (top, bottom, left, right) pads
    from ``spatial_plan`` (so 'same' with stride > 1 and explicit asymmetric pads are exact).

    The kernel (kH, kW, C/groups, filters) is TensorFlow's grouped-filter layout. Grouped
    convolution runs natively under XLA; the plain (non-XLA) CPU kernel, which has no grouped
    backward pass, gets one convolution per group, concatenated (the same sum, split by group)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        _, pads = spatial_plan(a, node.in_types[0].shape[:2], a["dilation"])
        self.pads = _nhwc_pads(pads)
        self.strides = (1, *a["strides"], 1)
        self.dilations = (1, *a["dilation"], 1)
        self.groups = a["groups"]
        self.act = activation(a["activation"])

    def _conv(self, x, kernel):
        return tf.nn.conv2d(x, kernel, strides=list(self.strides), padding=_as_list(self.pads),
                            dilations=list(self.dilations))

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if self.groups == 1 or _in_xla_context():
            y = self._conv(x, self.kernel)
        else:
            xg = tf.split(x, self.groups, axis=-1)
            kg = tf.split(self.kernel, self.groups, axis=-1)
            y = tf.concat([self._conv(a, b) for a, b in zip(xg, kg)], axis=-1)
        if "bias" in self.param_names:
            y = tf.nn.bias_add(y, self.bias)
        return self.act(y)


class Conv1D(NodeModule):
    """A Conv2D of height 1: (N, T, C) -> (N, 1, T, C), kernel (k, C/g, F) -> (1, k, C/g, F), the
    shared padding rule as explicit (lo, hi) pads on the time axis (tf.nn.conv1d takes only
    'SAME'/'VALID'), grouped as Conv2D (native under XLA, one conv per group otherwise)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        _, (lo, hi) = time_plan(a, node.in_types[0].shape[0], a["dilation"][0])
        self.pads = ((0, 0), (0, 0), (lo, hi), (0, 0))
        self.strides = (1, 1, a["strides"][0], 1)
        self.dilations = (1, 1, a["dilation"][0], 1)
        self.groups = a["groups"]
        self.act = activation(a["activation"])

    def _conv(self, x, kernel):
        return tf.nn.conv2d(x, kernel, strides=list(self.strides), padding=_as_list(self.pads),
                            dilations=list(self.dilations))

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0][:, None]
        kernel = self.kernel[None]
        if self.groups == 1 or _in_xla_context():
            y = self._conv(x, kernel)
        else:
            xg = tf.split(x, self.groups, axis=-1)
            kg = tf.split(kernel, self.groups, axis=-1)
            y = tf.concat([self._conv(a, b) for a, b in zip(xg, kg)], axis=-1)
        y = y[:, 0]
        if "bias" in self.param_names:
            y = tf.nn.bias_add(y, self.bias)
        return self.act(y)


class MaxPool1D(NodeModule):
    """tf.pad with -inf from the shared padding rule, then a VALID max pool (padded cells are
    never chosen)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        _, pads = time_plan(a, node.in_types[0].shape[0])
        self.pads = ((0, 0), tuple(pads), (0, 0))
        self.k, self.s = a["kernel_size"][0], a["strides"][0]

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if any(self.pads[1]):
            x = tf.pad(x, _as_list(self.pads), constant_values=float("-inf"))
        return tf.nn.max_pool1d(x, self.k, self.s, "VALID")


class AvgPool1D(NodeModule):
    """As AvgPool2D: a VALID average pool of the zero-padded input (sum / k) times the constant
    k / count, count = real cells per window (padded cells excluded)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        t = node.in_types[0].shape[0]
        out, pads = time_plan(a, t)
        self.pads = ((0, 0), tuple(pads), (0, 0))
        self.k, self.s = a["kernel_size"][0], a["strides"][0]
        ones = np.pad(np.ones(t), pads)
        count = np.array([ones[i * self.s:i * self.s + self.k].sum() for i in range(out)])
        self.rescale = (self.k / count)[None, :, None]  # (1, T', 1) float64

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if not any(self.pads[1]):
            return tf.nn.avg_pool1d(x, self.k, self.s, "VALID")
        x = tf.pad(x, _as_list(self.pads))
        y = tf.nn.avg_pool1d(x, self.k, self.s, "VALID")
        return y * tf.constant(self.rescale, dtype=x.dtype)


class MaxPool2D(NodeModule):
    """Padded cells are -inf (never chosen): tf.pad with -inf from the ``spatial_plan`` pads, then
    a VALID max pool (XLA has no pooling with explicit padding)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        _, pads = spatial_plan(a, node.in_types[0].shape[:2])
        self.pads = _nhwc_pads(pads)
        self.ksize = tuple(a["kernel_size"])
        self.strides = tuple(a["strides"])

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if any(any(p) for p in self.pads):
            x = tf.pad(x, _as_list(self.pads), constant_values=float("-inf"))
        return tf.nn.max_pool2d(x, list(self.ksize), list(self.strides), "VALID")


class AvgPool2D(NodeModule):
    """Average over the real cells only: a VALID average pool of the zero-padded input (sum / K,
    K = kH * kW) times the constant K / count, count = real cells per window, counted once here in
    NumPy from the same padding plan (the sum / count rule; 'SAME' would also exclude padding but
    explicit pads cannot)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        hw = node.in_types[0].shape[:2]
        out, pads = spatial_plan(a, hw)
        self.pads = _nhwc_pads(pads)
        self.ksize = tuple(a["kernel_size"])
        self.strides = tuple(a["strides"])
        ones = np.pad(np.ones((1, *hw, 1)), self.pads)
        count = sum(patch for _, patch in windows(ones, self.ksize, self.strides, (1, 1), out))
        self.rescale = (self.ksize[0] * self.ksize[1]) / count  # (1, H', W', 1) float64

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if not any(any(p) for p in self.pads):
            return tf.nn.avg_pool2d(x, list(self.ksize), list(self.strides), "VALID")
        x = tf.pad(x, _as_list(self.pads))
        y = tf.nn.avg_pool2d(x, list(self.ksize), list(self.strides), "VALID")
        return y * tf.constant(self.rescale, dtype=x.dtype)


class GlobalAvgPool2D(NodeModule):
    def __call__(self, xs, training=False, update_state=False):
        return tf.reduce_mean(xs[0], axis=[1, 2])


class GlobalMaxPool2D(NodeModule):
    def __call__(self, xs, training=False, update_state=False):
        return tf.reduce_max(xs[0], axis=[1, 2])


class ZeroPadding2D(NodeModule):
    """tf.pad with zeros, ((top, bottom), (left, right)) on H and W."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.pads = _nhwc_pads(node.attrs["padding"])

    def __call__(self, xs, training=False, update_state=False):
        return tf.pad(xs[0], _as_list(self.pads))


class UpSampling2D(NodeModule):
    """Nearest, integer factors: tf.repeat along H then W (exact)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.size = tuple(node.attrs["size"])

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        for axis, f in ((1, self.size[0]), (2, self.size[1])):
            if f != 1:
                x = tf.repeat(x, f, axis=axis)
        return x


class Flatten(NodeModule):
    """Row-major over (H, W, C): TensorFlow is channels-last already, so a plain reshape."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.size = node.out_type.shape[0]

    def __call__(self, xs, training=False, update_state=False):
        return tf.reshape(xs[0], [-1, self.size])


class Reshape(NodeModule):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.shape = tuple(node.out_type.shape)  # -1 already resolved by shape inference

    def __call__(self, xs, training=False, update_state=False):
        return tf.reshape(xs[0], [-1, *self.shape])


class Add(NodeModule):
    """x_1 + x_2 + ... summed left to right, as the reference does."""

    def __call__(self, xs, training=False, update_state=False):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y


class Concatenate(NodeModule):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        rank = len(node.in_types[0].shape)
        self.axis = positive_axis(node.attrs["axis"], rank) + 1

    def __call__(self, xs, training=False, update_state=False):
        return tf.concat(xs, axis=self.axis)


class Activation(NodeModule):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        name, kwargs = activation_key(node.attrs)
        self.act = activation(name, **kwargs)

    def __call__(self, xs, training=False, update_state=False):
        return self.act(xs[0])


class Dropout(NodeModule):
    """training: tf.nn.experimental.stateless_dropout (keep with probability 1 - rate, scale by
    1 / (1 - rate)) with a seed drawn from the model's ``tf.random.Generator`` (seeded from the
    spec's seed; masks differ from other frameworks' RNGs by nature); eval: identity.
    An injected keep-mask (conformance mode) replaces the RNG: y = x * mask / (1 - rate)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.rate = node.attrs["rate"]
        self.rng = ctx.rng

    def __call__(self, xs, training=False, update_state=False, mask=None):
        x = xs[0]
        if not training:
            return x
        if mask is not None:
            return x * mask / (1.0 - self.rate)
        if self.rate == 0.0:
            return x
        seed = self.rng.make_seeds(1)[:, 0]
        return tf.nn.experimental.stateless_dropout(x, rate=self.rate, seed=seed)


class BatchNorm(NodeModule):
    """Statistics over every axis but the last. training: mean and *biased* variance of the batch
    (tf.nn.moments); running <- momentum * running + (1 - momentum) * batch, assigned only when
    ``update_state``. eval: the running statistics. Both normalise as
    (x - mean) * (scale / sqrt(var + epsilon)) + bias, with the explicit epsilon (Keras: 1e-3):
    the centred x first, rather than tf.nn.batch_normalization's x * inv + (bias - mean * inv),
    which cancels."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.momentum = node.attrs["momentum"]
        self.epsilon = node.attrs["epsilon"]
        # the batch axis and every per-example axis but the last (channel) one
        self.axes = tuple(range(len(node.in_types[0].shape)))
        # data parallel (distributed.py): (x, axes) -> (mean, var) over every replica's batch;
        # None: this replica's batch alone
        self.global_moments = None

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if training:
            if self.global_moments is not None:
                mean, var = self.global_moments(x, self.axes)
            else:
                mean, var = tf.nn.moments(x, axes=list(self.axes))
            if update_state:
                m = self.momentum
                self.mean.assign(m * self.mean + (1 - m) * tf.stop_gradient(mean))
                self.var.assign(m * self.var + (1 - m) * tf.stop_gradient(var))
        else:
            mean, var = self.mean, self.var
        # one factor per channel, so the activation is touched by a subtract, a multiply and an
        # add (dividing it by sqrt(var + eps) and then scaling cost resnet 1.3x its baseline)
        return (x - mean) * (self.scale / tf.sqrt(var + self.epsilon)) + self.bias


class LayerNorm(NodeModule):
    """Over the last axis, biased variance (tf.nn.moments), explicit epsilon."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.epsilon = node.attrs["epsilon"]

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) / tf.sqrt(var + self.epsilon) * self.scale + self.bias


class RMSNorm(NodeModule):
    """y = x / sqrt(mean(x^2) + epsilon) * scale over the last axis, explicit epsilon."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.epsilon = node.attrs["epsilon"]

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        ms = tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)
        return x / tf.sqrt(ms + self.epsilon) * self.scale


class GroupNorm(NodeModule):
    """Channels split into contiguous groups: x reshaped to (N, ..., G, C/G), mean and biased
    variance (tf.nn.moments) per example and group over every spatial axis and the group's
    channels, explicit epsilon, then the per-channel scale and bias."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        shape = tuple(node.in_types[0].shape)
        g = node.attrs["groups"]
        self.shape = shape
        self.grouped = (*shape[:-1], g, shape[-1] // g)
        self.axes = [*range(1, len(shape)), len(shape) + 1]
        self.epsilon = node.attrs["epsilon"]

    def __call__(self, xs, training=False, update_state=False):
        x = tf.reshape(xs[0], [-1, *self.grouped])
        mean, var = tf.nn.moments(x, axes=self.axes, keepdims=True)
        y = tf.reshape((x - mean) / tf.sqrt(var + self.epsilon), [-1, *self.shape])
        return y * self.scale + self.bias


class SequencePool(NodeModule):
    """Mean or max over the real steps t < length of (N, T, C) (every step without lengths):
    a 0/1 step mask from ``tf.sequence_mask``; max puts -inf on padded steps."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.mode = node.attrs["mode"]
        self.steps = node.in_types[0].shape[0]

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if len(xs) == 1:
            return tf.reduce_mean(x, 1) if self.mode == "mean" else tf.reduce_max(x, 1)
        real = tf.sequence_mask(xs[1], self.steps, dtype=x.dtype)[..., None]     # (N, T, 1)
        if self.mode == "mean":
            return tf.reduce_sum(x * real, 1) / tf.cast(xs[1], x.dtype)[:, None]
        return tf.reduce_max(tf.where(real > 0, x, tf.constant(-math.inf, x.dtype)), 1)


class Embedding(NodeModule):
    """tf.gather rows of the (vocab, dim) table. Out-of-range ids raise on TensorFlow's CPU kernel
    but are clamped under XLA, so ``Program`` checks the ids on the host before its XLA steps."""

    def __call__(self, xs, training=False, update_state=False):
        return tf.gather(self.embedding, xs[0])


def _in_xla_context() -> bool:
    """Whether the function being traced is XLA-compiled (``tf.function(jit_compile=True)`` puts
    an XLA control-flow context on its graph). TensorFlow has no public query for this; without the
    internal helper, answer False, which takes the per-group path: correct everywhere, slower."""
    if _graph_in_xla is None:
        return False
    return _graph_in_xla(tf.compat.v1.get_default_graph())


try:  # TensorFlow-internal, so optional: see _in_xla_context
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext as _graph_in_xla
except ImportError:  # pragma: no cover - depends on the TensorFlow version
    _graph_in_xla = None


LOWERINGS = {cls.__name__: cls for cls in (
    Dense, Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, Reshape, Add, Concatenate,
    Activation, Dropout, BatchNorm, LayerNorm, Embedding, ZeroPadding2D, UpSampling2D,
    GlobalMaxPool2D, RMSNorm, GroupNorm, Conv1D, MaxPool1D, AvgPool1D, SequencePool)}

# The op families kept in their own modules (same file names in every backend) join the table here;
# they may import from this module, whose names above are defined by now.
from rosetta.backends.tensorflow import attention as _attention  # noqa: E402
from rosetta.backends.tensorflow import conv_variants as _conv_variants  # noqa: E402
from rosetta.backends.tensorflow import recurrent as _recurrent  # noqa: E402

for _family in (_attention, _conv_variants, _recurrent):
    LOWERINGS.update(_family.LOWERINGS)
