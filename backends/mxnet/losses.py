"""Loss lowering: each canonical loss (``rosetta.losses``) as a Gluon ``HybridBlock``
``(logits, labels) -> scalar`` (shape (1,)), hybridized with the model in hybrid mode.

Labels arrive in the program's float dtype (class ids are exact there), so ``pick`` takes them
as they are. Gluon's own losses return one value per example and ``SoftmaxCrossEntropyLoss`` has
no label smoothing, so the canonical formulas are written with MXNet operators:

=====================  ==========================================================================
softmax_cross_entropy  mean of (1 - eps) * -pick(log_softmax(z), y) - eps / C * sum(log_softmax(z))
sequence_cross_entropy the same per position, summed over the real ones (y != ignore_label) /
                       max(1, number of real positions)
mse                    mean((z - y)^2)
binary_cross_entropy   mean(relu(z) - z * y + log1p(exp(-|z|)))
huber                  mean(0.5 d^2 if |d| <= delta else delta (|d| - 0.5 delta))
kl_divergence          mean over positions of sum_c p_c log p_c - p_c log_softmax(z)_c, 0 log 0 = 0
=====================  ==========================================================================
"""

from __future__ import annotations

from mxnet.gluon import HybridBlock

from rosetta.backend import loss_lowering


def _smoothed_nll(F, z, y, eps: float, classes: int):
    logp = F.log_softmax(z, axis=-1)
    nll = -F.pick(logp, y, axis=-1)
    if eps:
        return (1.0 - eps) * nll - (eps / classes) * F.sum(logp, axis=-1)
    return nll


class CanonicalLoss(HybridBlock):
    """A rosetta loss as a HybridBlock; ``classes`` is the output's last axis."""

    def __init__(self, loss, classes: int):
        super().__init__(prefix=f"loss_{loss.kind}_")
        self.loss = loss
        self.classes = int(classes)

    def hybrid_forward(self, F, z, y):
        return LOSSES[self.loss.kind](F, self.loss, z, y, self.classes)


def _softmax_ce(F, loss, z, y, classes):
    return F.mean(_smoothed_nll(F, z, y, loss.label_smoothing, classes))


def _sequence_ce(F, loss, z, y, classes):
    real = y != float(loss.ignore_label)
    per = _smoothed_nll(F, z, F.where(real, y, F.zeros_like(y)), loss.label_smoothing, classes)
    return F.broadcast_div(F.sum(per * real), F.maximum(F.sum(real), 1.0))


def _mse(F, loss, z, y, classes):
    d = z - y
    return F.mean(d * d)


def _bce(F, loss, z, y, classes):
    return F.mean(F.relu(z) - z * y + F.log1p(F.exp(-F.abs(z))))


def _huber(F, loss, z, y, classes):
    a = F.abs(z - y)
    d = loss.delta
    return F.mean(F.where(a <= d, 0.5 * a * a, d * (a - 0.5 * d)))


def _kl(F, loss, z, p, classes):
    positive = p > 0
    p_log_p = F.where(positive, p * F.log(F.where(positive, p, F.ones_like(p))),
                      F.zeros_like(p))
    return F.mean(F.sum(p_log_p - p * F.log_softmax(z, axis=-1), axis=-1))


LOSSES = {"softmax_cross_entropy": _softmax_ce, "sequence_cross_entropy": _sequence_ce,
          "mse": _mse, "binary_cross_entropy": _bce, "huber": _huber, "kl_divergence": _kl}


def lower(loss, classes: int) -> CanonicalLoss:
    """The loss as a HybridBlock ``(logits, labels)`` -> scalar; ``classes``: the output's last
    axis."""
    loss_lowering(LOSSES, loss, "mxnet")  # an unknown kind: one line, before any block
    return CanonicalLoss(loss, classes)
