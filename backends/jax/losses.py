"""Loss lowering to optax (all from logits, mean over every example and position).

* softmax_cross_entropy: ``optax.softmax_cross_entropy_with_integer_labels``; with label smoothing
  ``optax.softmax_cross_entropy(logits, optax.smooth_labels(onehot, eps))``, where
  ``smooth_labels`` is (1 - eps) * onehot + eps / C, the canonical rule.
* binary_cross_entropy: ``optax.sigmoid_binary_cross_entropy`` (from logits, no clipping).
* mse: mean((prediction - target)^2) (optax's ``squared_error`` is the same elementwise term).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from rosetta import losses
from rosetta.errors import SpecError


def _softmax_cross_entropy(label_smoothing: float):
    if label_smoothing == 0.0:
        def loss(logits, labels):
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    else:
        def loss(logits, labels):
            onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
            targets = optax.smooth_labels(onehot, label_smoothing)
            return jnp.mean(optax.softmax_cross_entropy(logits, targets))
    return loss


def _mse(pred, target):
    return jnp.mean(optax.squared_error(pred, target))


def _binary_cross_entropy(logits, labels):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


def lower_loss(loss: losses.Loss) -> Callable:
    """(logits, labels) -> scalar loss, a pure jax function."""
    if isinstance(loss, losses.SoftmaxCrossEntropy):
        return _softmax_cross_entropy(loss.label_smoothing)
    if isinstance(loss, losses.MeanSquaredError):
        return _mse
    if isinstance(loss, losses.BinaryCrossEntropy):
        return _binary_cross_entropy
    raise SpecError(f"the jax backend has no lowering for loss {loss.kind!r}", where="$.loss")
