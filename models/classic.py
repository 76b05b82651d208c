"""The classics: linear regression, MLPs and a small CNN."""

from __future__ import annotations

import rosetta as rs


def linear() -> rs.TrainSpec:
    """y = w x + b fitted to y = 2x + noise with plain SGD: the classic first example."""
    model = rs.Sequential([rs.Dense(1, name="dense")], input_shape=(1,), name="linear")
    return rs.TrainSpec(model=model, loss=rs.losses.MeanSquaredError(),
                        optimizer=rs.optim.SGD(0.01), data=rs.DataSpec("regression", 32),
                        steps=1000, description=linear.__doc__)


def mlp() -> rs.TrainSpec:
    """64 -> 128 -> 128 -> 10 ReLU MLP with Adam on the scikit-learn 8x8 digits."""
    model = rs.Sequential([
        rs.Dense(128, activation="relu", name="hidden1"),
        rs.Dense(128, activation="relu", name="hidden2"),
        rs.Dense(10, name="logits"),
    ], input_shape=(64,), name="mlp")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(1e-3), data=rs.DataSpec("digits", 32),
                        steps=600, description=mlp.__doc__)


def cnn() -> rs.TrainSpec:
    """conv3x3(16) - maxpool2 - conv3x3(32) - flatten - dense(10) on the digits as 8x8x1 images."""
    model = rs.Sequential([
        rs.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        rs.MaxPool2D(2, name="pool1"),
        rs.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        rs.Flatten(name="flatten"),
        rs.Dense(10, name="logits"),
    ], input_shape=(8, 8, 1), name="cnn")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(2e-3),
                        data=rs.DataSpec("digits", 32, {"layout": "image"}),
                        steps=600, description=cnn.__doc__)


def mlp100() -> rs.TrainSpec:
    """The 100 -> 64 -> 64 -> 10 ReLU MLP with Adam, on 100-feature Gaussian clusters
    (10 classes)."""
    model = rs.Sequential([
        rs.Dense(64, activation="relu", name="hidden1"),
        rs.Dense(64, activation="relu", name="hidden2"),
        rs.Dense(10, name="logits"),
    ], input_shape=(100,), name="mlp100")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(1e-3), data=rs.DataSpec("clusters", 32),
                        steps=400, description=mlp100.__doc__)
