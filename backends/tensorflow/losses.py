"""Loss lowering: ``lower(loss)`` -> ``fn(logits, labels)``, a scalar mean over every example
(and position), all from logits, in ``tf.nn`` / ``tf.math`` ops (Keras's loss classes default
to probabilities and clip, and cast to Keras's floatx, float32, whatever the program dtype).

* sequence_cross_entropy: the per-token ``tf.nn`` cross-entropy below on labels with padding
  replaced by class 0 (the sparse op rejects an id outside [0, C) on CPU and gives NaN on GPU),
  masked, summed, divided by max(1, number of real tokens).
* huber: written in tf ops, the rule Keras's ``Huber(delta)`` follows (not used: see above).
* kl_divergence: sum_c xlogy(p, p) - p log_softmax(z) (``tf.math.xlogy`` is 0 log 0 = 0).
  Keras's ``KLDivergence`` takes probabilities and clips both p and the prediction to
  [1e-7, 1], which changes the value and zeroes gradients of clipped entries.
"""

from __future__ import annotations

import tensorflow as tf

from rosetta import losses as spec_losses
from rosetta.backend import loss_lowering


def _per_token_cross_entropy(logits, labels, eps: float):
    """-sum_c q_c log softmax(z)_c per position with integer labels; with smoothing
    q = (1 - eps) onehot + eps/C (tf.nn.softmax_cross_entropy_with_logits on the smoothed
    targets), else the sparse op."""
    if eps == 0.0:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    c = logits.shape[-1]
    q = tf.one_hot(labels, c, dtype=logits.dtype) * (1.0 - eps) + eps / c
    return tf.nn.softmax_cross_entropy_with_logits(labels=q, logits=logits)


def softmax_cross_entropy(label_smoothing: float):
    def fn(logits, labels):
        return tf.reduce_mean(_per_token_cross_entropy(logits, labels, label_smoothing))

    return fn


def sequence_cross_entropy(ignore_label: int, label_smoothing: float):
    """sum over real tokens of the cross-entropy / max(1, number of real tokens)."""

    def fn(logits, labels):
        real = tf.not_equal(labels, ignore_label)
        per = _per_token_cross_entropy(logits, tf.where(real, labels, tf.zeros_like(labels)),
                                       label_smoothing)
        total = tf.reduce_sum(tf.where(real, per, tf.zeros_like(per)))
        count = tf.reduce_sum(tf.cast(real, logits.dtype))
        return total / tf.maximum(count, 1.0)

    return fn


def huber(delta: float):
    """mean of 0.5 d^2 if |d| <= delta else delta (|d| - 0.5 delta), d = prediction - target."""

    def fn(logits, labels):
        a = tf.abs(logits - labels)
        return tf.reduce_mean(tf.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta)))

    return fn


def kl_divergence(logits, labels):
    """mean over rows of sum_c p_c (log p_c - log softmax(z)_c), 0 log 0 = 0."""
    per = tf.math.xlogy(labels, labels) - labels * tf.nn.log_softmax(logits)
    return tf.reduce_mean(tf.reduce_sum(per, axis=-1))


def mean_squared_error(logits, labels):
    """mean over every element of (prediction - target)^2."""
    return tf.reduce_mean(tf.math.squared_difference(logits, labels))


def binary_cross_entropy(logits, labels):
    """mean of max(z, 0) - z y + log(1 + exp(-|z|)) (tf.nn.sigmoid_cross_entropy_with_logits)."""
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


LOSSES = {
    "softmax_cross_entropy": lambda loss: softmax_cross_entropy(loss.label_smoothing),
    "sequence_cross_entropy": lambda loss: sequence_cross_entropy(loss.ignore_label,
                                                                  loss.label_smoothing),
    "huber": lambda loss: huber(loss.delta),
    "kl_divergence": lambda loss: kl_divergence,
    "mse": lambda loss: mean_squared_error,
    "binary_cross_entropy": lambda loss: binary_cross_entropy,
}


def lower(loss: spec_losses.Loss):
    """``fn(logits, labels)`` -> scalar tensor."""
    return loss_lowering(LOSSES, loss, "tensorflow")(loss)
