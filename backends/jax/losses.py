"""Loss lowering to optax (all from logits, mean over every example and position).

* softmax_cross_entropy: ``optax.softmax_cross_entropy_with_integer_labels``; with label smoothing
  ``optax.softmax_cross_entropy(logits, optax.smooth_labels(onehot, eps))``, where
  ``smooth_labels`` is (1 - eps) * onehot + eps / C, the canonical rule.
* binary_cross_entropy: ``optax.sigmoid_binary_cross_entropy`` (from logits, no clipping).
* mse: mean((prediction - target)^2) (optax's ``squared_error`` is the same elementwise term).
* sequence_cross_entropy: the per-token cross-entropy above on labels with padding replaced by
  class 0 (optax gathers with ``take_along_axis``, which would read a wrapped or clamped class
  for an id like -1), masked, summed, divided by max(1, number of real tokens).
* huber: ``optax.huber_loss(pred, target, delta=delta)`` (0.5 min(|d|, delta)^2 +
  delta (|d| - min(|d|, delta)), the canonical rule), mean.
* kl_divergence: ``optax.kl_divergence(log_softmax(z), p)`` (0 log 0 = 0), mean over rows.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from rosetta import losses
from rosetta.backend import loss_lowering


def _per_token_cross_entropy(logits, labels, label_smoothing: float):
    if label_smoothing == 0.0:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(onehot, label_smoothing))


def _softmax_cross_entropy(label_smoothing: float):
    def loss(logits, labels):
        return jnp.mean(_per_token_cross_entropy(logits, labels, label_smoothing))
    return loss


def _sequence_cross_entropy(ignore_label: int, label_smoothing: float):
    def loss(logits, labels):
        real = labels != ignore_label
        per = _per_token_cross_entropy(logits, jnp.where(real, labels, 0), label_smoothing)
        count = jnp.maximum(jnp.sum(real).astype(logits.dtype), 1)
        return jnp.sum(jnp.where(real, per, 0)) / count
    return loss


def _huber(delta: float):
    def loss(pred, target):
        return jnp.mean(optax.huber_loss(pred, target, delta=delta))
    return loss


def _kl_divergence(logits, targets):
    return jnp.mean(optax.kl_divergence(jax.nn.log_softmax(logits), targets))


def _mse(pred, target):
    return jnp.mean(optax.squared_error(pred, target))


def _binary_cross_entropy(logits, labels):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


LOSSES = {
    "softmax_cross_entropy": lambda loss: _softmax_cross_entropy(loss.label_smoothing),
    "sequence_cross_entropy": lambda loss: _sequence_cross_entropy(loss.ignore_label,
                                                                   loss.label_smoothing),
    "huber": lambda loss: _huber(loss.delta),
    "kl_divergence": lambda loss: _kl_divergence,
    "mse": lambda loss: _mse,
    "binary_cross_entropy": lambda loss: _binary_cross_entropy,
}


def lower(loss: losses.Loss) -> Callable:
    """(logits, labels) -> scalar loss, a pure jax function."""
    return loss_lowering(LOSSES, loss, "jax")(loss)
