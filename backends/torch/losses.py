"""Loss lowering: ``rosetta.losses`` -> native torch loss modules (all from logits, mean over
every example and position)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rosetta.errors import SpecError
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


LOSSES = {
    "softmax_cross_entropy": lambda loss: SoftmaxCrossEntropy(loss.label_smoothing),
    "mse": lambda loss: nn.MSELoss(),                          # mean of (z - y)^2
    "binary_cross_entropy": lambda loss: nn.BCEWithLogitsLoss(),  # stable form, mean
}


def lower_loss(loss: Loss) -> nn.Module:
    """The native loss module: ``module(logits, labels)`` -> scalar tensor."""
    try:
        return LOSSES[loss.kind](loss)
    except KeyError:
        raise SpecError(f"the torch backend has no lowering for loss {loss.kind!r} (it lowers "
                        f"{', '.join(sorted(LOSSES))})", where="$.loss") from None


def label_dtype(loss: Loss, dtype: torch.dtype) -> torch.dtype:
    """int64 class ids for integer-label losses, else the program's float dtype."""
    return torch.int64 if loss.label_kind == "int" else dtype
