"""Losses, all from logits, with a NumPy float64 reference, and the metrics that go with them."""

from __future__ import annotations

import numpy as np

from rosetta.errors import DataError, SpecError


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class Loss:
    kind = ""
    label_kind = "float"   # int labels (class ids) or float targets

    def reference(self, logits: np.ndarray, labels: np.ndarray) -> float:
        raise NotImplementedError  # every subclass defines it

    def to_json(self) -> dict:
        return {"name": self.kind, **self.__dict__}

    def __eq__(self, other):
        return type(self) is type(other) and self.to_json() == other.to_json()

    def __repr__(self):
        return f"{type(self).__name__}({self.__dict__})"

    def metrics(self, outputs: np.ndarray, labels: np.ndarray) -> dict:
        """Held-out metrics beyond the loss itself."""
        return {}

    def check_output(self, out_shape: tuple, where: str):
        pass

    def check_labels(self, labels: np.ndarray, classes: int) -> None:
        """Integer-label losses: raise DataError unless every label is a class id in
        [0, classes) (or padding, for a loss that has it). Programs call this on the host before
        a step: XLA and CUDA give a NaN loss or a device assert on a bad id instead."""
        labels = np.asarray(labels)
        if self.label_kind == "int" and labels.size and (labels.min() < 0
                                                         or labels.max() >= classes):
            raise DataError(f"labels: class ids must be in [0, {classes}), "
                            f"found {labels.min()}..{labels.max()}")


def _check_smoothing(label_smoothing, where):
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing < 1.0:
        raise SpecError(f"label_smoothing must be in [0, 1), found {label_smoothing!r}",
                        where=where)
    return float(label_smoothing)


def _smoothed_nll(z: np.ndarray, labels: np.ndarray, eps: float) -> np.ndarray:
    """-sum_c q_c log softmax(z)_c per position, q = (1 - eps) onehot(y) + eps / C."""
    c = z.shape[-1]
    q = np.eye(c)[labels] * (1 - eps) + eps / c
    return -(q * log_softmax(z)).sum(axis=-1)


def _check_positive(value, name, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or value <= 0:
        raise SpecError(f"{name} must be a finite number > 0, found {value!r}", where=where)
    return float(value)


class SoftmaxCrossEntropy(Loss):
    """L = mean over examples (and positions) of -sum_c q_c log softmax(z)_c with
    q = (1 - eps) onehot(y) + eps / C. Integer labels, logits in, no clipping."""

    kind = "softmax_cross_entropy"
    label_kind = "int"

    def __init__(self, label_smoothing: float = 0.0, where="loss"):
        self.label_smoothing = _check_smoothing(label_smoothing, where)

    def reference(self, logits, labels):
        z = np.asarray(logits, np.float64)
        return float(np.mean(_smoothed_nll(z, np.asarray(labels), self.label_smoothing)))

    def metrics(self, outputs, labels):
        return {"accuracy": float(np.mean(np.argmax(outputs, axis=-1) == labels))}

    def check_output(self, out_shape, where):
        if len(out_shape) < 1 or out_shape[-1] < 2:
            raise SpecError(f"softmax cross-entropy needs logits with a class axis of size >= 2, "
                            f"model output is {out_shape}", where=where)


class MeanSquaredError(Loss):
    """L = mean over every element of (prediction - target)^2."""

    kind = "mse"

    def __init__(self, where="loss"):
        pass

    def reference(self, logits, labels):
        d = np.asarray(logits, np.float64) - np.asarray(labels, np.float64)
        return float(np.mean(d * d))


class BinaryCrossEntropy(Loss):
    """L = mean over every element of max(z, 0) - z * y + log(1 + exp(-|z|)), i.e.
    -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] from logits, in its stable form."""

    kind = "binary_cross_entropy"

    def __init__(self, where="loss"):
        pass

    def reference(self, logits, labels):
        z = np.asarray(logits, np.float64)
        y = np.asarray(labels, np.float64)
        return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))

    def metrics(self, outputs, labels):
        return {"accuracy": float(np.mean((outputs > 0) == (labels > 0.5)))}


