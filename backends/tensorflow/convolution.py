"""Lowerings of DepthwiseConv2D, SeparableConv2D and Conv2DTranspose (joined to layers.LOWERINGS).

NHWC throughout, canonical variables (``node/kernel`` ...), explicit pads from the shared rule:

* DepthwiseConv2D: ``tf.pad`` then ``tf.nn.depthwise_conv2d`` (VALID), which takes the canonical
  (kH, kW, C, M) filter and orders output channels c·M + m. TensorFlow refuses strides with a
  dilation > 1, and its CPU kernel refuses unequal row and column strides; those cases run the
  stride-1 convolution and keep every s-th output (the same sums, more work).
* SeparableConv2D: that depthwise step, then ``tf.nn.conv2d`` with the (1, 1, C·M, filters)
  pointwise kernel, then the bias (what ``tf.nn.separable_conv2d`` does, without its limits).
* Conv2DTranspose: ``tf.nn.conv2d_transpose`` (the input gradient of the convolution it
  transposes) with filter (kH, kW, out, in), the canonical kernel with its channel axes swapped.
  Its 'VALID' with output (in - 1)·s + k_eff is the canonical valid, its 'SAME' with output in·s
  is the canonical same (the adjoint of a same convolution that pads the extra cell after).
  TensorFlow's CPU kernel refuses dilation > 1: a dilated kernel (zeros between the taps) with
  dilation 1 is lowered instead, the same sums."""

from __future__ import annotations

import tensorflow as tf

from rosetta.backends.tensorflow.bias import add_bias
from rosetta.backends.tensorflow.lowering import (NodeModule, activation, in_xla_context, lowers,
                                                  nhwc_pads, pads_as_list)
from rosetta.ops.convolution import Conv2DTranspose as _TransposeOp
from rosetta.ops.windows import spatial_plan, time_plan


@lowers("Conv2D")
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
        self.pads = nhwc_pads(pads)
        self.strides = (1, *a["strides"], 1)
        self.dilations = (1, *a["dilation"], 1)
        self.groups = a["groups"]
        self.act = activation(a["activation"])

    def _conv(self, x, kernel):
        return tf.nn.conv2d(x, kernel, strides=list(self.strides), padding=pads_as_list(self.pads),
                            dilations=list(self.dilations))

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if self.groups == 1 or in_xla_context():
            y = self._conv(x, self.kernel)
        else:
            xg = tf.split(x, self.groups, axis=-1)
            kg = tf.split(self.kernel, self.groups, axis=-1)
            y = tf.concat([self._conv(a, b) for a, b in zip(xg, kg)], axis=-1)
        if "bias" in self.param_names:
            y = add_bias(y, self.bias)
        return self.act(y)


@lowers("Conv1D")
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
        return tf.nn.conv2d(x, kernel, strides=list(self.strides), padding=pads_as_list(self.pads),
                            dilations=list(self.dilations))

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0][:, None]
        kernel = self.kernel[None]
        if self.groups == 1 or in_xla_context():
            y = self._conv(x, kernel)
        else:
            xg = tf.split(x, self.groups, axis=-1)
            kg = tf.split(kernel, self.groups, axis=-1)
            y = tf.concat([self._conv(a, b) for a, b in zip(xg, kg)], axis=-1)
        y = y[:, 0]
        if "bias" in self.param_names:
            y = add_bias(y, self.bias)
        return self.act(y)


class _Depthwise(NodeModule):
    """The depthwise step shared by DepthwiseConv2D and SeparableConv2D (see the module doc)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        _, pads = spatial_plan(a, node.in_types[0].shape[:2], a["dilation"])
        self.pads = nhwc_pads(pads)
        strides, dilation = tuple(a["strides"]), tuple(a["dilation"])
        native = strides[0] == strides[1] and (strides == (1, 1) or dilation == (1, 1))
        self.strides = strides if native else (1, 1)
        self.subsample = (1, 1) if native else strides
        self.dilation = dilation
        self.act = activation(a["activation"])

    def depthwise(self, x, kernel):
        x = tf.pad(x, self.pads)
        y = tf.nn.depthwise_conv2d(x, kernel, (1, *self.strides, 1), "VALID",
                                   dilations=self.dilation)
        if self.subsample != (1, 1):
            y = y[:, ::self.subsample[0], ::self.subsample[1]]
        return y

    def finish(self, y):
        if "bias" in self.param_names:
            y = add_bias(y, self.bias)
        return self.act(y)


@lowers("DepthwiseConv2D")
class DepthwiseConv2D(_Depthwise):
    def __call__(self, xs, training=False, update_state=False):
        return self.finish(self.depthwise(xs[0], self.kernel))


@lowers("SeparableConv2D")
class SeparableConv2D(_Depthwise):
    def __call__(self, xs, training=False, update_state=False):
        d = self.depthwise(xs[0], self.depthwise_kernel)
        return self.finish(tf.nn.conv2d(d, self.pointwise_kernel, 1, "VALID"))


def dilate_kernel(kernel, dilation):
    """(kH, kW, ...) -> (d0·(kH - 1) + 1, d1·(kW - 1) + 1, ...), tap (a, b) at (a·d0, b·d1) and
    zeros between (built by stacking zeros after each tap and reshaping, so it differentiates)."""
    for axis, d in enumerate(dilation):
        if d == 1:
            continue
        k = tf.expand_dims(kernel, axis + 1)
        k = tf.concat([k] + [tf.zeros_like(k)] * (d - 1), axis=axis + 1)
        shape = list(kernel.shape)
        eff, shape[axis] = d * (shape[axis] - 1) + 1, shape[axis] * d
        kernel = tf.reshape(k, shape)
        kernel = kernel[:eff] if axis == 0 else kernel[:, :eff]
    return kernel


@lowers("Conv2DTranspose")
class Conv2DTranspose(NodeModule):
    """tf.nn.conv2d_transpose with the canonical padding (see the module doc)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.out_hw, _ = _TransposeOp.plan(a, node.in_types[0].shape[:2])
        self.filters = a["filters"]
        self.strides = (1, *a["strides"], 1)
        self.dilation = tuple(a["dilation"])
        self.padding = a["padding"].upper()
        self.act = activation(a["activation"])

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        kernel = tf.transpose(dilate_kernel(self.kernel, self.dilation), (0, 1, 3, 2))
        shape = tf.stack([tf.shape(x)[0], *self.out_hw, self.filters])
        y = tf.nn.conv2d_transpose(x, kernel, shape, self.strides, self.padding)
        if "bias" in self.param_names:
            y = add_bias(y, self.bias)
        return self.act(y)
