"""Convolutional models on 32x32x3 images: a CIFAR-style ResNet, the TensorFlow tutorial CNN and
a LeNet-style CNN (the PyTorch tutorial's), on data that ships with the project (synthetic
``patterns`` gratings, or scikit-learn's digits upsampled to 32x32x3)."""

from __future__ import annotations

import rosetta as rs


def patterns() -> rs.DataSpec:
    """A new DataSpec for each spec: one shared object would carry one spec's change (a
    batch size a test sets) into every other spec built after it."""
    return rs.DataSpec("patterns", 32)


def digits32() -> rs.DataSpec:
    """A new DataSpec for each spec: one shared object would carry one spec's change (a
    batch size a test sets) into every other spec built after it."""
    return rs.DataSpec("digits", 32, {"layout": "image", "size": 32, "channels": 3})


def _conv_bn(x, filters, kernel, stride, name, relu=True):
    """conv (no bias: BatchNorm's shift replaces it) -> BatchNorm -> ReLU?"""
    h = rs.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                  kernel_init=rs.Initializer("he_normal"), name=f"{name}_conv")(x)
    h = rs.BatchNorm(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(h)
    return rs.ReLU(name=f"{name}_relu")(h) if relu else h


def basic_block(x, in_channels: int, filters: int, stride: int, name: str):
    """y = relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)); the shortcut is x itself, or a
    strided 1x1 conv + BatchNorm where the shape changes (ResNet "option B")."""
    h = _conv_bn(x, filters, 3, stride, f"{name}a")
    h = _conv_bn(h, filters, 3, 1, f"{name}b", relu=False)
    shortcut = x
    if stride != 1 or in_channels != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_proj", relu=False)
    return rs.ReLU(name=f"{name}_out")(rs.Add(name=f"{name}_add")([h, shortcut]))


def resnet_graph(blocks_per_stage: int = 1, widths=(16, 32, 64), classes: int = 10,
                 name: str = "resnet") -> rs.Graph:
    """CIFAR ResNet (He et al. 2016, section 4.2): a 3x3 stem, three stages of basic blocks at
    32, 16 and 8 pixels, global average pooling, a dense classifier. blocks_per_stage=3 is
    ResNet-20; the zoo default of 1 (ResNet-8) is sized for a 2-core CPU."""
    x = rs.Input((32, 32, 3), name="x")
    h = _conv_bn(x, widths[0], 3, 1, "stem")
    channels = widths[0]
    for s, width in enumerate(widths):
        for b in range(blocks_per_stage):
            stride = 2 if s > 0 and b == 0 else 1
            h = basic_block(h, channels, width, stride, f"s{s + 1}b{b + 1}")
            channels = width
    h = rs.GlobalAvgPool2D(name="pool")(h)
    return rs.Model(x, rs.Dense(classes, name="logits")(h), name=name)


def resnet() -> rs.TrainSpec:
    """ResNet-8 (3 stages x 1 basic block, BatchNorm) on synthetic 32x32x3 gratings (10 classes),
    SGD with Nesterov momentum and weight decay, cosine schedule."""
    return rs.TrainSpec(model=resnet_graph(), loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.SGD(rs.schedules.WarmupCosine(0.05, 20, 300),
                                               momentum=0.9, nesterov=True, weight_decay=5e-4),
                        data=patterns(), steps=300, description=resnet.__doc__)


def resnet_digits() -> rs.TrainSpec:
    """The same ResNet-8 on scikit-learn's digits upsampled to 32x32x3."""
    spec = resnet()
    return rs.TrainSpec(model=resnet_graph(name="resnet_digits"), loss=spec.loss,
                        optimizer=spec.optimizer, data=digits32(), steps=300,
                        description=resnet_digits.__doc__)


def tutorial_cnn() -> rs.TrainSpec:
    """The TensorFlow tutorial CNN for 32x32x3 images: conv32-pool-conv64-pool-conv64-flatten-
    dense64-dense10 (3x3 valid convolutions, ReLU), Adam, on the synthetic gratings."""
    model = rs.Sequential([
        rs.Conv2D(32, 3, activation="relu", name="conv1"),
        rs.MaxPool2D(2, name="pool1"),
        rs.Conv2D(64, 3, activation="relu", name="conv2"),
        rs.MaxPool2D(2, name="pool2"),
        rs.Conv2D(64, 3, activation="relu", name="conv3"),
        rs.Flatten(name="flatten"),
        rs.Dense(64, activation="relu", name="dense"),
        rs.Dense(10, name="logits"),
    ], input_shape=(32, 32, 3), name="tutorial_cnn")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(1e-3), data=patterns(), steps=300,
                        description=tutorial_cnn.__doc__)


def lenet() -> rs.TrainSpec:
    """The PyTorch tutorial's LeNet-style CNN for 3x32x32 images (here channels last, as every
    rosetta model): conv6 5x5 - pool - conv16 5x5 - pool - dense120 - dense84 - dense10, SGD with
    momentum 0.9, on the synthetic gratings."""
    model = rs.Sequential([
        rs.Conv2D(6, 5, activation="relu", name="conv1"),
        rs.MaxPool2D(2, name="pool1"),
        rs.Conv2D(16, 5, activation="relu", name="conv2"),
        rs.MaxPool2D(2, name="pool2"),
        rs.Flatten(name="flatten"),
        rs.Dense(120, activation="relu", name="fc1"),
        rs.Dense(84, activation="relu", name="fc2"),
        rs.Dense(10, name="logits"),
    ], input_shape=(32, 32, 3), name="lenet")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.SGD(0.01, momentum=0.9), data=patterns(), steps=400,
                        description=lenet.__doc__)