class SequenceCrossEntropy(Loss):
    """Token cross-entropy with padding: logits (N, ..., T, C), integer labels (N, ..., T);
    a position whose label equals ``ignore_label`` is padding and counts nowhere.

    L = sum over real positions of -sum_c q_c log softmax(z)_c / max(1, number of real positions),
    q = (1 - eps) onehot(y) + eps / C: the mean over the real tokens of the whole batch (not the
    mean of per-sequence means), 0 for a batch of padding alone. Metric: token accuracy over the
    real positions. ``ignore_label`` may be a class id (that class is then never a target)."""

    kind = "sequence_cross_entropy"
    label_kind = "int"

    def __init__(self, ignore_label: int = -1, label_smoothing: float = 0.0, where="loss"):
        if isinstance(ignore_label, bool) or not isinstance(ignore_label, (int, np.integer)):
            raise SpecError(f"ignore_label must be an integer, found {ignore_label!r}",
                            where=where)
        self.ignore_label = int(ignore_label)
        self.label_smoothing = _check_smoothing(label_smoothing, where)

    def real(self, labels: np.ndarray) -> np.ndarray:
        """True at the positions that are not padding."""
        return np.asarray(labels) != self.ignore_label

    def reference(self, logits, labels):
        z = np.asarray(logits, np.float64)
        labels = np.asarray(labels)
        real = self.real(labels)
        per = _smoothed_nll(z, np.where(real, labels, 0), self.label_smoothing)
        return float(np.sum(np.where(real, per, 0.0)) / max(1, int(real.sum())))

    def metrics(self, outputs, labels):
        real = self.real(labels)
        hits = (np.argmax(outputs, axis=-1) == labels) & real
        return {"accuracy": float(hits.sum() / max(1, int(real.sum())))}

    def check_output(self, out_shape, where):
        if len(out_shape) < 2 or out_shape[-1] < 2:
            raise SpecError(f"sequence cross-entropy needs logits (..., T, C) with a time axis and "
                            f"a class axis of size >= 2, model output is {out_shape} (per-example "
                            f"classes: softmax_cross_entropy)", where=where)

    def check_labels(self, labels, classes):
        ids = np.asarray(labels)[self.real(labels)]
        if ids.size and (ids.min() < 0 or ids.max() >= classes):
            raise DataError(f"labels: class ids must be in [0, {classes}) or the ignore_label "
                            f"{self.ignore_label}, found {ids.min()}..{ids.max()}")


class Huber(Loss):
    """L = mean over every element of h(d), d = prediction - target,
    h(d) = 0.5 d^2 if |d| <= delta else delta (|d| - 0.5 delta)."""

    kind = "huber"

    def __init__(self, delta: float = 1.0, where="loss"):
        self.delta = _check_positive(delta, "delta", where)

    def reference(self, logits, labels):
        a = np.abs(np.asarray(logits, np.float64) - np.asarray(labels, np.float64))
        d = self.delta
        return float(np.mean(np.where(a <= d, 0.5 * a * a, d * (a - 0.5 * d))))


class KLDivergence(Loss):
    """KL(p || softmax(z)) from logits: targets p are probability vectors shaped like the logits;
    L = mean over examples (and positions) of sum_c p_c (log p_c - log softmax(z)_c), 0 log 0 = 0.
    No clipping of p (Keras's KLDivergence clips both sides to [1e-7, 1])."""

    kind = "kl_divergence"

    def __init__(self, where="loss"):
        pass

    def reference(self, logits, labels):
        z = np.asarray(logits, np.float64)
        p = np.asarray(labels, np.float64)
        p_log_p = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        return float(np.mean((p_log_p - p * log_softmax(z)).sum(axis=-1)))

    def check_output(self, out_shape, where):
        if len(out_shape) < 1 or out_shape[-1] < 2:
            raise SpecError(f"KL divergence needs logits with a class axis of size >= 2, model "
                            f"output is {out_shape}", where=where)


KINDS = {c.kind: c for c in (SoftmaxCrossEntropy, MeanSquaredError, BinaryCrossEntropy,
                             SequenceCrossEntropy, Huber, KLDivergence)}


def from_json(d, where="$.loss") -> Loss:
    if isinstance(d, Loss):
        return d
    if isinstance(d, str):
        d = {"name": d}
    if not isinstance(d, dict) or d.get("name") not in KINDS:
        found = d.get("name") if isinstance(d, dict) else d
        raise SpecError(f"unknown loss {found!r}; known: {sorted(KINDS)}", where=where)
    args = {k: v for k, v in d.items() if k != "name"}
    try:
        return KINDS[d["name"]](**args, where=where)
    except TypeError as e:
        raise SpecError(f"loss {d['name']!r}: {e}", where=where) from None
