"""Cases for DepthwiseConv2D, SeparableConv2D, Conv2DTranspose (joined into ``cases.CASES``).

Each is one small variant layer followed by a Flatten + Dense head; together they cover the
padding rule (valid, same with stride 2, explicit asymmetric), the depth multiplier, dilation
(with and without strides), and every cropping case of the transposed convolution: valid, same
with an odd and an even window (crop after one more than before), k < s (zeros after), dilation.
"""

from __future__ import annotations

import rosetta as rs

MSE = rs.losses.MeanSquaredError
SCE = rs.losses.SoftmaxCrossEntropy


def _spec(layer, shape, loss=None):
    model = rs.Sequential([layer, rs.Flatten(name="flat"), rs.Dense(2, name="head")],
                          input_shape=shape, name="case")
    return rs.TrainSpec(model=model, loss=loss or MSE(), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("images"), steps=5)


CASES = [
    ("depthwise_valid", lambda: _spec(
        rs.DepthwiseConv2D(3, activation="tanh", name="dw"), (5, 5, 2))),
    ("depthwise_same_stride2", lambda: _spec(
        rs.DepthwiseConv2D(3, strides=2, padding="same", name="dw"), (6, 7, 2), SCE(0.1))),
    ("depthwise_multiplier2_explicit", lambda: _spec(
        rs.DepthwiseConv2D((2, 3), depth_multiplier=2, padding=((1, 0), (0, 2)), name="dw"),
        (4, 5, 3))),
    ("depthwise_dilated_strided", lambda: _spec(
        rs.DepthwiseConv2D(2, strides=(2, 1), dilation=2, padding="same", use_bias=False,
                           name="dw"), (7, 6, 2))),
    ("separable_same", lambda: _spec(
        rs.SeparableConv2D(3, 3, padding="same", depth_multiplier=2, activation="relu",
                           name="sep"), (5, 4, 2))),
    ("separable_dilated_stride2", lambda: _spec(
        rs.SeparableConv2D(2, 2, strides=2, dilation=2, padding="same", name="sep"), (6, 5, 3))),
    ("transpose_valid_stride2", lambda: _spec(
        rs.Conv2DTranspose(2, 3, strides=2, activation="sigmoid", name="convt"), (3, 4, 2))),
    ("transpose_same_stride2_odd", lambda: _spec(
        rs.Conv2DTranspose(2, 3, strides=2, padding="same", name="convt"), (3, 3, 2))),
    ("transpose_same_stride2_even", lambda: _spec(
        rs.Conv2DTranspose(3, (4, 2), strides=2, padding="same", name="convt"), (3, 2, 2))),
    ("transpose_same_stride3_k2", lambda: _spec(
        rs.Conv2DTranspose(2, 2, strides=3, padding="same", name="convt"), (2, 3, 2))),
    ("transpose_dilated", lambda: _spec(
        rs.Conv2DTranspose(2, 2, strides=(2, 1), dilation=2, padding="same", use_bias=False,
                           name="convt"), (3, 3, 2))),
]
