"""Lowerings of the shape and layout ops: Flatten, Reshape, Concatenate, ZeroPadding2D,
UpSampling2D; the tensor-level Transpose, Squeeze, Unsqueeze, Pad, Cast."""

from __future__ import annotations

import tensorflow as tf

from rosetta.backends.tensorflow.lowering import NodeModule, lowers, nhwc_pads, pads_as_list
from rosetta.ops.shape import positive_axis


@lowers("ZeroPadding2D")
class ZeroPadding2D(NodeModule):
    """tf.pad with zeros, ((top, bottom), (left, right)) on H and W."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.pads = nhwc_pads(node.attrs["padding"])

    def __call__(self, xs, training=False, update_state=False):
        return tf.pad(xs[0], pads_as_list(self.pads))


@lowers("UpSampling2D")
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


@lowers("Flatten")
class Flatten(NodeModule):
    """Row-major over (H, W, C): TensorFlow is channels-last already, so a plain reshape."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.size = node.out_type.shape[0]

    def __call__(self, xs, training=False, update_state=False):
        return tf.reshape(xs[0], [-1, self.size])


@lowers("Reshape")
class Reshape(NodeModule):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.shape = tuple(node.out_type.shape)  # -1 already resolved by shape inference

    def __call__(self, xs, training=False, update_state=False):
        return tf.reshape(xs[0], [-1, *self.shape])


@lowers("Concatenate")
class Concatenate(NodeModule):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        rank = len(node.in_types[0].shape)
        self.axis = positive_axis(node.attrs["axis"], rank) + 1

    def __call__(self, xs, training=False, update_state=False):
        return tf.concat(xs, axis=self.axis)


# --- tensor-level shape ops --------------------------------------------------------------------
@lowers("Transpose")
class Transpose(NodeModule):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        rank = len(node.in_types[0].shape)
        self.perm = [0, *(positive_axis(p, rank) + 1 for p in node.attrs["perm"])]

    def __call__(self, xs, training=False, update_state=False):
        return tf.transpose(xs[0], self.perm)


@lowers("Squeeze", "Unsqueeze")
class SqueezeUnsqueeze(NodeModule):
    """Only size-1 axes dropped or inserted: a reshape to the inferred shape."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.shape = tuple(node.out_type.shape)

    def __call__(self, xs, training=False, update_state=False):
        return tf.reshape(xs[0], [-1, *self.shape])


@lowers("Pad")
class Pad(NodeModule):
    """tf.pad with ``constant_values`` (an int for an int tensor)."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.pads = [[0, 0], *(list(p) for p in node.attrs["pads"])]
        self.value = node.attrs["value"]

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        value = self.value if x.dtype.is_floating else int(self.value)
        return tf.pad(x, self.pads, constant_values=tf.constant(value, x.dtype))


@lowers("Cast")
class Cast(NodeModule):
    """To int: int64 (tf.cast truncates toward zero). To float: the program dtype."""

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.dtype = tf.int64 if node.attrs["to"] == "int" else ctx.dtype

    def __call__(self, xs, training=False, update_state=False):
        x = xs[0]
        if x.dtype.is_integer and self.dtype.is_integer:
            return x
        return tf.cast(x, self.dtype)
