"""Cases for the ops the PyTorch importer needs (joined into ``cases.CASES``): stochastic depth
(one keep draw per example: a rank-3 map after a convolution and a rank-1 vector)."""

from __future__ import annotations

import rosetta as rs

MSE = rs.losses.MeanSquaredError
SCE = rs.losses.SoftmaxCrossEntropy


def _spec(layers, shape, loss=None):
    model = rs.Sequential(layers, input_shape=shape, name="case")
    return rs.TrainSpec(model=model, loss=loss or MSE(), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("images"), steps=5)


CASES = [
    ("stochastic_depth_map", lambda: _spec([
        rs.Conv2D(3, 3, padding="same", name="conv"), rs.StochasticDepth(0.5, name="sd"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (4, 4, 2), SCE(0.1))),
    ("stochastic_depth_vector", lambda: _spec([
        rs.Dense(4, activation="tanh", name="pre"), rs.StochasticDepth(0.25, name="sd"),
        rs.Dense(2, name="head")], (3,))),
]
