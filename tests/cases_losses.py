"""Cases for the sequence cross-entropy, Huber and KL losses, and BatchNorm on sequences and
vectors (joined into ``cases.CASES``)."""

from __future__ import annotations

import rosetta as rs

# the padding label of the sequence cases (the programs check labels with ``loss.check_labels``,
# which skips padding)
PAD = -1


def _spec(layers, shape, loss, kind="float", name="case"):
    model = rs.Sequential(layers, input_shape=shape, input_kind=kind, name=name)
    return rs.TrainSpec(model=model, loss=loss, optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("images"), steps=5)


CASES = [
    # logits (T, C) = (5, 3) from tokens; a third of the labels are padding
    ("seq_ce_embedding", lambda: _spec([
        rs.Embedding(7, 4, name="emb"), rs.Dense(3, name="head")], (5,),
        rs.losses.SequenceCrossEntropy(ignore_label=PAD), kind="int")),
    ("seq_ce_smoothing", lambda: _spec([
        rs.Dense(4, activation="tanh", name="pre"), rs.Dense(3, name="head")], (4, 2),
        rs.losses.SequenceCrossEntropy(ignore_label=PAD, label_smoothing=0.2))),
    # delta 0.5 with unit-normal targets: both the quadratic and the linear branch are hit
    ("huber_loss", lambda: _spec([rs.Dense(4, name="d")], (3, 2), rs.losses.Huber(0.5))),
    # targets are probability rows with exact zeros (0 log 0 = 0)
    ("kl_loss", lambda: _spec([rs.Dense(4, name="d")], (3, 2), rs.losses.KLDivergence())),
    # BatchNorm statistics over every axis but the last: (N, T) on a sequence, N on a vector
    ("batchnorm_sequence", lambda: _spec([
        rs.Dense(4, use_bias=False, name="pre"), rs.BatchNorm(momentum=0.8, epsilon=1e-3,
                                                              name="bn"),
        rs.Dense(2, name="post")], (5, 3), rs.losses.MeanSquaredError())),
    ("batchnorm_vector", lambda: _spec([
        rs.Dense(4, use_bias=False, name="pre"), rs.BatchNorm(name="bn"),
        rs.Dense(2, name="post")], (3,), rs.losses.MeanSquaredError())),
]
