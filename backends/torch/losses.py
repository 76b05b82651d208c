"""Loss lowering: ``rosetta.losses`` -> native torch loss modules (all from logits, mean over
every example and position).

* sequence_cross_entropy: ``F.cross_entropy(ignore_index=ignore_label, label_smoothing=eps,
  reduction="sum")`` divided by max(1, number of real tokens). torch masks the smoothing term of
  ignored positions too, so its "mean" is the canonical mean over real tokens, but it is 0/0 =
  NaN for a batch of padding alone, where the canonical loss is 0: hence sum / max(1, n).
* huber: ``nn.HuberLoss(delta=delta)`` (0.5 d^2 inside, delta (|d| - 0.5 delta) outside, mean);
  not ``nn.SmoothL1Loss``, which divides by beta.
* kl_divergence: ``F.kl_div(log_softmax(z), p, reduction="batchmean")`` on (N*..., C): kl_div
  takes LOG-probabilities as input (and computes 0 log 0 = 0 with xlogy), and "batchmean" divides
  by the size of the first axis only, so logits are flattened to rows first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rosetta.backend import loss_lowering
from rosetta.losses import Loss


class SoftmaxCrossEntropy(nn.Module):
    """F.cross_entropy over the last axis, integer labels. torch's ``label_smoothing`` is the
    canonical q = (1 - eps) onehot(y) + eps / C. Logits (N, ..., C) and labels (N, ...) are
    flattened to (N*..., C) and (N*...,), so the mean runs over every position."""

    def __init__(self, label_smoothing: float):
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits, labels):
        if logits.ndim != 2:
            logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def extra_repr(self):
        return f"label_smoothing={self.label_smoothing}"


class SequenceCrossEntropy(nn.Module):
    """Sum of F.cross_entropy over the real tokens / max(1, number of real tokens)."""

    def __init__(self, ignore_label: int, label_smoothing: float):
        super().__init__()
        self.ignore_label = int(ignore_label)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits, labels):
        labels = labels.reshape(-1)
        total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels,
                                ignore_index=self.ignore_label,
                                label_smoothing=self.label_smoothing, reduction="sum")
        return total / (labels != self.ignore_label).sum().clamp(min=1)

    def extra_repr(self):
        return f"ignore_label={self.ignore_label}, label_smoothing={self.label_smoothing}"


class KLDivergence(nn.Module):
    """F.kl_div(log_softmax(z), p, reduction="batchmean") over rows (N*..., C)."""

    def forward(self, logits, targets):
        c = logits.shape[-1]
        return F.kl_div(F.log_softmax(logits.reshape(-1, c), dim=-1), targets.reshape(-1, c),
                        reduction="batchmean")


LOSSES = {
    "softmax_cross_entropy": lambda loss: SoftmaxCrossEntropy(loss.label_smoothing),
    "sequence_cross_entropy": lambda loss: SequenceCrossEntropy(loss.ignore_label,
                                                                loss.label_smoothing),
    "huber": lambda loss: nn.HuberLoss(delta=loss.delta),
    "kl_divergence": lambda loss: KLDivergence(),
    "mse": lambda loss: nn.MSELoss(),                          # mean of (z - y)^2
    "binary_cross_entropy": lambda loss: nn.BCEWithLogitsLoss(),  # stable form, mean
}


def lower(loss: Loss) -> nn.Module:
    """The native loss module: ``module(logits, labels)`` -> scalar tensor."""
    return loss_lowering(LOSSES, loss, "torch")(loss)


def label_dtype(loss: Loss, dtype: torch.dtype) -> torch.dtype:
    """int64 class ids for integer-label losses, else the program's float dtype."""
    return torch.int64 if loss.label_kind == "int" else dtype
