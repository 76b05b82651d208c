"""Loss lowering: ``lower(loss)`` -> ``fn(logits, labels)``, a scalar mean over every example
(and position), all from logits (Keras's loss classes default to probabilities and clip)."""

from __future__ import annotations

import tensorflow as tf

from rosetta import losses as spec_losses
from rosetta.errors import SpecError


def softmax_cross_entropy(label_smoothing: float):
    """-sum_c q_c log softmax(z)_c with integer labels; with smoothing q = (1 - eps) onehot + eps/C
    (tf.nn.softmax_cross_entropy_with_logits on the smoothed targets), else the sparse op."""
    eps = label_smoothing

    def fn(logits, labels):
        if eps == 0.0:
            per = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        else:
            c = logits.shape[-1]
            q = tf.one_hot(labels, c, dtype=logits.dtype) * (1.0 - eps) + eps / c
            per = tf.nn.softmax_cross_entropy_with_logits(labels=q, logits=logits)
        return tf.reduce_mean(per)

    return fn


def mean_squared_error(logits, labels):
    """mean over every element of (prediction - target)^2."""
    return tf.reduce_mean(tf.math.squared_difference(logits, labels))


def binary_cross_entropy(logits, labels):
    """mean of max(z, 0) - z y + log(1 + exp(-|z|)) (tf.nn.sigmoid_cross_entropy_with_logits)."""
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def lower(loss: spec_losses.Loss):
    if isinstance(loss, spec_losses.SoftmaxCrossEntropy):
        return softmax_cross_entropy(loss.label_smoothing)
    if isinstance(loss, spec_losses.MeanSquaredError):
        return mean_squared_error
    if isinstance(loss, spec_losses.BinaryCrossEntropy):
        return binary_cross_entropy
    raise SpecError(f"the tensorflow backend has no lowering for loss {loss.kind!r}",
                    where="$.loss")
