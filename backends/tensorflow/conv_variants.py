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
  dilation 1 is lowered instead, the same sums.
"""

from __future__ import annotations

import tensorflow as tf

from rosetta.ops.windows import spatial_plan
from rosetta.ops.convolution import Conv2DTranspose as _TransposeOp
from rosetta.backends.tensorflow.layers import NodeModule, _nhwc_pads, activation


class _Depthwise(NodeModule):
    """The depthwise step shared by DepthwiseConv2D and SeparableConv2D (see the module doc)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        _, pads = spatial_plan(a, node.in_types[0].shape[:2], a["dilation"])
        self.pads = _nhwc_pads(pads)
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
            y = tf.nn.bias_add(y, self.bias)
        return self.act(y)


class DepthwiseConv2D(_Depthwise):
    def __call__(self, xs, training=False, update_state=False):
        return self.finish(self.depthwise(xs[0], self.kernel))


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
            y = tf.nn.bias_add(y, self.bias)
        return self.act(y)


LOWERINGS: dict = {cls.__name__: cls for cls in (DepthwiseConv2D, SeparableConv2D,
                                                 Conv2DTranspose)}
