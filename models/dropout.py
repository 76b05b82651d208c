"""Small models with dropout: conformance compares them with the neutral keep-masks injected on
every backend and in the NumPy reference (docs/design.md section 5), so they must pass ``rosetta
conformance`` with default flags in every tier."""

from __future__ import annotations

import rosetta as rs
from rosetta.models.sequence import SYMBOLS, _inputs, majority


def mlp_dropout() -> rs.TrainSpec:
    """64 -> 64 -> 64 -> 10 ReLU MLP with Dropout(0.2) after each hidden layer, Adam, digits."""
    model = rs.Sequential([
        rs.Dense(64, activation="relu", name="hidden1"),
        rs.Dropout(0.2, name="drop1"),
        rs.Dense(64, activation="relu", name="hidden2"),
        rs.Dropout(0.2, name="drop2"),
        rs.Dense(10, name="logits"),
    ], input_shape=(64,), name="mlp_dropout")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(1e-3), data=rs.DataSpec("digits", 32),
                        steps=600, description=mlp_dropout.__doc__)


def cnn_dropout() -> rs.TrainSpec:
    """conv3x3(8) - maxpool2 - Dropout(0.25) - conv3x3(16) - flatten - Dropout(0.5) - dense(10)
    on the digits as 8x8x1 images, SGD with Nesterov momentum."""
    model = rs.Sequential([
        rs.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        rs.MaxPool2D(2, name="pool1"),
        rs.Dropout(0.25, name="drop1"),
        rs.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        rs.Flatten(name="flatten"),
        rs.Dropout(0.5, name="drop2"),
        rs.Dense(10, name="logits"),
    ], input_shape=(8, 8, 1), name="cnn_dropout")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.SGD(0.05, momentum=0.9, nesterov=True),
                        data=rs.DataSpec("digits", 32, {"layout": "image"}),
                        steps=600, description=cnn_dropout.__doc__)


def transformer_dropout() -> rs.TrainSpec:
    """One pre-norm transformer block (2 heads x 8, feed-forward 32) with dropout 0.1 on the
    attention weights and on both residual branches, key padding masks from the lengths, mean
    over the real tokens, dense; AdamW on the majority task."""
    tokens, lengths = _inputs()
    h = rs.Embedding(SYMBOLS + 1, 16, name="embed")(tokens)
    h = rs.TransformerBlock(h, heads=2, head_dim=8, ff_dim=32, lengths=lengths, dropout=0.1,
                            norm_first=True, name="block1")
    h = rs.LayerNorm(name="ln_f")(h)
    h = rs.SequencePool("mean", name="pool")([h, lengths])
    out = rs.Dense(SYMBOLS, name="logits")(h)
    return rs.TrainSpec(model=rs.Model([tokens, lengths], out, name="transformer_dropout"),
                        loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.AdamW(3e-3, weight_decay=0.01),
                        data=majority(), steps=400, description=transformer_dropout.__doc__)
